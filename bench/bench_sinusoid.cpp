// The sinusoid regularizer's per-weight pass (core/kernels/sinusoid.h), forward sum and backward,
// fast vs the std::sin `_ref` twin, over one big ResNet-20 layer (64·64·9 = 36,864 weights) and the
// whole set of its regularized weights (269,824 in 20 convs, as one call to show the rate).
// Counter: elements per second. Threads: LOWBIT_NUM_THREADS (default all cores).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "core/kernels/sinusoid.h"

using namespace lowbit::kernels;

namespace {

std::vector<float> weights(int64_t n) {
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.0f, 0.1f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

constexpr double kA = 3.14159265358979 * 15 / 0.4;  // π / Δ / s: 5-bit WRPN grid, max|w| 0.4
constexpr double kB = 0.0;

void BM_Sin2Forward(benchmark::State& st) {
  const int64_t n = st.range(0);
  const bool fast = st.range(1) != 0;
  const auto x = weights(n);
  for (auto _ : st) {
    double s = fast ? sin2_sum(n, x.data(), kA, kB) : sin2_sum_ref(n, x.data(), kA, kB);
    benchmark::DoNotOptimize(s);
  }
  st.counters["elem/s"] = benchmark::Counter(double(n), benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(fast ? "fast" : "ref");
}

void BM_Sin2Backward(benchmark::State& st) {
  const int64_t n = st.range(0);
  const bool fast = st.range(1) != 0;
  const auto x = weights(n);
  std::vector<float> dx(n);
  for (auto _ : st) {
    double s = fast ? sin2_backward(n, x.data(), kA, kB, 1.0, dx.data())
                    : sin2_backward_ref(n, x.data(), kA, kB, 1.0, dx.data());
    benchmark::DoNotOptimize(s);
    benchmark::ClobberMemory();
  }
  st.counters["elem/s"] = benchmark::Counter(double(n), benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(fast ? "fast" : "ref");
}

void size_args(benchmark::internal::Benchmark* b) {
  for (int64_t n : {36864, 269824})
    for (int64_t fast : {1, 0}) b->Args({n, fast});
  b->ArgNames({"n", "fast"})->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(0.2);
}

}  // namespace

BENCHMARK(BM_Sin2Forward)->Apply(size_args);
BENCHMARK(BM_Sin2Backward)->Apply(size_args);

BENCHMARK_MAIN();
