// Integer inference kernels against the float ones on the same shapes: the ResNet-20 convolutions
// (bench/conv_layers.h) at batch 1 and 128 as u8 x s8 -> s32 (conv2d_u8s8s32, "int8_conv"), with
// the requantization to uint8 codes fused (conv2d_u8s8u8, "int8_conv_requant"), the same through the
// exact integer Winograd F(2x2, 3x3) where the layer qualifies (conv2d_winograd_u8s8u8 on 4-bit DoReFa-like
// weight codes, odd in [-15, 15]; elsewhere the direct kernel, as deploy::Engine does:
// "int8_winograd_requant"), and the fp32 forward convolution (conv2d_forward with bias, "fp32_conv"); MobileNet's
// depthwise 3x3 layers the same three ways; int8 GEMMs, square and the ResNet-20 im2col shapes, against the VNNI peak;
// the requantization alone ("requant") on ResNet-20's output shapes.
//
//   bench_int8 [--threads N] [--portable] [google-benchmark flags]
//     --portable                        runs the int8 kernels' portable paths (set_avx512_enabled(false);
//                                       the fp32 GEMM and convolutions ignore the switch)
//   bench_int8 [--threads N] --peak     prints "int8_peak_gops fp32_peak_gflops": the probes of
//                                       core/kernels/peak.h on the same threads
//   bench_int8 [--threads N] --table [--reps R]
//                                       prints a markdown table per ResNet-20 layer and batch (1, 128):
//                                       median wall time of R calls (default 15) of each kernel, taken
//                                       in interleaved rounds, GOP/s and the ratio int8 / fp32
// Counters: GOP/s (2 ops per MAC, int8 and fp32 alike) and, for int8, pct_peak of the int8 peak.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bench_flags.h"
#include "conv_layers.h"
#include "core/kernels/conv.h"
#include "core/kernels/conv_int8.h"
#include "core/kernels/conv_int8_winograd.h"
#include "core/kernels/cpu.h"
#include "core/kernels/depthwise.h"
#include "core/kernels/gemm_int8.h"
#include "core/kernels/peak.h"
#include "core/kernels/requant.h"
#include "core/parallel.h"

using namespace lowbit;
using kernels::Conv2dGeometry;

namespace {

double g_peak_int8 = 0.0;

template <class T>
std::vector<T> random_ints(int64_t n, unsigned seed, int lo, int hi) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<T> v(static_cast<size_t>(n));
  for (auto& x : v) x = T(d(rng));
  return v;
}

std::vector<float> random_floats(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

enum class Kind { kInt8, kInt8Requant, kInt8WinogradRequant, kFp32 };
constexpr Kind kAllKinds[] = {Kind::kInt8, Kind::kInt8Requant, Kind::kInt8WinogradRequant, Kind::kFp32};
const char* kind_name(Kind k) {
  return k == Kind::kInt8                  ? "int8_conv"
         : k == Kind::kInt8Requant         ? "int8_conv_requant"
         : k == Kind::kInt8WinogradRequant ? "int8_winograd_requant"
                                           : "fp32_conv";
}

// Operands of one layer in both arithmetics (4-bit-like activation codes 0..15, 8-bit weights).
struct Layer {
  Conv2dGeometry g;
  std::vector<uint8_t> xq, yq;
  std::vector<int8_t> wq;
  kernels::PackedS8 wp;
  std::optional<kernels::WinogradPackedS8> wino;  // 3x3 stride 1: 4-bit-like weight codes, Winograd-packed
  std::vector<int32_t> acc;
  kernels::Requantization rq;
  std::vector<float> x, w, b, y;
  bool depthwise;

  explicit Layer(const Conv2dGeometry& geom)
      : g(geom),
        xq(random_ints<uint8_t>(g.N * g.H * g.W * g.C, 1, 0, 15)),
        yq(size_t(g.N * g.P() * g.Q() * g.K)),
        wq(random_ints<int8_t>(g.K * g.R * g.S * g.C_per_group(), 2, -127, 127)),
        acc(size_t(g.N * g.P() * g.Q() * g.K)),
        x(random_floats(g.N * g.H * g.W * g.C, 3)),
        w(random_floats(g.K * g.R * g.S * g.C_per_group(), 4)),
        b(random_floats(g.K, 5)),
        y(size_t(g.N * g.P() * g.Q() * g.K)),
        depthwise(g.groups > 1) {
    if (!depthwise) wp = kernels::pack_conv_weights_s8(g, wq.data());
    if (!depthwise && kernels::conv_winograd_geometry(g)) {
      std::vector<int8_t> w4 = random_ints<int8_t>(g.K * g.R * g.S * g.C, 6, -8, 7);
      for (auto& v : w4) v = int8_t(2 * v + 1);
      kernels::WinogradPackedS8 p;
      if (kernels::pack_conv_weights_winograd_s8(g, w4.data(), 15, p)) wino = std::move(p);
    }
    std::vector<double> s(size_t(g.K), 1.0 / (15.0 * 127.0 * double(g.R * g.S * g.C_per_group()) * 0.1)),
        t(size_t(g.K), 0.1);
    rq = kernels::requantization_from_double(g.K, s.data(), t.data(), 15);
    // As deploy::Engine declares it: |acc| <= 15 * 127 * R S C (codes <= 15, |w| <= 127): the exact
    // double-precision requantization (core/kernels/requant.h).
    kernels::bound_accumulators(rq, 15 * 127 * g.R * g.S * g.C_per_group());
  }

  void run(Kind kind) {
    if (kind == Kind::kFp32) {
      if (depthwise)
        kernels::depthwise_conv2d_forward(g, x.data(), w.data(), b.data(), y.data());
      else
        kernels::conv2d_forward(g, x.data(), w.data(), b.data(), y.data());
      return;
    }
    if (kind == Kind::kInt8WinogradRequant && wino) {
      kernels::conv2d_winograd_u8s8u8(g, xq.data(), 0, *wino, rq, nullptr, nullptr, yq.data());
      return;
    }
    if (kind == Kind::kInt8Requant || kind == Kind::kInt8WinogradRequant) {
      if (depthwise)
        kernels::depthwise_conv2d_u8s8u8(g, xq.data(), 0, wq.data(), rq, nullptr, nullptr, yq.data());
      else
        kernels::conv2d_u8s8u8(g, xq.data(), 0, wp, rq, nullptr, nullptr, yq.data());
      return;
    }
    if (depthwise)
      kernels::depthwise_conv2d_u8s8s32(g, xq.data(), 0, wq.data(), acc.data());
    else
      kernels::conv2d_u8s8s32(g, xq.data(), 0, wp, acc.data());
  }
};

void set_counters(benchmark::State& state, double ops, bool int8) {
  state.counters["GOP/s"] = benchmark::Counter(ops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (int8 && g_peak_int8 > 0)
    state.counters["pct_peak"] =
        benchmark::Counter(ops * 1e-9 * 100.0 / g_peak_int8, benchmark::Counter::kIsIterationInvariantRate);
}

void bm_layer(benchmark::State& state, Kind kind, Conv2dGeometry g) {
  Layer l(g);
  l.run(kind);
  for (auto _ : state) {
    l.run(kind);
    benchmark::ClobberMemory();
  }
  set_counters(state, 2.0 * double(g.macs()), kind != Kind::kFp32);
}

// requantize_u8 alone on accumulators in cache (rows = pixels, C = K as in ResNet-20's stages), on
// the exact double-precision path, without a residual or with a uint8 one (the identity shortcut).
void bm_requant(benchmark::State& state, int64_t rows, int64_t C, bool residual) {
  const auto acc = random_ints<int32_t>(rows * C, 7, -20000, 20000);
  const auto res = random_ints<uint8_t>(rows * C, 8, 0, 15);
  std::vector<uint8_t> out(size_t(rows * C));
  std::vector<double> s(size_t(C), 1.0 / 20000), t(size_t(C), 0.3), sr(size_t(C), 1.0 / 15);
  kernels::Requantization q = kernels::requantization_from_double(
      C, s.data(), t.data(), 15, residual ? kernels::RequantResidual::u8 : kernels::RequantResidual::none,
      residual ? sr.data() : nullptr);
  kernels::bound_accumulators(q, 20000, residual ? 15 : 0);
  kernels::RequantArgs a{.rows = rows, .acc = acc.data(), .ld_acc = C, .out = out.data(), .ld_out = C};
  if (residual) a.residual_u8 = res.data(), a.ld_residual = C;
  for (auto _ : state) {
    kernels::requantize_u8(q, a);
    benchmark::ClobberMemory();
  }
  state.counters["Gvalues/s"] =
      benchmark::Counter(double(rows * C) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void bm_gemm_int8(benchmark::State& state, int64_t M, int64_t N, int64_t K) {
  const auto a = random_ints<uint8_t>(M * K, 1, 0, 255);
  const auto b = random_ints<int8_t>(K * N, 2, -128, 127);
  std::vector<int32_t> c(size_t(M * N));
  const kernels::PackedS8 bp = kernels::pack_b_s8(K, N, b.data(), N, false);
  kernels::GemmU8S8Args g;
  g.M = M;
  g.A = a.data();
  g.lda = K;
  g.B = &bp;
  g.C = c.data();
  g.ldc = N;
  kernels::gemm_u8s8s32(g);
  for (auto _ : state) {
    kernels::gemm_u8s8s32(g);
    benchmark::ClobberMemory();
  }
  set_counters(state, 2.0 * double(M) * double(N) * double(K), true);
}

std::vector<Conv2dGeometry> depthwise_layers(int64_t N) {
  return {bench::conv_geom(N, 32, 32, 32, 32, 3, 1, 1, 32), bench::conv_geom(N, 128, 16, 16, 128, 3, 2, 1, 128),
          bench::conv_geom(N, 512, 4, 4, 512, 3, 1, 1, 512)};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Interleaved rounds: each round calls every kernel of every layer once, so a change of machine
// load spreads over all of them alike.
void print_table(int reps) {
  struct Row {
    std::string name;
    int64_t batch;
    int multiplicity;
    std::unique_ptr<Layer> layer;
    std::vector<double> ms[4];
  };
  std::vector<Row> rows;
  for (int64_t batch : {1, 128})
    for (const auto& l : bench::resnet20_conv_layers(batch))
      rows.push_back({l.name, batch, l.multiplicity, std::make_unique<Layer>(l.geom), {}});
  for (auto& r : rows)
    for (Kind k : kAllKinds) r.layer->run(k);  // warm-up
  for (int rep = 0; rep < reps; ++rep)
    for (auto& r : rows)
      for (Kind k : kAllKinds) {
        const int calls = r.batch == 1 ? 20 : 1;
        const auto t0 = std::chrono::steady_clock::now();
        for (int c = 0; c < calls; ++c) r.layer->run(k);
        r.ms[int(k)].push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / calls);
      }
  std::printf(
      "| layer | batch | int8 ms | int8 GOP/s | int8 %% peak | int8+requant ms | Winograd+requant ms | fp32 ms | "
      "fp32 GFLOP/s | fp32 / int8 time | fp32 / (int8+requant) time | fp32 / (Winograd+requant) time |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  double tot[2][4] = {};
  for (const auto& r : rows) {
    const double ops = 2.0 * double(r.layer->g.macs());
    const double i8 = median(r.ms[0]), i8r = median(r.ms[1]), wr = median(r.ms[2]), f32 = median(r.ms[3]);
    const int bi = r.batch == 1 ? 0 : 1;
    const double t[4] = {i8, i8r, wr, f32};
    for (int k = 0; k < 4; ++k) tot[bi][k] += t[k] * r.multiplicity;
    std::printf("| %s x%d%s | %ld | %.4f | %.0f | %.0f%% | %.4f | %.4f | %.4f | %.0f | %.2f | %.2f | %.2f |\n",
                r.name.c_str(), r.multiplicity, r.layer->wino ? " (Winograd)" : "", long(r.batch), i8, ops / i8 * 1e-6,
                g_peak_int8 > 0 ? ops / i8 * 1e-4 / g_peak_int8 : 0.0, i8r, wr, f32, ops / f32 * 1e-6, f32 / i8,
                f32 / i8r, f32 / wr);
  }
  for (int bi = 0; bi < 2; ++bi)
    std::printf("| all 19 convs (with multiplicity) | %d | %.3f | | | %.3f | %.3f | %.3f | | %.2f | %.2f | %.2f |\n",
                bi == 0 ? 1 : 128, tot[bi][0], tot[bi][1], tot[bi][2], tot[bi][3], tot[bi][3] / tot[bi][0],
                tot[bi][3] / tot[bi][1], tot[bi][3] / tot[bi][2]);
}

}  // namespace

int main(int argc, char** argv) {
  bool peak = false, table = false;
  int reps = 15;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    auto value = [&](const char* flag) { return bench::flag_value(argc, argv, i, flag); };
    if (const char* v = value("--threads")) {
      set_num_threads(std::atoi(v));
    } else if (const char* r = value("--reps")) {
      reps = std::max(1, std::atoi(r));
    } else if (std::strcmp(argv[i], "--portable") == 0) {
      kernels::set_avx512_enabled(false);
    } else if (std::strcmp(argv[i], "--peak") == 0) {
      peak = true;
    } else if (std::strcmp(argv[i], "--table") == 0) {
      table = true;
    } else {
      rest.push_back(argv[i]);
    }
  }
  g_peak_int8 = kernels::measure_peak_int8_gops(num_threads());
  if (peak) {
    std::printf("%.1f %.1f\n", g_peak_int8, kernels::measure_peak_gflops(num_threads()));
    return 0;
  }
  if (table) {
    std::printf("threads %d, int8 peak %.1f GOP/s, vnni %d\n", num_threads(), g_peak_int8,
                int(kernels::int8_vnni_enabled()));
    print_table(reps);
    return 0;
  }
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 1;
  benchmark::AddCustomContext("threads", std::to_string(num_threads()));
  benchmark::AddCustomContext("int8_peak_gops", std::to_string(g_peak_int8));
  benchmark::AddCustomContext("vnni", kernels::int8_vnni_enabled() ? "1" : "0");

  for (int64_t batch : {1, 128})
    for (const auto& l : bench::resnet20_conv_layers(batch))
      for (Kind k : kAllKinds) {
        const std::string name = std::string(kind_name(k)) + "/resnet20/" + l.name + "/b" + std::to_string(batch);
        benchmark::RegisterBenchmark(name.c_str(), bm_layer, k, l.geom)->Unit(benchmark::kMillisecond)->UseRealTime();
      }
  for (int64_t batch : {1, 128})
    for (const auto& g : depthwise_layers(batch))
      for (Kind k : {Kind::kInt8, Kind::kInt8Requant, Kind::kFp32}) {
        const std::string name = std::string(k == Kind::kInt8          ? "int8_depthwise"
                                             : k == Kind::kInt8Requant ? "int8_depthwise_requant"
                                                                       : "fp32_depthwise") +
                                 "/C" + std::to_string(g.C) + "_" + std::to_string(g.H) + "s" +
                                 std::to_string(g.stride_h) + "/b" + std::to_string(batch);
        benchmark::RegisterBenchmark(name.c_str(), bm_layer, k, g)->Unit(benchmark::kMillisecond)->UseRealTime();
      }
  for (int64_t n : {256, 512, 1024})
    benchmark::RegisterBenchmark(("int8_gemm/" + std::to_string(n)).c_str(), bm_gemm_int8, n, n, n)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  // The GEMMs inside the ResNet-20 convolutions at batch 128 (M = pixels, N = K, K = R S C), A given.
  const struct {
    const char* name;
    int64_t M, N, K;
  } im2col_shapes[] = {{"s1_im2col", 131072, 16, 144},
                       {"s2_im2col", 32768, 32, 288},
                       {"s3_im2col", 8192, 64, 576},
                       {"sc2_1x1", 32768, 32, 16}};
  for (const auto& s : im2col_shapes)
    benchmark::RegisterBenchmark((std::string("int8_gemm/") + s.name).c_str(), bm_gemm_int8, s.M, s.N, s.K)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  for (int64_t C : {16, 32, 64})
    for (bool residual : {false, true})
      benchmark::RegisterBenchmark(("requant/" + std::to_string(C) + (residual ? "/residual_u8" : "/none")).c_str(),
                                   bm_requant, 16384 / C, C,
                                   residual)  // 64 KiB of accumulators, in cache as in the fused epilogue
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
