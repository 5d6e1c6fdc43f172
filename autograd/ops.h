// Differentiable ops on Variables. Each family lives in one autograd/ops_<family>.cpp with its
// forward and backward side by side; backward functions are written with these same ops, so
// every op here supports gradients of gradients.
//
// Gradient convention: for y = f(x), backward receives dL/dy (shape of y) and returns dL/dx
// (shape of x); broadcasting inputs get the broadcast summed back (sum_to).
#pragma once

#include <vector>

#include "autograd/variable.h"

namespace lowbit {

// ---- elementwise (ops_elementwise.cpp) ----
Variable add(const Variable& a, const Variable& b);
Variable sub(const Variable& a, const Variable& b);
Variable mul(const Variable& a, const Variable& b);
Variable div(const Variable& a, const Variable& b);
Variable pow(const Variable& a, const Variable& b);      // a > 0 where b's gradient matters
Variable maximum(const Variable& a, const Variable& b);  // ties split the gradient equally
Variable minimum(const Variable& a, const Variable& b);
Variable where(const Tensor& cond, const Variable& a, const Variable& b);  // cond != 0 ? a : b
Variable add(const Variable& a, double s);
Variable mul(const Variable& a, double s);
Variable rsub(const Variable& a, double s);  // s - a
Variable rdiv(const Variable& a, double s);  // s / a
Variable pow(const Variable& a, double exponent);
Variable neg(const Variable& a);
Variable exp(const Variable& a);
Variable log(const Variable& a);
Variable sqrt(const Variable& a);
Variable abs(const Variable& a);   // d|x|/dx = sign(x), 0 at 0
Variable sign(const Variable& a);  // zero gradient
Variable sin(const Variable& a);
Variable cos(const Variable& a);
Variable tanh(const Variable& a);
Variable sigmoid(const Variable& a);
Variable relu(const Variable& a);  // gradient 0 at 0, as PyTorch
// relu(a + b) in one pass (the residual join of a ResNet block); gradient g * [a + b > 0] to both.
Variable add_relu(const Variable& a, const Variable& b);
Variable clamp(const Variable& a, double lo, double hi);  // gradient 1 on [lo, hi], as PyTorch
// a * mask for a constant mask (0/1 or any weights); gradient g * mask.
Variable mul_mask(const Variable& a, const Tensor& mask);

Variable operator+(const Variable& a, const Variable& b);
Variable operator-(const Variable& a, const Variable& b);
Variable operator*(const Variable& a, const Variable& b);
Variable operator/(const Variable& a, const Variable& b);
Variable operator-(const Variable& a);
Variable operator+(const Variable& a, double s);
Variable operator+(double s, const Variable& a);
Variable operator-(const Variable& a, double s);
Variable operator-(double s, const Variable& a);
Variable operator*(const Variable& a, double s);
Variable operator*(double s, const Variable& a);
Variable operator/(const Variable& a, double s);
Variable operator/(double s, const Variable& a);

// ---- reductions (ops_reduce.cpp) ----
Variable sum(const Variable& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Variable mean(const Variable& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Max over dims; the gradient is shared equally among tied maxima (torch.amax).
Variable amax(const Variable& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// max|a| over every element, a scalar: amax(abs(a)) in one pass with no |a| tensor (math::max_abs);
// gradient sign(a) at the largest |a| (ties split equally), 0 elsewhere.
Variable max_abs(const Variable& a);
Variable var(const Variable& a, const std::vector<int64_t>& dims = {}, bool unbiased = true, bool keepdim = false);
Variable sum_to(const Variable& a, const Shape& shape);

// ---- shape (ops_shape.cpp) ----
Variable reshape(const Variable& a, const Shape& shape);
Variable permute(const Variable& a, const std::vector<int64_t>& dims);
Variable transpose(const Variable& a, int64_t d0, int64_t d1);
Variable expand(const Variable& a, const Shape& shape);
Variable narrow(const Variable& a, int64_t dim, int64_t start, int64_t length);
Variable select(const Variable& a, int64_t dim, int64_t index);
Variable unsqueeze(const Variable& a, int64_t dim);
Variable squeeze(const Variable& a, int64_t dim);
Variable flatten(const Variable& a, int64_t start_dim = 1, int64_t end_dim = -1);
Variable contiguous(const Variable& a, MemoryFormat format = MemoryFormat::contiguous);
Variable cat(const std::vector<Variable>& parts, int64_t dim);
Variable stack(const std::vector<Variable>& parts, int64_t dim);
Variable pad(const Variable& a, const std::vector<int64_t>& pads, double value = 0);  // pads >= 0

// ---- linear algebra (ops_linalg.cpp) ----
Variable matmul(const Variable& a, const Variable& b);
// y = x W^T + b; x [.., in], W [out, in], b [out] or undefined.
Variable linear(const Variable& x, const Variable& weight, const Variable& bias = Variable());

// ---- softmax and losses (ops_loss.cpp) ----
Variable softmax(const Variable& a, int64_t dim);
Variable log_softmax(const Variable& a, int64_t dim);
enum class Reduction { mean, sum, none };
// logits [N, classes], target int32 [N] class indices.
Variable cross_entropy(const Variable& logits, const Tensor& target, Reduction reduction = Reduction::mean);
Variable nll_loss(const Variable& log_probs, const Tensor& target, Reduction reduction = Reduction::mean);
Variable mse_loss(const Variable& input, const Variable& target, Reduction reduction = Reduction::mean);

// ---- across data-parallel ranks (ops_distributed.cpp; core/distributed.h) ----
// The element-wise sum of a over every rank, on every rank (identity in one process). Its backward is
// the same sum of the incoming gradients; every rank must call it at the same point.
Variable all_reduce_sum(const Variable& a);

}  // namespace lowbit

#include "autograd/ops_nn.h"  // conv2d, pooling, batch_norm, dropout
