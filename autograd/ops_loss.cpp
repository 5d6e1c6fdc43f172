// Softmax family and losses. log_softmax is a primitive (stable forward, backward
// g - softmax * sum(g)); the losses are composed from primitives so their gradients follow.
#include "autograd/ops.h"
#include "core/math.h"

namespace lowbit {

Variable softmax(const Variable& a, int64_t dim) {
  dim = wrap_dim(dim, a.dim(), "softmax");
  return make_result(
      math::softmax(a.data(), dim), "softmax", {a},
      [dim](const Variable& g, const Variable& out) {
        // dx = s * (g - sum(g * s))
        return std::vector<Variable>{mul(out, sub(g, sum(mul(g, out), {dim}, true)))};
      },
      true);
}

Variable log_softmax(const Variable& a, int64_t dim) {
  dim = wrap_dim(dim, a.dim(), "log_softmax");
  return make_result(
      math::log_softmax(a.data(), dim), "log_softmax", {a},
      [dim](const Variable& g, const Variable& out) {
        // dx = g - exp(out) * sum(g)
        return std::vector<Variable>{sub(g, mul(exp(out), sum(g, {dim}, true)))};
      },
      true);
}

namespace {
Variable reduce_loss(const Variable& per_item, Reduction r) {
  switch (r) {
    case Reduction::mean: return mean(per_item);
    case Reduction::sum: return sum(per_item);
    case Reduction::none: return per_item;
  }
  return per_item;
}
}  // namespace

Variable nll_loss(const Variable& log_probs, const Tensor& target, Reduction reduction) {
  LOWBIT_CHECK(log_probs.dim() == 2, "nll_loss: expected log-probabilities [N, classes], got ",
               shape_str(log_probs.shape()));
  const int64_t N = log_probs.size(0), classes = log_probs.size(1);
  LOWBIT_CHECK(target.dim() == 1 && target.size(0) == N, "nll_loss: target of shape ", shape_str(target.shape()),
               " for input ", shape_str(log_probs.shape()));
  // One-hot selection (constant), so the gradient is -onehot * g.
  Tensor onehot = Tensor::zeros({N, classes}, log_probs.dtype());
  const Tensor t = target.to(DType::i32).contiguous();
  const int32_t* pt = t.data<int32_t>();
  LOWBIT_DISPATCH_FLOAT(log_probs.dtype(), "nll_loss", [&] {
    scalar_t* po = onehot.data<scalar_t>();
    for (int64_t i = 0; i < N; ++i) {
      LOWBIT_CHECK(pt[i] >= 0 && pt[i] < classes, "nll_loss: target ", pt[i], " at position ", i, " is outside [0, ",
                   classes, ")");
      po[i * classes + pt[i]] = 1;
    }
  });
  return reduce_loss(neg(sum(mul_mask(log_probs, onehot), {1})), reduction);
}

Variable cross_entropy(const Variable& logits, const Tensor& target, Reduction reduction) {
  LOWBIT_CHECK(logits.dim() == 2, "cross_entropy: expected logits [N, classes], got ", shape_str(logits.shape()));
  return nll_loss(log_softmax(logits, 1), target, reduction);
}

Variable mse_loss(const Variable& input, const Variable& target, Reduction reduction) {
  LOWBIT_CHECK(input.shape() == target.shape(), "mse_loss: input ", shape_str(input.shape()), " and target ",
               shape_str(target.shape()), " differ");
  const Variable d = sub(input, target);
  return reduce_loss(mul(d, d), reduction);
}

}  // namespace lowbit
