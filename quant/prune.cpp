// Partial-L2 pruning regularization and masks (spec methods.md §3.3); see prune.h.
#include "quant/prune.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "autograd/ops.h"
#include "core/error.h"
#include "core/math.h"
#include "quant/msqe.h"

namespace lowbit::quant {

double magnitude_threshold(const Tensor& x, double r) {
  LOWBIT_CHECK(x.numel() > 0, "magnitude_threshold: empty tensor");
  LOWBIT_CHECK(r >= 0 && r <= 1, "prune sparsity ", r, " must be in [0, 1]");
  std::vector<double> a = math::abs(x).to_vector();
  const size_t k = static_cast<size_t>(std::floor(r * double(a.size())));
  if (k >= a.size()) return std::numeric_limits<double>::infinity();
  std::nth_element(a.begin(), a.begin() + std::ptrdiff_t(k), a.end());
  return a[k];
}

Tensor prune_mask(const Tensor& w, double r) {
  const double t = magnitude_threshold(w, r);
  const Tensor a = math::abs(w);
  return math::mul(math::ge(a, std::isfinite(t) ? t : std::numeric_limits<double>::max()), math::gt(a, 0.0));
}

Variable partial_l2_penalty(const std::vector<Variable>& weights, const std::vector<double>& sparsities) {
  LOWBIT_CHECK(!weights.empty() && weights.size() == sparsities.size(), "partial_l2_penalty: ", weights.size(),
               " weight tensors, ", sparsities.size(), " sparsities");
  Variable total;
  int64_t n = 0;
  for (size_t l = 0; l < weights.size(); ++l) {
    const Tensor& w = weights[l].data();
    const double t = magnitude_threshold(w, sparsities[l]);  // re-estimated at every call (§3.3 [U])
    const Tensor below = std::isfinite(t) ? math::lt(math::abs(w), t) : Tensor::full(w.shape(), 1.0, w.dtype());
    const Variable m = mul(weights[l], Variable(below));
    const Variable s = sum(mul(m, m));
    total = total.defined() ? add(total, s) : s;
    n += w.numel();
  }
  return mul(total, 1.0 / double(std::max<int64_t>(n, 1)));
}

PartialL2Regularizer::PartialL2Regularizer(std::vector<Variable> weights, std::vector<double> sparsities,
                                           Variable log_beta, double lambda)
    : weights_(std::move(weights)), sparsities_(std::move(sparsities)), b_(std::move(log_beta)), lambda_(lambda) {
  LOWBIT_CHECK(weights_.size() == sparsities_.size(), "PartialL2Regularizer: ", weights_.size(), " weights but ",
               sparsities_.size(), " sparsities");
  LOWBIT_CHECK(lambda_ > 0, "--prune-lambda ", lambda_, " must be > 0");
}

Variable PartialL2Regularizer::loss(const optim::ParamGroup& group, int64_t) {
  lr_ = group.lr;
  if (weights_.empty() || stopped_) return Variable();
  return msqe_coefficient_term(partial_l2_penalty(weights_, sparsities_), b_, lambda_);  // β P − λ log β
}

double PartialL2Regularizer::penalty() const {
  if (weights_.empty()) return 0;
  NoGradGuard ng;
  return partial_l2_penalty(weights_, sparsities_).item();
}

void PartialL2Regularizer::project_coefficient() { quant::project_coefficient(b_, weights_, lr_); }

double PartialL2Regularizer::beta() const { return std::exp(b_.item()); }

}  // namespace lowbit::quant
