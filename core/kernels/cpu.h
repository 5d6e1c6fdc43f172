// CPU features shared by the kernels: the target attribute of AVX-512 code paths and the one
// run-time check that guards them (kernels are dispatched at run time, whatever -march says).
#pragma once

#define LOWBIT_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))

namespace lowbit::kernels {

// True when the CPU has AVX-512 F, BW, DQ and VL (what LOWBIT_AVX512 functions use); cached.
bool cpu_has_avx512();

}  // namespace lowbit::kernels
