// Tensor math without gradients: the functional layer between Tensor and the kernels. Autograd
// ops (autograd/ops_*.cpp) call these for their forward and backward passes.
//
// Conventions
//   - Math ops take floating tensors (float32/float64); operands of one op share a dtype.
//   - Binary ops broadcast (NumPy rules). The result is row-major contiguous, except that when all
//     operands share one shape and one dense layout (e.g. channels-last) the result keeps it.
//   - Comparisons return 0/1 in the operands' dtype (masks multiply straight into gradients).
//   - Reductions take a list of dims (empty = all) and keepdim; float sums accumulate in double.
//     Results do not depend on the thread count.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace lowbit::math {

// ---- binary, broadcasting ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, const Tensor& b);
// cond != 0 ? a : b, all three broadcast together; cond may be any dtype.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

// ---- with a scalar ----
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor rsub(const Tensor& a, double s);  // s - a
Tensor rdiv(const Tensor& a, double s);  // s / a
Tensor pow(const Tensor& a, double exponent);
Tensor gt(const Tensor& a, double s);
Tensor lt(const Tensor& a, double s);
Tensor ge(const Tensor& a, double s);
Tensor le(const Tensor& a, double s);
Tensor clamp(const Tensor& a, double lo, double hi);

// ---- unary ----
Tensor neg(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor abs(const Tensor& a);
Tensor sign(const Tensor& a);
Tensor sin(const Tensor& a);
Tensor cos(const Tensor& a);
Tensor tanh(const Tensor& a);
Tensor sigmoid(const Tensor& a);
Tensor relu(const Tensor& a);
Tensor add_relu(const Tensor& a, const Tensor& b);  // relu(a + b) in one pass (broadcasting as add)
Tensor floor(const Tensor& a);
Tensor round(const Tensor& a);  // half to even, like torch.round

// ---- in place ----
void add_(Tensor& dst, const Tensor& src, double alpha = 1);  // dst += alpha * src (src broadcasts)
void mul_(Tensor& dst, double s);

// ---- reductions ----
Tensor sum(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor amax(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor amin(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor var(const Tensor& a, const std::vector<int64_t>& dims = {}, bool unbiased = true, bool keepdim = false);
Tensor argmax(const Tensor& a, int64_t dim, bool keepdim = false);  // int32 indices
// Whether every element is finite (no NaN, no +-inf); true for an empty tensor. One pass, no copy
// for dense tensors.
bool all_finite(const Tensor& a);
// max |a| over every element in one pass over a's memory (no |a| tensor; any dense layout): NaN if
// a holds a NaN, 0 for an empty tensor. The gradient of the op max_abs (autograd/ops.h):
// max_abs_grad(a, m, scale) = scale * sign(a) / k where |a| == m (k such elements), 0 elsewhere, laid
// out as a (dense) or row-major. _ref: amax(abs(a)) and its composed gradient (tests pin them).
double max_abs(const Tensor& a);
Tensor max_abs_grad(const Tensor& a, double m, double scale);
double max_abs_ref(const Tensor& a);
Tensor max_abs_grad_ref(const Tensor& a, double m, double scale);
// Sums a broadcast result back to `shape` (the gradient of expand).
Tensor sum_to(const Tensor& a, const Shape& shape);

// ---- linear algebra ----
// PyTorch matmul semantics: 1-d operands are promoted, batch dims broadcast. Transposed views
// are passed to GEMM as transposes, not copied.
Tensor matmul(const Tensor& a, const Tensor& b);

// ---- structure ----
Tensor cat(const std::vector<Tensor>& parts, int64_t dim);
Tensor stack(const std::vector<Tensor>& parts, int64_t dim);
// pads = {last_lo, last_hi, second_last_lo, second_last_hi, ...} as torch.nn.functional.pad;
// negative pads crop. A channels-last 4-d input gives a channels-last result (else row-major), so
// the zero-padding shortcut of a ResNet keeps the activations' layout.
Tensor pad(const Tensor& a, const std::vector<int64_t>& pads, double value = 0);

// ---- softmax family (numerically stable, along one dim) ----
Tensor softmax(const Tensor& a, int64_t dim);
Tensor log_softmax(const Tensor& a, int64_t dim);

}  // namespace lowbit::math
