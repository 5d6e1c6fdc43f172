#include "core/kernels/quantize.h"

#include <immintrin.h>

#include <cmath>

#include "core/kernels/cpu.h"
#include "core/parallel.h"

namespace lowbit::kernels {
namespace {

constexpr int64_t kGrain = 1 << 16;

template <class T>
T clamp_scalar(T x, T lo, T hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

template <class T>
void forward_portable(int64_t b, int64_t e, const T* x, T lo, T hi, T scale, T inv_scale, T* y) {
  for (int64_t i = b; i < e; ++i) y[i] = std::nearbyint(clamp_scalar(x[i], lo, hi) * scale) * inv_scale;
}

template <class T>
void backward_portable(int64_t b, int64_t e, const T* x, const T* dy, T lo, T hi, T* dx) {
  for (int64_t i = b; i < e; ++i) dx[i] = (x[i] >= lo && x[i] <= hi) ? dy[i] : T(0);
}

LOWBIT_AVX512 void forward_avx512(int64_t b, int64_t e, const float* x, float lo, float hi, float scale,
                                  float inv_scale, float* y) {
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi), vs = _mm512_set1_ps(scale),
               vinv = _mm512_set1_ps(inv_scale);
  int64_t i = b;
  for (; i + 16 <= e; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    // x < lo ? lo : (x > hi ? hi : x): NaN compares false both ways and passes through.
    __m512 c = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, vhi, _CMP_GT_OQ), v, vhi);
    c = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, vlo, _CMP_LT_OQ), c, vlo);
    // (the masked form: GCC 12 warns about the unmasked intrinsic's undefined pass-through operand)
    const __m512 p = _mm512_mul_ps(c, vs);
    const __m512 r = _mm512_mask_roundscale_ps(p, 0xFFFF, p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm512_storeu_ps(y + i, _mm512_mul_ps(r, vinv));
  }
  forward_portable(i, e, x, lo, hi, scale, inv_scale, y);
}

LOWBIT_AVX512 void backward_avx512(int64_t b, int64_t e, const float* x, const float* dy, float lo, float hi,
                                   float* dx) {
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  int64_t i = b;
  for (; i + 16 <= e; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __mmask16 in = _mm512_cmp_ps_mask(v, vlo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(v, vhi, _CMP_LE_OQ);
    _mm512_storeu_ps(dx + i, _mm512_maskz_mov_ps(in, _mm512_loadu_ps(dy + i)));
  }
  backward_portable(i, e, x, dy, lo, hi, dx);
}

}  // namespace

void clip_quantize_forward(int64_t n, const float* x, float lo, float hi, float scale, float inv_scale, float* y) {
  const bool simd = avx512_enabled();
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    if (simd)
      forward_avx512(b, e, x, lo, hi, scale, inv_scale, y);
    else
      forward_portable(b, e, x, lo, hi, scale, inv_scale, y);
  });
}

void clip_quantize_forward(int64_t n, const double* x, double lo, double hi, double scale, double inv_scale,
                           double* y) {
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { forward_portable(b, e, x, lo, hi, scale, inv_scale, y); });
}

void clip_mask_backward(int64_t n, const float* x, const float* dy, float lo, float hi, float* dx) {
  const bool simd = avx512_enabled();
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    if (simd)
      backward_avx512(b, e, x, dy, lo, hi, dx);
    else
      backward_portable(b, e, x, dy, lo, hi, dx);
  });
}

void clip_mask_backward(int64_t n, const double* x, const double* dy, double lo, double hi, double* dx) {
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { backward_portable(b, e, x, dy, lo, hi, dx); });
}

void clip_quantize_forward_ref(int64_t n, const float* x, float lo, float hi, float scale, float inv_scale, float* y) {
  forward_portable<float>(0, n, x, lo, hi, scale, inv_scale, y);
}
void clip_quantize_forward_ref(int64_t n, const double* x, double lo, double hi, double scale, double inv_scale,
                               double* y) {
  forward_portable<double>(0, n, x, lo, hi, scale, inv_scale, y);
}
void clip_mask_backward_ref(int64_t n, const float* x, const float* dy, float lo, float hi, float* dx) {
  backward_portable<float>(0, n, x, dy, lo, hi, dx);
}
void clip_mask_backward_ref(int64_t n, const double* x, const double* dy, double lo, double hi, double* dx) {
  backward_portable<double>(0, n, x, dy, lo, hi, dx);
}

}  // namespace lowbit::kernels
