// Internal to the GEMM kernels (not a public header): the AVX-512 float GEMM behind gemm/gemm_serial.
//
//   sgemm_avx512_supported()  the CPU has AVX-512F/BW/DQ/VL at run time.
//   sgemm_avx512(g, parallel) C = alpha*op(A)*op(B) + beta*C, same contract as gemm(). Blocked
//                             GotoBLAS-style: B packed into KC x NR panels, A packed into MR x KC
//                             panels (or read in place when that is cheaper), a 14x32 micro-kernel.
//                             Every C element is accumulated over K in a fixed order (K blocks of a
//                             size that depends on K alone), so the result is bit-identical for any
//                             thread count and any split of C. parallel=false never spawns tasks.
#pragma once

#include "core/kernels/gemm.h"

namespace lowbit::kernels::detail {

bool sgemm_avx512_supported();
void sgemm_avx512(const GemmArgs<float>& g, bool parallel);

}  // namespace lowbit::kernels::detail
