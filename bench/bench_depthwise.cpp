// Depthwise 3x3 convolution on the MobileNet CIFAR layers, batch 128: forward, backward-data and
// backward-weight, AVX-512 vs the portable path (arg 1: 1 = AVX-512 when available, 0 = portable).
// Counters: GFLOP/s (2 * MACs) and GB/s of compulsory traffic (each tensor read/written once).
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "core/kernels/cpu.h"
#include "core/kernels/depthwise.h"

using namespace lowbit::kernels;

namespace {

struct Layer {
  const char* net;
  int64_t C, HW, stride;
};

// MobileNet-v1 (kuangliu CIFAR) depthwise layers, then MobileNet-v2 CIFAR expanded planes.
const Layer kLayers[] = {
    {"v1", 32, 32, 1},  {"v1", 64, 32, 2}, {"v1", 128, 16, 1}, {"v1", 128, 16, 2},
    {"v1", 256, 8, 1},  {"v1", 256, 8, 2}, {"v1", 512, 4, 1},  {"v1", 512, 4, 2},
    {"v1", 1024, 2, 1}, {"v2", 96, 32, 1}, {"v2", 144, 32, 1}, {"v2", 144, 32, 2},
    {"v2", 192, 16, 2}, {"v2", 384, 8, 1}, {"v2", 576, 8, 2},  {"v2", 960, 4, 1},
};
constexpr int64_t kBatch = 128;

Conv2dGeometry geom(const Layer& l) {
  Conv2dGeometry g;
  g.N = kBatch;
  g.C = g.K = g.groups = l.C;
  g.H = g.W = l.HW;
  g.R = g.S = 3;
  g.stride_h = g.stride_w = l.stride;
  g.pad_h = g.pad_w = 1;
  return g;
}

std::vector<float> random_vec(int64_t n) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& e : v) e = dist(rng);
  return v;
}

enum class Op { forward, backward_data, backward_weight };

void run(benchmark::State& st, Op op) {
  const Layer& l = kLayers[st.range(0)];
  const bool simd = st.range(1) != 0;
  const Conv2dGeometry g = geom(l);
  const int64_t nx = g.N * g.H * g.W * g.C, ny = g.N * g.P() * g.Q() * g.K, nw = g.K * g.R * g.S;
  auto x = random_vec(nx), w = random_vec(nw), b = random_vec(g.K), dy = random_vec(ny);
  std::vector<float> y(static_cast<size_t>(ny)), dx(static_cast<size_t>(nx)), dw(static_cast<size_t>(nw)),
      db(static_cast<size_t>(g.K));
  const Avx512Guard avx512(simd);
  for (auto _ : st) {
    switch (op) {
      case Op::forward: depthwise_conv2d_forward(g, x.data(), w.data(), b.data(), y.data()); break;
      case Op::backward_data: depthwise_conv2d_backward_data(g, dy.data(), w.data(), dx.data()); break;
      case Op::backward_weight: depthwise_conv2d_backward_weight(g, x.data(), dy.data(), dw.data(), db.data()); break;
    }
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * double(g.macs());
  const double bytes = 4.0 * double(nx + ny);
  st.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(std::string(l.net) + " C=" + std::to_string(l.C) + " " + std::to_string(l.HW) + "x" +
              std::to_string(l.HW) + " s" + std::to_string(l.stride) + (simd ? " avx512" : " portable"));
}

void BM_DepthwiseForward(benchmark::State& st) { run(st, Op::forward); }
void BM_DepthwiseBackwardData(benchmark::State& st) { run(st, Op::backward_data); }
void BM_DepthwiseBackwardWeight(benchmark::State& st) { run(st, Op::backward_weight); }

void layer_args(benchmark::internal::Benchmark* b) {
  const int64_t n = int64_t(sizeof(kLayers) / sizeof(kLayers[0]));
  for (int64_t simd : {1, 0})
    for (int64_t i = 0; i < n; ++i) b->Args({i, simd});
  b->ArgNames({"layer", "simd"})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.2);
}

}  // namespace

BENCHMARK(BM_DepthwiseForward)->Apply(layer_args);
BENCHMARK(BM_DepthwiseBackwardData)->Apply(layer_args);
BENCHMARK(BM_DepthwiseBackwardWeight)->Apply(layer_args);

BENCHMARK_MAIN();
