// SGEMM benchmarks: lowbit's AVX-512 GEMM (gemm) against OpenBLAS (cblas_sgemm on the same number of
// threads) and the plain gemm_ref loop at a small size. Square sizes 256..2048 and im2col-like shapes
// of the ResNet-20 layers at batch 128 (M = pixels, N = output channels, K = R*S*C).
// OpenBLAS picks its kernels from OPENBLAS_CORETYPE when set (read at load time): run the binary with
// and without it to compare; the context line `openblas_core` shows the kernel set in use. lowbit's
// GEMM does not depend on it.
//
//   bench_gemm [--threads N] [google-benchmark flags]
//   bench_gemm [--threads N] --time_gemm SIZE [--reps R]   prints R wall times (ms) of gemm SIZE^3
//   bench_gemm [--threads N] --peak                        prints "peak_gflops clock_ghz fma_per_cycle"
// Counters: GFLOP/s and pct_peak (of the measured peak, core/kernels/peak.h, on the same threads).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_flags.h"
#include "core/kernels/gemm.h"
#include "core/kernels/peak.h"
#include "core/parallel.h"

extern "C" void openblas_set_num_threads(int);
extern "C" char* openblas_get_corename(void);

using namespace lowbit;
using kernels::GemmArgs;

namespace {

double g_peak_gflops = 0.0;

std::vector<float> random_vec(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

enum class Impl { kLowbit, kOpenBlas, kRef };

struct Problem {
  std::vector<float> a, b, c;
  GemmArgs<float> args;
  Problem(int64_t M, int64_t N, int64_t K) : a(random_vec(M * K, 1)), b(random_vec(K * N, 2)), c(M * N) {
    args.M = M, args.N = N, args.K = K;
    args.A = a.data(), args.lda = K;
    args.B = b.data(), args.ldb = N;
    args.C = c.data(), args.ldc = N;
  }
};

void run(Impl impl, const GemmArgs<float>& g) {
  switch (impl) {
    case Impl::kLowbit: kernels::gemm(g); break;
    case Impl::kOpenBlas: kernels::gemm_blas(g); break;
    case Impl::kRef: kernels::gemm_ref(g); break;
  }
}

void bm_gemm(benchmark::State& state, Impl impl, int64_t M, int64_t N, int64_t K) {
  Problem p(M, N, K);
  // gemm_blas is single-threaded inside lowbit; give OpenBLAS the same threads as lowbit here.
  if (impl == Impl::kOpenBlas) openblas_set_num_threads(num_threads());
  run(impl, p.args);
  for (auto _ : state) {
    run(impl, p.args);
    benchmark::ClobberMemory();
  }
  if (impl == Impl::kOpenBlas) openblas_set_num_threads(1);
  const double flops = 2.0 * double(M) * double(N) * double(K);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (g_peak_gflops > 0)
    state.counters["pct_peak"] =
        benchmark::Counter(flops * 1e-9 * 100.0 / g_peak_gflops, benchmark::Counter::kIsIterationInvariantRate);
}

int time_gemm(int64_t n, int reps) {
  Problem p(n, n, n);
  kernels::gemm(p.args);
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    kernels::gemm(p.args);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s%.4f", r ? " " : "", ms);
  }
  std::printf("\n");
  return 0;
}

int print_peak() {
  const double peak = kernels::measure_peak_gflops(num_threads());
  const double ghz = kernels::measure_clock_ghz();
  const std::string isa = kernels::peak_isa();
  const int lanes = isa == "avx512" ? 16 : isa == "avx2" ? 8 : 1;
  std::printf("%.1f %.3f %.2f\n", peak, ghz, peak / (ghz * num_threads() * 2.0 * lanes));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t time_size = 0;
  int reps = 5;
  bool peak_only = false;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    auto value = [&](const char* flag) { return bench::flag_value(argc, argv, i, flag); };
    if (const char* v = value("--threads")) {
      set_num_threads(std::atoi(v));
    } else if (const char* v2 = value("--time_gemm")) {
      time_size = std::atoll(v2);
    } else if (const char* v3 = value("--reps")) {
      reps = std::atoi(v3);
    } else if (std::strcmp(argv[i], "--peak") == 0) {
      peak_only = true;
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (time_size > 0) return time_gemm(time_size, reps);
  if (peak_only) return print_peak();

  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 1;
  g_peak_gflops = kernels::measure_peak_gflops(num_threads());
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  benchmark::AddCustomContext("threads", std::to_string(num_threads()));
  benchmark::AddCustomContext("peak_gflops", std::to_string(g_peak_gflops));
  benchmark::AddCustomContext("clock_ghz_under_fma_load", std::to_string(kernels::measure_clock_ghz()));
  benchmark::AddCustomContext("OPENBLAS_CORETYPE", coretype ? coretype : "(unset)");
  benchmark::AddCustomContext("openblas_core", openblas_get_corename());

  struct Shape {
    std::string name;
    int64_t M, N, K;
  };
  std::vector<Shape> shapes;
  for (int64_t n : {256, 512, 1024, 1536, 2048}) shapes.push_back({"square/" + std::to_string(n), n, n, n});
  // im2col views of ResNet-20 layers at batch 128: M = N*P*Q pixels, N = K, K = R*S*C.
  shapes.push_back({"resnet20/s1_16to16_32", 128 * 32 * 32, 16, 144});
  shapes.push_back({"resnet20/s2_32to32_16", 128 * 16 * 16, 32, 288});
  shapes.push_back({"resnet20/s3_64to64_8", 128 * 8 * 8, 64, 576});
  shapes.push_back({"resnet20/sc2_1x1_16to32", 128 * 16 * 16, 32, 16});
  shapes.push_back({"resnet20/s3_wgrad_64x576", 64, 576, 128 * 8 * 8});
  for (const auto& s : shapes) {
    for (auto [tag, impl] : {std::pair{"lowbit", Impl::kLowbit}, std::pair{"openblas", Impl::kOpenBlas}}) {
      const std::string name = std::string("sgemm_") + tag + "/" + s.name;
      benchmark::RegisterBenchmark(name.c_str(), bm_gemm, impl, s.M, s.N, s.K)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
  benchmark::RegisterBenchmark("sgemm_ref/square/128", bm_gemm, Impl::kRef, 128, 128, 128)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
