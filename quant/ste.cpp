#include "quant/ste.h"

#include "autograd/ops.h"
#include "core/kernels/quantize.h"
#include "core/math.h"

namespace lowbit::quant {
namespace {
// sign with sign(0) = +1 (tensorpack's convention for binary weights).
Tensor sign_nonzero(const Tensor& x) {
  return math::sub(math::mul(math::ge(x, 0.0), 2.0), Tensor::ones({}, x.dtype()));
}
}  // namespace

Variable round_ste(const Variable& x) {
  return make_result(math::round(x.data()), "round_ste", {x},
                     [](const Variable& g, const Variable&) { return std::vector<Variable>{g}; });
}

Variable floor_ste(const Variable& x) {
  return make_result(math::floor(x.data()), "floor_ste", {x},
                     [](const Variable& g, const Variable&) { return std::vector<Variable>{g}; });
}

Variable ceil_ste(const Variable& x) {  // ceil(x) = -floor(-x)
  return make_result(math::neg(math::floor(math::neg(x.data()))), "ceil_ste", {x},
                     [](const Variable& g, const Variable&) { return std::vector<Variable>{g}; });
}

Variable sign_ste(const Variable& x) {
  return make_result(sign_nonzero(x.data()), "sign_ste", {x},
                     [](const Variable& g, const Variable&) { return std::vector<Variable>{g}; });
}

Variable sign_ste_clipped(const Variable& x) {
  return make_result(sign_nonzero(x.data()), "sign_ste_clipped", {x}, [x](const Variable& g, const Variable&) {
    return std::vector<Variable>{mul_mask(g, math::le(math::abs(x.data()), 1.0))};
  });
}

Variable straight_through(const Variable& x, const Tensor& value) {
  LOWBIT_CHECK(value.shape() == x.shape(), "straight_through: value ", shape_str(value.shape()),
               " does not match input ", shape_str(x.shape()));
  return make_result(value, "straight_through", {x},
                     [](const Variable& g, const Variable&) { return std::vector<Variable>{g}; });
}

Variable grad_scale(const Variable& x, double scale) {
  return make_result(x.data(), "grad_scale", {x},
                     [scale](const Variable& g, const Variable&) { return std::vector<Variable>{mul(g, scale)}; });
}

namespace {

// A tensor with `like`'s shape and dense layout holding t's values (no copy when they match).
Tensor in_layout_of(const Tensor& t, const Tensor& like) {
  if (t.strides() == like.strides() && t.shape() == like.shape()) return t;
  Tensor out = Tensor::empty_like(like);
  out.copy_(t);
  return out;
}

// dx = g 1[lo <= x <= hi]; linear in g, so its own backward is the same mask (double backward).
Variable clip_mask_grad(const Variable& g, const Tensor& x, double lo, double hi) {
  const Tensor dy = in_layout_of(g.data(), x);
  Tensor dx = Tensor::empty_like(x);
  LOWBIT_DISPATCH_FLOAT(x.dtype(), "clip_quantize backward", [&] {
    kernels::clip_mask_backward(x.numel(), x.data<scalar_t>(), dy.data<scalar_t>(), scalar_t(lo), scalar_t(hi),
                                dx.data<scalar_t>());
  });
  return make_result(dx, "clip_mask_grad", {g}, [x, lo, hi](const Variable& gg, const Variable&) {
    return std::vector<Variable>{clip_mask_grad(gg, x, lo, hi)};
  });
}

}  // namespace

Variable clip_quantize(const Variable& x_in, double lo, double hi, double n) {
  LOWBIT_CHECK(lo <= hi && n > 0, "clip_quantize: need lo <= hi and n > 0, got [", lo, ", ", hi, "], n = ", n);
  const Tensor x = x_in.data().is_dense() ? x_in.data() : x_in.data().contiguous();
  Tensor y = Tensor::empty_like(x);
  LOWBIT_DISPATCH_FLOAT(x.dtype(), "clip_quantize", [&] {
    kernels::clip_quantize_forward(x.numel(), x.data<scalar_t>(), scalar_t(lo), scalar_t(hi), scalar_t(n),
                                   scalar_t(1.0 / n), y.data<scalar_t>());
  });
  return make_result(y, "clip_quantize", {x_in}, [x, lo, hi](const Variable& g, const Variable&) {
    return std::vector<Variable>{clip_mask_grad(g, x, lo, hi)};
  });
}

namespace {

// step_quantize's gradients as ops, for a double backward: linear in g with constant coefficients
// (the mask, and r or LSQ's r - u 1[inside]), as the straight-through compositions' are (there the
// STE's d r / dx := 1 / s cancels the chain's -u / s terms).
std::vector<Variable> step_grads_composed(const Variable& g, const Tensor& x, const Variable& s,
                                          const kernels::StepGrid& grid, StepGradient mode) {
  const double lo = grid.lo, hi = grid.hi;
  const Tensor u = math::div(x, Tensor::full({}, grid.step, x.dtype()));
  const Tensor inside = math::mul(math::ge(u, lo), math::le(u, hi));
  Tensor coef = math::clamp(math::round(u), lo, hi);
  if (mode == StepGradient::full) coef = math::sub(coef, math::mul(u, inside));
  return {mul(g, Variable(inside)), reshape(sum(mul(g, Variable(coef))), s.shape())};
}

}  // namespace

Variable step_quantize(const Variable& x_in, const Variable& s, double lo, double hi, StepGradient mode) {
  LOWBIT_CHECK(s.defined() && s.numel() == 1, "step_quantize: the step must be a one-element Variable");
  const kernels::StepGrid grid{s.item(), lo, hi};
  const Tensor x = x_in.data().is_dense() ? x_in.data() : x_in.data().contiguous();
  Tensor y = Tensor::empty_like(x);
  LOWBIT_DISPATCH_FLOAT(x.dtype(), "step_quantize", [&] {
    kernels::step_quantize_forward(grid, x.numel(), x.data<scalar_t>(), y.data<scalar_t>());
  });
  return make_result(y, "step_quantize", {x_in, s}, [x, s, grid, mode](const Variable& g, const Variable&) {
    if (GradMode::enabled()) return step_grads_composed(g, x, s, grid, mode);
    const Tensor dy = in_layout_of(g.data(), x);
    Tensor dx = Tensor::empty_like(x);
    kernels::StepGridSums sums;
    LOWBIT_DISPATCH_FLOAT(x.dtype(), "step_quantize backward", [&] {
      sums = kernels::step_quantize_backward(grid, x.numel(), x.data<scalar_t>(), dy.data<scalar_t>(),
                                             dx.data<scalar_t>());
    });
    const double ds = mode == StepGradient::full ? sums.codes - sums.inside : sums.codes;
    return std::vector<Variable>{Variable(dx), Variable(Tensor::full(s.shape(), ds, s.dtype()))};
  });
}

}  // namespace lowbit::quant
