// CPU features shared by the kernels: the target attribute of AVX-512 code paths, the run-time
// check that guards them (kernels are dispatched at run time, whatever -march says) and the one
// test/bench switch that turns the AVX-512 paths off.
#pragma once

#define LOWBIT_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
// LOWBIT_AVX512 plus AVX-512 VNNI (vpdpbusd), for the int8 kernels; guarded by cpu_has_avx512_vnni().
#define LOWBIT_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,fma")))

namespace lowbit::kernels {

// True when the CPU has AVX-512 F, BW, DQ and VL (what LOWBIT_AVX512 functions use); cached.
bool cpu_has_avx512();

// cpu_has_avx512() && AVX-512 VNNI (what LOWBIT_AVX512_VNNI functions use); cached. The int8 kernels
// (core/kernels/gemm_int8.h) take their VNNI path when this and avx512_enabled() are both true.
bool cpu_has_avx512_vnni();

// cpu_has_avx512() && the switch below. The depthwise, batchnorm, pool and clip-quantize kernels
// and the Adam/AdamW float update take their AVX-512 path only when this is true; GEMM, direct
// and Winograd convolution ignore the switch (they dispatch on cpu_has_avx512() alone).
bool avx512_enabled();

// Test/bench switch (default on, process-wide): false routes float calls of the kernels above
// through their portable paths even on AVX-512 CPUs. Both paths give bit-identical results.
void set_avx512_enabled(bool on);

// Sets the switch for a scope and restores the previous setting on exit.
class Avx512Guard {
 public:
  explicit Avx512Guard(bool on);
  ~Avx512Guard();
  Avx512Guard(const Avx512Guard&) = delete;
  Avx512Guard& operator=(const Avx512Guard&) = delete;

 private:
  bool prev_;
};

}  // namespace lowbit::kernels
