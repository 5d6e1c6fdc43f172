// Matrix products. matmul backward: dA = g B^T, dB = A^T g (batch broadcast summed back).
#include "autograd/ops.h"
#include "core/math.h"

namespace lowbit {

Variable matmul(const Variable& a, const Variable& b) {
  LOWBIT_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: 0-d operand, shapes ", shape_str(a.shape()), " and ",
               shape_str(b.shape()));
  // Vectors become matrices here so the backward below deals with matrices only.
  if (a.dim() == 1) return squeeze(matmul(unsqueeze(a, 0), b), -2);
  if (b.dim() == 1) return squeeze(matmul(a, unsqueeze(b, 1)), -1);
  return make_result(math::matmul(a.data(), b.data()), "matmul", {a, b}, [a, b](const Variable& g, const Variable&) {
    return std::vector<Variable>{a.requires_grad() ? sum_to(matmul(g, transpose(b, -1, -2)), a.shape()) : Variable(),
                                 b.requires_grad() ? sum_to(matmul(transpose(a, -1, -2), g), b.shape()) : Variable()};
  });
}

Variable linear(const Variable& x, const Variable& weight, const Variable& bias) {
  LOWBIT_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1), "linear: input ",
               shape_str(x.shape()), " does not match weight ", shape_str(weight.shape()), " ([out, in])");
  Variable y = matmul(x, transpose(weight, 0, 1));
  if (bias.defined()) {
    LOWBIT_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "linear: bias ", shape_str(bias.shape()),
                 " does not match weight ", shape_str(weight.shape()));
    y = add(y, bias);
  }
  return y;
}

}  // namespace lowbit
