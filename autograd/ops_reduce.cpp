// Reductions. Backward expands the gradient back over the reduced dims.
#include "autograd/ops.h"
#include "core/math.h"

namespace lowbit {
namespace {

// Shape of the result with the reduced dims kept as size 1.
Shape keepdim_shape(const Shape& in, const std::vector<int64_t>& dims) {
  Shape s = in;
  if (dims.empty()) {
    for (auto& d : s) d = 1;
    return s;
  }
  for (int64_t d : dims) s[wrap_dim(d, static_cast<int64_t>(in.size()), "reduce")] = 1;
  return s;
}

int64_t count_reduced(const Shape& in, const std::vector<int64_t>& dims) {
  return shape_numel(in) / std::max<int64_t>(1, shape_numel(keepdim_shape(in, dims)));
}

}  // namespace

Variable sum(const Variable& a, const std::vector<int64_t>& dims, bool keepdim) {
  const Shape in_shape = a.shape();
  return make_result(math::sum(a.data(), dims, keepdim), "sum", {a},
                     [in_shape, dims](const Variable& g, const Variable&) {
                       return std::vector<Variable>{expand(reshape(g, keepdim_shape(in_shape, dims)), in_shape)};
                     });
}

Variable mean(const Variable& a, const std::vector<int64_t>& dims, bool keepdim) {
  const Shape in_shape = a.shape();
  const double n = static_cast<double>(count_reduced(in_shape, dims));
  return make_result(
      math::mean(a.data(), dims, keepdim), "mean", {a}, [in_shape, dims, n](const Variable& g, const Variable&) {
        return std::vector<Variable>{expand(reshape(mul(g, 1.0 / n), keepdim_shape(in_shape, dims)), in_shape)};
      });
}

Variable amax(const Variable& a, const std::vector<int64_t>& dims, bool keepdim) {
  const Shape in_shape = a.shape();
  return make_result(
      math::amax(a.data(), dims, keepdim), "amax", {a},
      [a, in_shape, dims](const Variable& g, const Variable& out) {
        const Shape ks = keepdim_shape(in_shape, dims);
        // Equal share among tied maxima.
        const Tensor hit = math::eq(a.data(), out.data().reshape(ks));
        const Tensor share = math::div(hit, math::sum(hit, dims, true));
        return std::vector<Variable>{mul_mask(expand(reshape(g, ks), in_shape), share)};
      },
      true);
}

Variable max_abs(const Variable& a) {
  const double m = math::max_abs(a.data());
  return make_result(Tensor::full({}, m, a.dtype()), "max_abs", {a}, [a, m](const Variable& g, const Variable&) {
    // Recorded (higher derivatives): g times a constant (the share is piecewise constant in a).
    if (GradMode::enabled()) return std::vector<Variable>{mul(g, Variable(math::max_abs_grad(a.data(), m, 1.0)))};
    return std::vector<Variable>{Variable(math::max_abs_grad(a.data(), m, g.item()))};
  });
}

// Composite: mean of squared deviations, so gradients (and their gradients) follow.
Variable var(const Variable& a, const std::vector<int64_t>& dims, bool unbiased, bool keepdim) {
  const int64_t n = count_reduced(a.shape(), dims);
  LOWBIT_CHECK(n > (unbiased ? 1 : 0), "var: too few elements in shape ", shape_str(a.shape()));
  const Variable centered = sub(a, mean(a, dims, true));
  return mul(sum(mul(centered, centered), dims, keepdim), 1.0 / double(unbiased ? n - 1 : n));
}

Variable sum_to(const Variable& a, const Shape& shape) {
  if (a.shape() == shape) return a;
  const Shape in_shape = a.shape();
  return make_result(math::sum_to(a.data(), shape), "sum_to", {a}, [in_shape](const Variable& g, const Variable&) {
    return std::vector<Variable>{expand(g, in_shape)};
  });
}

}  // namespace lowbit
