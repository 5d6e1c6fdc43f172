#include "core/kernels/cpu.h"

#include <atomic>

namespace lowbit::kernels {
namespace {

std::atomic<bool> g_avx512_switch{true};

}  // namespace

bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return has;
}

bool cpu_has_avx512_vnni() {
  static const bool has = cpu_has_avx512() && __builtin_cpu_supports("avx512vnni");
  return has;
}

bool avx512_enabled() { return cpu_has_avx512() && g_avx512_switch.load(std::memory_order_relaxed); }

void set_avx512_enabled(bool on) { g_avx512_switch.store(on, std::memory_order_relaxed); }

Avx512Guard::Avx512Guard(bool on) : prev_(g_avx512_switch.exchange(on, std::memory_order_relaxed)) {}

Avx512Guard::~Avx512Guard() { g_avx512_switch.store(prev_, std::memory_order_relaxed); }

}  // namespace lowbit::kernels
