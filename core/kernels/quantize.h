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
//   clip_open_backward      dx[i] = lo < x[i] < hi ? dy[i] : 0 (PACT's mask, open at both ends);
//                           returns the double sums of dy over x[i] <= lo and over x[i] >= hi (what
//                           PACT's dalpha is made of; NaN in neither)
//
// Uhlich's uniform grid (quant/quantizers.h uniform_u3, its step and range already rounded), fused
// for large activations; in double per element:
//   uniform_grid_forward    y[i] = s d floor(min(a, q) / d + 1/2),  a = |x[i]|, s = sign(x[i])
//                           (sign(0) = 0) when signed; unsigned: a = x[i], s = 1, y = 0 for x < 0.
//                           (a power-of-two d: everything but the floor is exact.)
//   uniform_grid_backward   dx[i] = dy[i] where x[i] is inside the range (a <= q; unsigned also
//                           x >= 0), else 0; returns the double sums over the elements inside of
//                           dy (y - x) and over those outside (a > q) of dy s: what U3's gradients
//                           of d and q_max are built from.
//
// Uhlich's power-of-two grid (pow2_p3, lo = q_min' and hi = q_max' already powers of two):
//   pow2_grid_forward       y[i] = s p with a = |x[i]|, s = sign(x[i]) (sign(0) = +1), p = lo for a <= lo,
//                           2^round(log2 a) for lo < a <= hi, hi above; unsigned: y = 0 for x <= 0.
//   pow2_grid_backward      dx[i] = dy[i] (p / a) for lo < a <= hi, else 0; returns the double sums
//                           of dy s over the elements at or below lo and over those above hi.
// The learned-step grid (LSQ, Choi's MSQE cells; quant/ste.h step_quantize): codes r = clamp(
// nearbyint(u), lo, hi) with u = x[i] / step computed in the element type (as the composed div ->
// round -> clamp, so the values are bit-identical to it):
//   step_quantize_forward   y[i] = r step (in the element type)
//   step_quantize_backward  dx[i] = lo <= u <= hi ? dy[i] : 0; returns the double sums of dy r over
//                           every element and of dy u over the elements inside (NaN: outside, its r
//                           NaN): what dQ/dstep is built from (r, or LSQ's r - u inside).
// n elements, contiguous. Float runs AVX-512 when the CPU has it; `_ref` twins are plain loops.
// Parallel over fixed chunks; every element is computed once, so results never depend on threads;
// the sums are taken per chunk in order and added in chunk order, the chunks fixed by n alone.
#pragma once

#include <cstdint>

namespace lowbit::kernels {

void clip_quantize_forward(int64_t n, const float* x, float lo, float hi, float scale, float inv_scale, float* y);
void clip_quantize_forward(int64_t n, const double* x, double lo, double hi, double scale, double inv_scale, double* y);
void clip_mask_backward(int64_t n, const float* x, const float* dy, float lo, float hi, float* dx);
void clip_mask_backward(int64_t n, const double* x, const double* dy, double lo, double hi, double* dx);

struct ClipSums {
  double low = 0;   // sum of dy over x <= lo
  double high = 0;  // sum of dy over x >= hi
};
ClipSums clip_open_backward(int64_t n, const float* x, const float* dy, float lo, float hi, float* dx);
ClipSums clip_open_backward(int64_t n, const double* x, const double* dy, double lo, double hi, double* dx);
ClipSums clip_open_backward_ref(int64_t n, const float* x, const float* dy, float lo, float hi, float* dx);
ClipSums clip_open_backward_ref(int64_t n, const double* x, const double* dy, double lo, double hi, double* dx);

struct UniformGrid {
  double step = 1, range = 1;  // d and q, range a multiple of step
  bool signed_ = true;
};
struct UniformGridSums {
  double inside = 0;   // sum over the elements inside of dy (y - x)
  double outside = 0;  // sum over the elements outside of dy sign(x)
};
void uniform_grid_forward(const UniformGrid& g, int64_t n, const float* x, float* y);
void uniform_grid_forward(const UniformGrid& g, int64_t n, const double* x, double* y);
UniformGridSums uniform_grid_backward(const UniformGrid& g, int64_t n, const float* x, const float* dy, float* dx);
UniformGridSums uniform_grid_backward(const UniformGrid& g, int64_t n, const double* x, const double* dy, double* dx);
void uniform_grid_forward_ref(const UniformGrid& g, int64_t n, const float* x, float* y);
void uniform_grid_forward_ref(const UniformGrid& g, int64_t n, const double* x, double* y);
UniformGridSums uniform_grid_backward_ref(const UniformGrid& g, int64_t n, const float* x, const float* dy, float* dx);
UniformGridSums uniform_grid_backward_ref(const UniformGrid& g, int64_t n, const double* x, const double* dy,
                                          double* dx);

struct Pow2Grid {
  double lo = 1, hi = 1;  // powers of two, lo <= hi
  bool signed_ = true;
};
struct Pow2GridSums {
  double low = 0;   // sum of dy sign(x) over the elements with |x| <= lo
  double high = 0;  // ... with |x| > hi
};
void pow2_grid_forward(const Pow2Grid& g, int64_t n, const float* x, float* y);
void pow2_grid_forward(const Pow2Grid& g, int64_t n, const double* x, double* y);
Pow2GridSums pow2_grid_backward(const Pow2Grid& g, int64_t n, const float* x, const float* dy, float* dx);
Pow2GridSums pow2_grid_backward(const Pow2Grid& g, int64_t n, const double* x, const double* dy, double* dx);
void pow2_grid_forward_ref(const Pow2Grid& g, int64_t n, const float* x, float* y);
void pow2_grid_forward_ref(const Pow2Grid& g, int64_t n, const double* x, double* y);
Pow2GridSums pow2_grid_backward_ref(const Pow2Grid& g, int64_t n, const float* x, const float* dy, float* dx);
Pow2GridSums pow2_grid_backward_ref(const Pow2Grid& g, int64_t n, const double* x, const double* dy, double* dx);

struct StepGrid {
  double step = 1, lo = 0, hi = 1;  // step > 0; lo <= hi, integers (the code range)
};
struct StepGridSums {
  double codes = 0;   // sum over every element of dy r
  double inside = 0;  // sum over the elements inside of dy u
};
void step_quantize_forward(const StepGrid& g, int64_t n, const float* x, float* y);
void step_quantize_forward(const StepGrid& g, int64_t n, const double* x, double* y);
StepGridSums step_quantize_backward(const StepGrid& g, int64_t n, const float* x, const float* dy, float* dx);
StepGridSums step_quantize_backward(const StepGrid& g, int64_t n, const double* x, const double* dy, double* dx);
void step_quantize_forward_ref(const StepGrid& g, int64_t n, const float* x, float* y);
void step_quantize_forward_ref(const StepGrid& g, int64_t n, const double* x, double* y);
StepGridSums step_quantize_backward_ref(const StepGrid& g, int64_t n, const float* x, const float* dy, float* dx);
StepGridSums step_quantize_backward_ref(const StepGrid& g, int64_t n, const double* x, const double* dy, double* dx);

void clip_quantize_forward_ref(int64_t n, const float* x, float lo, float hi, float scale, float inv_scale, float* y);
void clip_quantize_forward_ref(int64_t n, const double* x, double lo, double hi, double scale, double inv_scale,
                               double* y);
void clip_mask_backward_ref(int64_t n, const float* x, const float* dy, float lo, float hi, float* dx);
void clip_mask_backward_ref(int64_t n, const double* x, const double* dy, double lo, double hi, double* dx);

}  // namespace lowbit::kernels
