#include "core/kernels/peak.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace lowbit::kernels {
namespace {

// Each probe runs `iters` iterations of 24 independent FMA chains (24 > latency 4 x 2 ports) and
// returns the flops done. The accumulators feed the return value so nothing is optimized away.
constexpr int kChains = 24;

__attribute__((target("avx512f,fma"))) double probe_avx512(int64_t iters, float* sink) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(float(c) * 1e-3f);
  const __m512 x = _mm512_set1_ps(0.999999f);
  const __m512 y = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 24
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], x, y);
  }
  __m512 s = acc[0];
  for (int c = 1; c < kChains; ++c) s = _mm512_add_ps(s, acc[c]);
  alignas(64) float out[16];
  _mm512_store_ps(out, s);
  float total = 0;
  for (float v : out) total += v;
  *sink = total;
  return double(iters) * kChains * 16 * 2;
}

__attribute__((target("avx2,fma"))) double probe_avx2(int64_t iters, float* sink) {
  __m256 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(float(c) * 1e-3f);
  const __m256 x = _mm256_set1_ps(0.999999f);
  const __m256 y = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 24
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], x, y);
  }
  __m256 s = acc[0];
  for (int c = 1; c < kChains; ++c) s = _mm256_add_ps(s, acc[c]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  float total = 0;
  for (float v : out) total += v;
  *sink = total;
  return double(iters) * kChains * 8 * 2;
}

double probe_scalar(int64_t iters, float* sink) {
  float acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = float(c) * 1e-3f;
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * 0.999999f + 1e-7f;
  float total = 0;
  for (float v : acc) total += v;
  *sink = total;
  return double(iters) * kChains * 2;
}

enum class Isa { avx512, avx2, scalar };

Isa detect_isa() {
  if (__builtin_cpu_supports("avx512f")) return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
  return Isa::scalar;
}

double run_probe(Isa isa, int64_t iters, float* sink) {
  switch (isa) {
    case Isa::avx512: return probe_avx512(iters, sink);
    case Isa::avx2: return probe_avx2(iters, sink);
    default: return probe_scalar(iters, sink);
  }
}

// All threads start together; the time is from the common start to the last finish.
double timed_run(Isa isa, int threads, int64_t iters) {
  std::vector<float> sinks(size_t(threads) * 16);
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> pool;
  std::vector<double> flops(size_t(threads), 0.0);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      flops[size_t(t)] = run_probe(isa, iters, &sinks[size_t(t) * 16]);
    });
  }
  while (ready.load() < threads) {
  }
  const auto t0 = std::chrono::steady_clock::now();
  go.store(true, std::memory_order_release);
  for (auto& th : pool) th.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double total = 0;
  for (double f : flops) total += f;
  return total / secs * 1e-9;
}

// 64 dependent 1-cycle register-register adds per iteration (not add-immediate: Golden Cove folds
// those at rename, several per cycle); the loop counter and branch run alongside. The
// vector FMAs of the same loop keep the core at its FMA-load clock (AVX-512 licence) meanwhile.
__attribute__((target("avx512f,fma"))) double clock_probe_avx512(int64_t iters) {
  uint64_t v = 1;
  __m512 acc = _mm512_set1_ps(1.0f);
  const __m512 x = _mm512_set1_ps(0.999999f);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) {
    asm volatile(
        ".rept 64\n\t"
        "addq %0, %0\n\t"
        ".endr"
        : "+r"(v));
    acc = _mm512_fmadd_ps(acc, x, x);
    asm volatile("" : "+v"(acc));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  asm volatile("" ::"r"(v));
  return double(iters) * 64 / secs * 1e-9;
}

double clock_probe_scalar(int64_t iters) {
  uint64_t v = 1;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) asm volatile(".rept 64\n\taddq %0, %0\n\t.endr" : "+r"(v));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return double(iters) * 64 / secs * 1e-9;
}

}  // namespace

double measure_clock_ghz() {
  const bool avx512 = detect_isa() == Isa::avx512;
  const int64_t iters = 2'000'000;
  auto probe = [&](int64_t n) { return avx512 ? clock_probe_avx512(n) : clock_probe_scalar(n); };
  probe(iters / 4);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) best = std::max(best, probe(iters));
  return best;
}

double measure_peak_gflops(int threads) {
  threads = std::max(1, threads);
  const Isa isa = detect_isa();
  const int64_t iters = isa == Isa::scalar ? 2'000'000 : 4'000'000;
  timed_run(isa, threads, iters / 4);  // warm up: clocks, thread start-up
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) best = std::max(best, timed_run(isa, threads, iters));
  return best;
}

const char* peak_isa() {
  switch (detect_isa()) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "scalar";
  }
}

}  // namespace lowbit::kernels
