// Internal: requant.h's single-precision form (2f) on 16 lanes, shared by the kernels that apply it
// (requant.cpp's rows, the Winograd kernels' fused epilogues) so that they all perform the same float
// operations in the same order, the ones bound_accumulators verified against the integer rule (2):
//   u = fma(res, m~', fma(acc, m~, b~)),  code = nearbyint(clamp(u, qmin, qmax))
// (the clamp before the rounding equals the clamp after it: qmin and qmax are integers).
#pragma once

#include <immintrin.h>

#include "core/kernels/cpu.h"

namespace lowbit::kernels::detail {

// u for int32 accumulators acc (and, with a residual, its int32 lanes res).
LOWBIT_AVX512 inline __m512 requant_f32_value(__m512i acc, __m512 m, __m512 b) {
  return _mm512_maskz_fmadd_ps(0xFFFF, _mm512_maskz_cvtepi32_ps(0xFFFF, acc), m, b);
}
LOWBIT_AVX512 inline __m512 requant_f32_value(__m512i acc, __m512 m, __m512 b, __m512i res, __m512 mr) {
  return _mm512_maskz_fmadd_ps(0xFFFF, _mm512_maskz_cvtepi32_ps(0xFFFF, res), mr, requant_f32_value(acc, m, b));
}

// The codes of u as int32 lanes.
LOWBIT_AVX512 inline __m512i requant_f32_codes(__m512 u, __m512 qmin, __m512 qmax) {
  const __m512 clamped = _mm512_maskz_min_ps(0xFFFF, _mm512_maskz_max_ps(0xFFFF, u, qmin), qmax);
  return _mm512_maskz_cvt_roundps_epi32(0xFFFF, clamped, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

}  // namespace lowbit::kernels::detail
