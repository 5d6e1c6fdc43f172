// Memory budgets of Uhlich et al. (spec methods.md §6.4) as a penalty on the quantizers' learned
// parameters: the network's weight memory and its activation memory (the largest feature map, or
// their sum), in kB at each layer's inferred bitwidth, pushed under a target by squared hinges
//
//   penalty = lambda_w max(0, S_w - S_w0)^2 + lambda_a max(0, S_a - S_a0)^2             (8a), (8b)/(8c)
//   S_w = sum_l b_l #params_l / 8 / 1024       (#params: weight + bias, as the official code counts)
//   S_a = max_l (or sum_l) b_l #features_l / 8 / 1024   (#features: one sample's activation count)
//
// b_l is a layer's bitwidth as a differentiable scalar (QuantMethod::bits_variable: U3's
// ceil(log2(q'/d' + 1) + 1), P3's ceil(log2(log2(q_max'/q_min') + 1) + 1), with identity STEs for
// round and ceil, §6.3 [O]), so the gradient of the penalty reaches the learned parameters; layers without one count
// their fixed bits (32 for full precision) with no gradient. sizes() evaluates both totals without a graph (reports).
//
// Use: attached as an optim::Regularizer to the "quantizer" group (train::QuantContext does it for
// --weight-budget-kb / --act-budget-kb); the fit loop adds loss() to the task loss. A quantized
// activation's #features is recorded by its hook at the first forward pass (QuantizedActivation::
// features), which the fit loop runs before it asks for the loss.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "optim/regularizer.h"
#include "quant/qconfig.h"

namespace lowbit::quant {

enum class ActivationBudget { max, sum };  // (8c) the largest feature map, (8b) all of them

struct BudgetOptions {
  double weight_kb = 0;  // S_w0; <= 0: no weight budget
  double act_kb = 0;     // S_a0; <= 0: no activation budget
  ActivationBudget act = ActivationBudget::max;
  double lambda_w = 0.1, lambda_a = 0.1;  // §6.4: 0.1 for both on CIFAR-10 (sizes in kB)
};

// "max" | "sum"; throws naming --act-budget otherwise.
ActivationBudget parse_activation_budget(const std::string& s);

// U3's inferred bitwidth as a differentiable scalar, composed as the official network_size_*:
//   d' = 2^round(log2 d), q' = round(q_max / d') d',
//   b = max(ceil(log2(q'/d' + 1) + 1), 2) signed,  max(ceil(log2(q'/d' + 1)), 1) unsigned,
// round and ceil with identity STEs (its value is u3_bits(d, q_max, signed_)).
Variable u3_bits_variable(const Variable& d, const Variable& q_max, bool signed_);
// P3's, likewise: q_min' = 2^round(log2 q_min), q_max' = 2^round(log2 q_max),
//   b = max(ceil(log2(log2(q_max'/q_min') + 1) + 1), 2 signed | 1 unsigned)   (its value p3_bits).
Variable p3_bits_variable(const Variable& q_min, const Variable& q_max, bool signed_);

struct MemorySizes {
  double weight_kb = 0, act_kb = 0;  // S_w and S_a (max or sum as the options say)
  int64_t weights = 0;               // parameters counted
  bool act_known = false;            // every quantized activation has run once
};

class MemoryBudget : public optim::Regularizer {
 public:
  // Layers and activations of `q` (the pointers must outlive the budget); throws when a budget is
  // set that nothing can move (no layer/activation with a bits_variable) or lambda < 0.
  MemoryBudget(const Quantization& q, const BudgetOptions& options);
  std::string name() const override { return "memory_budget"; }
  Variable loss(const optim::ParamGroup& group, int64_t step) override;
  MemorySizes sizes() const;
  const BudgetOptions& options() const { return opt_; }

 private:
  const Quantization& q_;
  BudgetOptions opt_;
  Variable bits_of_layer(size_t i) const;
  Variable bits_of_activation(size_t i) const;
};

}  // namespace lowbit::quant
