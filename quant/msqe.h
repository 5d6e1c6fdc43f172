// Choi, El-Khamy, Lee (arXiv 1809.00095): uniform quantizers with a learned cell size per layer
// (spec methods.md §3.1) and the mean-squared quantization error (MSQE) regularizer with its
// learnable coefficient (§3.2). Every detail of §3 is [U] (no paper body, no code); where the spec
// recommends a choice it is implemented and named here.
//
// Codes. For a cell size d > 0 and bits n (weights: signed, sign bit included, convention 1),
//   n = 1 (binary):   r = sign(w), sign(0) = +1                          Q = d r
//   n = 2 (ternary):  r = clip(round(w / d), -1, 1)                      Q = d r
//   n >= 3:           r = clip(round(w / d), -2^(n-1), 2^(n-1) - 1)      Q = d r
//   unsigned (activations after ReLU, m >= 1 bits): r = clip(round(x / d), 0, 2^m - 1)
// round is half to even (torch.round). Shapes: x any shape, d a one-element Variable (shape {} or
// {1}) of x's dtype; the result has x's shape.
//
// Gradient convention (§3.1 "STE for round, as LSQ but without LSQ's gradient scaling"; §3.2's
// "r treated as constant"):
//   dQ/dx = 1[lo <= x / d <= hi]   (the STE through round, zero where the clip is active; binary:
//                                   1[|x / d| <= 1], the hardtanh STE on x / d)
//   dQ/dd = r                      (r held constant: ∂E/∂δ = Σ (∂E/∂q) r, §3.2)
// Built from primitive ops (a constant r times d, plus a straight-through term carrying the mask to
// x), so second derivatives are defined (zero through r).
#pragma once

#include <memory>
#include <vector>

#include "autograd/variable.h"
#include "optim/regularizer.h"

namespace lowbit::quant {

// The codes r above as a tensor of x's dtype (no gradient). signed_ = false: activations.
Tensor msqe_codes(const Tensor& x, double d, int bits, bool signed_ = true);

// Q(x; d) = d r with the surrogate gradients above. Choi et al. §3.1. Runs as quant::step_quantize
// (StepGradient::codes) but for binary weights (r = sign x, composed).
Variable msqe_quantize(const Variable& x, const Variable& d, int bits, bool signed_ = true);

// The MSQE-optimal cell size of x at `bits` (spec §3.2 suggests "from an MSQE-optimal uniform
// quantizer of the pre-trained weights"; the method is [U], this is our choice): a 1-d Lloyd
// search: the best of 40 evenly spaced d in (0, d0], d0 = max|x| / (2^(n-1) - 1) (signed; ternary
// max|x|) or max x / (2^m - 1) (unsigned), then Lloyd iterations alternating the optimal codes for
// d (r = the rounding above) and the optimal d for those codes (d = Σ x r / Σ r²); each half-step
// cannot raise Σ (x - Q(x; d))², so it ends at a fixed point (at most `iterations`, or when d
// no longer changes) no worse than the scan. Binary: d = mean|x| (the exact optimum for
// r = sign x). An all-zero x gives 1 (any d is optimal).
double msqe_init_delta(const Tensor& x, int bits, bool signed_ = true, int iterations = 200);

// R(W; δ) = (1/N) Σ_l Σ_i (w_li - δ_l r_li)², N = Σ_l numel(W_l), r_li = msqe_codes(w_l, δ_l, bits_l)
// held constant (Choi et al. §3.2). A one-element Variable (shape {}) of the weights' dtype.
// Gradients [D]: ∂R/∂w_li = (2/N)(w_li - Q(w_li)), ∂R/∂δ_l = -(2/N) Σ_i (w_li - Q(w_li)) r_li.
// The layers may have any shapes; deltas[l] is one-element, bits[l] >= 1.
Variable msqe_penalty(const std::vector<Variable>& weights, const std::vector<Variable>& deltas,
                      const std::vector<int>& bits);

// The learnable-coefficient term α R - λ log α with α = exp(a) (spec choice of §3.2), i.e.
// exp(a) R - λ a: ∂/∂a = α R - λ, ∂/∂R = α. a is a one-element Variable; the result has shape {}.
Variable msqe_coefficient_term(const Variable& r, const Variable& a, double lambda);

// The learnable coefficient's stability bound (our choice; the spec is silent). The term's curvature on
// a weight is 2 exp(a) / N (N weights in R), and gradient descent at step lr overshoots once
// lr 2 exp(a) / N > 1 (and diverges, with momentum, past 2 (1 + momentum)). Since a = log α chases
// λ / R, which grows without bound as R -> 0, the regularizers project a onto a <= log(N / (2 lr))
// after every step: the strongest pull that moves a weight to its target in one step without
// overshoot. (Without it, LeNet-5 partial-L2 at lr 0.01: β swung between 6e-7 and 4e3 within epochs 2-5
// and the net fell to 11 %.) Returns that bound; lr > 0.
double coefficient_cap(int64_t n, double lr);
// a := min(a, coefficient_cap(N, lr)) in place, N the weights' total count (lr <= 0: unchanged). a is a
// one-element leaf.
void project_coefficient(Variable& a, const std::vector<Variable>& weights, double lr);

// C's regularizer part, exp(a) R(W; δ) - λ a, as an optimizer-level regularizer (attached to the
// weights group; δ lives in the "quantizer" group, a in a group of its own, and both receive their
// gradients through this loss). bits are read from the layers' bit cells at every call.
class MsqeRegularizer : public optim::Regularizer {
 public:
  MsqeRegularizer(std::vector<Variable> weights, std::vector<Variable> deltas, std::vector<std::shared_ptr<int>> bits,
                  Variable log_alpha, double lambda);
  std::string name() const override { return "msqe"; }
  Variable loss(const optim::ParamGroup& group, int64_t step) override;
  // R(W; δ) at the current weights (no graph).
  double penalty() const;
  double alpha() const;
  const Variable& log_alpha() const { return a_; }
  double lambda() const { return lambda_; }
  // After an optimizer step: a projected onto the stability bound above, at the weights group's lr
  // of the last loss() call.
  void project_coefficient();

 private:
  std::vector<Variable> weights_, deltas_;
  std::vector<std::shared_ptr<int>> bits_;
  Variable a_;
  double lambda_;
  double lr_ = 0;  // the weights group's lr at the last loss()
  std::vector<int> current_bits() const;
};

}  // namespace lowbit::quant
