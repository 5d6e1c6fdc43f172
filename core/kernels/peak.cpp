#include "core/kernels/peak.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "core/kernels/cpu.h"

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

// 16 independent vpdpbusd chains (> latency x throughput on every VNNI core); returns the ops done
// (1 MAC = 2 ops). The chains are written in asm: GCC 12 keeps an array of 24 vector accumulators
// partly on the stack inside the loop (stores between the vpdpbusd), which halved the measured rate.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) double probe_vnni(int64_t iters, float* sink) {
  __m512i c0 = _mm512_set1_epi32(0), c1 = _mm512_set1_epi32(1), c2 = _mm512_set1_epi32(2), c3 = _mm512_set1_epi32(3);
  __m512i c4 = _mm512_set1_epi32(4), c5 = _mm512_set1_epi32(5), c6 = _mm512_set1_epi32(6), c7 = _mm512_set1_epi32(7);
  __m512i c8 = _mm512_set1_epi32(8), c9 = _mm512_set1_epi32(9), c10 = _mm512_set1_epi32(10),
          c11 = _mm512_set1_epi32(11);
  __m512i c12 = _mm512_set1_epi32(12), c13 = _mm512_set1_epi32(13), c14 = _mm512_set1_epi32(14),
          c15 = _mm512_set1_epi32(15);
  const __m512i a = _mm512_set1_epi32(0x01020304);
  const __m512i b = _mm512_set1_epi32(0x01FF01FF);
  for (int64_t i = 0; i < iters; ++i) {
    // Two statements of 8 ("+v" counts twice towards asm's 30 operands).
    asm volatile(
        "vpdpbusd %[b], %[a], %[c0]\n\tvpdpbusd %[b], %[a], %[c1]\n\t"
        "vpdpbusd %[b], %[a], %[c2]\n\tvpdpbusd %[b], %[a], %[c3]\n\t"
        "vpdpbusd %[b], %[a], %[c4]\n\tvpdpbusd %[b], %[a], %[c5]\n\t"
        "vpdpbusd %[b], %[a], %[c6]\n\tvpdpbusd %[b], %[a], %[c7]"
        : [c0] "+v"(c0), [c1] "+v"(c1), [c2] "+v"(c2), [c3] "+v"(c3), [c4] "+v"(c4), [c5] "+v"(c5), [c6] "+v"(c6),
          [c7] "+v"(c7)
        : [a] "v"(a), [b] "v"(b));
    asm volatile(
        "vpdpbusd %[b], %[a], %[c8]\n\tvpdpbusd %[b], %[a], %[c9]\n\t"
        "vpdpbusd %[b], %[a], %[c10]\n\tvpdpbusd %[b], %[a], %[c11]\n\t"
        "vpdpbusd %[b], %[a], %[c12]\n\tvpdpbusd %[b], %[a], %[c13]\n\t"
        "vpdpbusd %[b], %[a], %[c14]\n\tvpdpbusd %[b], %[a], %[c15]"
        : [c8] "+v"(c8), [c9] "+v"(c9), [c10] "+v"(c10), [c11] "+v"(c11), [c12] "+v"(c12), [c13] "+v"(c13),
          [c14] "+v"(c14), [c15] "+v"(c15)
        : [a] "v"(a), [b] "v"(b));
  }
  const __m512i s =
      _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                                        _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7))),
                       _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11)),
                                        _mm512_add_epi32(_mm512_add_epi32(c12, c13), _mm512_add_epi32(c14, c15))));
  alignas(64) int32_t out[16];
  _mm512_store_si512(out, s);
  int64_t total = 0;
  for (int32_t v : out) total += v;
  *sink = float(total);
  return double(iters) * 16 * 64 * 2;
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

enum class Isa { avx512, avx2, scalar, vnni };  // vnni: the int8 probe only

Isa detect_isa() {
  if (__builtin_cpu_supports("avx512f")) return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
  return Isa::scalar;
}

double run_probe(Isa isa, int64_t iters, float* sink) {
  switch (isa) {
    case Isa::avx512: return probe_avx512(iters, sink);
    case Isa::avx2: return probe_avx2(iters, sink);
    case Isa::vnni: return probe_vnni(iters, sink);
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

double measure_peak_int8_gops(int threads) {
  if (!cpu_has_avx512_vnni()) return 0.0;
  threads = std::max(1, threads);
  const int64_t iters = 8'000'000;           // 128M vpdpbusd per thread, ~35 ms at 1 per cycle
  timed_run(Isa::vnni, threads, iters / 4);  // warm up: clocks, thread start-up
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) best = std::max(best, timed_run(Isa::vnni, threads, iters));
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
