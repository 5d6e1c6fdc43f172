// Choi et al.'s partial-L2 regularization for pruning (spec methods.md §3.3, all [U]) with the
// learnable coefficient of §3.2, and the masks that keep pruned weights at zero.
//
//   P(W; r) = (1/N) Σ_l Σ_i w_li² 1[|w_li| < θ_l],   θ_l = the r_l-th quantile of |W_l|
//
// θ_l is per layer (our choice; the spec leaves per-layer or global open) and re-estimated from the
// current weights at every call, i.e. every step (our choice): the smallest |w| such that at least
// a share r_l of the layer's weights lie below or at it, i.e. sorted |w| at index floor(r_l n)
// (r_l = 0: nothing is penalized; r_l = 1: everything). The indicator is held constant, so
// ∂P/∂w_li = (2/N) w_li 1[|w_li| < θ_l]. N counts the weights of every layer given.
#pragma once

#include <memory>
#include <vector>

#include "autograd/variable.h"
#include "optim/regularizer.h"

namespace lowbit::quant {

// θ for a share r in [0, 1] of the weights (above). x: any shape, not empty.
double magnitude_threshold(const Tensor& x, double r);
// 1 where a weight is kept (|w| >= θ and w != 0), 0 where it is pruned; w's shape and dtype.
Tensor prune_mask(const Tensor& w, double r);

// P(W; r) above as a one-element Variable (shape {}); sparsities[l] in [0, 1].
Variable partial_l2_penalty(const std::vector<Variable>& weights, const std::vector<double>& sparsities);

// exp(b) P - λ b (β = exp(b), the same learnable-coefficient term as MSQE's, §3.3), attached to the
// weights group; b is a one-element parameter of its own group.
class PartialL2Regularizer : public optim::Regularizer {
 public:
  PartialL2Regularizer(std::vector<Variable> weights, std::vector<double> sparsities, Variable log_beta, double lambda);
  std::string name() const override { return "partial-l2"; }
  Variable loss(const optim::ParamGroup& group, int64_t step) override;
  double penalty() const;  // P at the current weights
  double beta() const;
  const Variable& log_beta() const { return b_; }
  const std::vector<Variable>& weights() const { return weights_; }
  const std::vector<double>& sparsities() const { return sparsities_; }
  // Stops the penalty (after the weights are pruned: P is then 0 up to the kept weights' ties).
  void stop() { stopped_ = true; }
  // After an optimizer step: b projected onto quant/msqe.h's coefficient_cap at the weights group's lr.
  void project_coefficient();

 private:
  std::vector<Variable> weights_;
  std::vector<double> sparsities_;
  Variable b_;
  double lambda_;
  double lr_ = 0;  // the weights group's lr at the last loss()
  bool stopped_ = false;
};

}  // namespace lowbit::quant
