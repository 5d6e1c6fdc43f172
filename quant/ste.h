// Straight-through primitives (spec §8.1). Quantizers are composed from these and ordinary ops,
// so their surrogate gradients follow from the composition.
//
//   round_ste(x)             forward round-half-to-even(x), backward identity (dy/dx := 1)
//   floor_ste(x)             forward floor(x), backward identity
//   ceil_ste(x)              forward ceil(x), backward identity (nnabla's F.ceil, Uhlich §6.3)
//   sign_ste(x)              forward sign with sign(0) = +1, backward identity (DoReFa/BWN)
//   sign_ste_clipped(x)      forward sign with sign(0) = +1, backward 1[|x| <= 1] (BNN hardtanh STE)
//   straight_through(x, v)   forward the tensor v (shape of x), backward identity to x
//   grad_scale(x, s)         forward x, backward g * s (LSQ's gradient scaling)
//   clip_quantize(x, lo, hi, n)
//                            forward round(clamp(x, lo, hi) n) / n, backward g 1[lo <= x <= hi]: the
//                            composition round_ste(clamp(x, lo, hi) * n) * (1/n), fused into one pass
//                            each way (core/kernels/quantize.h; bit-identical, pinned by tests)
//   step_quantize(x, s, lo, hi, grad)
//                            the learned-step grid (LSQ, Choi's MSQE): forward s r with the codes
//                            r = clamp(round(x / s), lo, hi) (lo, hi integers, s > 0 a one-element
//                            Variable); backward dx = g 1[lo <= x/s <= hi] and
//                              StepGradient::codes  ds = sum g r                  (MSQE: r held constant)
//                              StepGradient::full   ds = sum g (r - (x/s) 1[inside])   (LSQ: d(s r)/ds)
//                            Values bit-identical to the composed div -> round -> clamp -> mul (LSQ's
//                            grad_scale goes on s before the call); one pass each way (core/kernels/
//                            quantize.h). Twice differentiable as the compositions are: both gradients
//                            linear in g with constant coefficients (the STE's dr/dx := 1/s cancels -u/s).
#pragma once

#include "autograd/variable.h"

namespace lowbit::quant {

Variable round_ste(const Variable& x);
Variable floor_ste(const Variable& x);
Variable ceil_ste(const Variable& x);
Variable sign_ste(const Variable& x);
Variable sign_ste_clipped(const Variable& x);
Variable straight_through(const Variable& x, const Tensor& value);
Variable grad_scale(const Variable& x, double scale);
Variable clip_quantize(const Variable& x, double lo, double hi, double n);
enum class StepGradient { codes, full };
Variable step_quantize(const Variable& x, const Variable& s, double lo, double hi, StepGradient grad);

}  // namespace lowbit::quant
