// Fused uniform fake-quantization of activations: one pass forward, one pass backward, in place of
// the composed clamp -> scale -> round -> rescale chain (quant/quantizers.h uses these for DoReFa,
// WRPN and PACT-style activations; the composed chain stays the definition they are tested against).
//
//   clip_quantize_forward   y[i] = nearbyint(clamp(x[i], lo, hi) * scale) * inv_scale
//                           (round half to even; clamp as x < lo ? lo : x > hi ? hi : x, so NaN
//                           passes through; scale and inv_scale given in the element type so the
//                           result is bit-identical to the composed ops)
//   clip_mask_backward      dx[i] = lo <= x[i] <= hi ? dy[i] : 0   (straight-through estimator with
//                           the clamp's mask, PyTorch's clamp convention at the bounds)
// n elements, contiguous. Float runs AVX-512 when the CPU has it; `_ref` twins are plain loops.
// Parallel over fixed chunks; every element is computed once, so results never depend on threads.
#pragma once

#include <cstdint>

namespace lowbit::kernels {

void clip_quantize_forward(int64_t n, const float* x, float lo, float hi, float scale, float inv_scale, float* y);
void clip_quantize_forward(int64_t n, const double* x, double lo, double hi, double scale, double inv_scale, double* y);
void clip_mask_backward(int64_t n, const float* x, const float* dy, float lo, float hi, float* dx);
void clip_mask_backward(int64_t n, const double* x, const double* dy, double lo, double hi, double* dx);

void clip_quantize_forward_ref(int64_t n, const float* x, float lo, float hi, float scale, float inv_scale, float* y);
void clip_quantize_forward_ref(int64_t n, const double* x, double lo, double hi, double scale, double inv_scale,
                               double* y);
void clip_mask_backward_ref(int64_t n, const float* x, const float* dy, float lo, float hi, float* dx);
void clip_mask_backward_ref(int64_t n, const double* x, const double* dy, double lo, double hi, double* dx);

}  // namespace lowbit::kernels
