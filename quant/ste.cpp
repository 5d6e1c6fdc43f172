#include "quant/ste.h"

#include "autograd/ops.h"
#include "core/math.h"

namespace lowbit::quant {
namespace {
// sign with sign(0) = +1 (tensorpack's convention for binary weights).
Tensor sign_nonzero(const Tensor& x) { return math::sub(math::mul(math::ge(x, 0.0), 2.0), Tensor::ones({}, x.dtype())); }
}  // namespace

Variable round_ste(const Variable& x) {
  return make_result(math::round(x.data()), "round_ste", {x},
                     [](const Variable& g, const Variable&) { return std::vector<Variable>{g}; });
}

Variable floor_ste(const Variable& x) {
  return make_result(math::floor(x.data()), "floor_ste", {x},
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

}  // namespace lowbit::quant
