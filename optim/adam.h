// Adam and AdamW, PyTorch semantics (torch.optim.Adam / AdamW, single-tensor path):
//   t = t + 1 (per parameter)
//   Adam:  g = g + weight_decay * p          (L2 penalty through the gradient)
//   AdamW: p = p * (1 - lr * weight_decay)   (decoupled decay, Loshchilov & Hutter)
//   m = m + (1 - beta1) * (g - m);   v = beta2 * v + (1 - beta2) * g^2
//   amsgrad: v_max = max(v_max, v), used for v below
//   p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// Per-parameter buffers: "exp_avg", "exp_avg_sq", "max_exp_avg_sq" (amsgrad only) and the
// per-parameter step t. Arithmetic runs in the parameter's dtype; bias corrections in double.
// The float32 update uses an AVX-512 loop when compiled with AVX-512 and kernels::avx512_enabled()
// (core/kernels/cpu.h; set_avx512_enabled(false) forces the portable loop, bit-identical).
#pragma once

#include "optim/optimizer.h"

namespace lowbit::optim {

class Adam : public Optimizer {
 public:
  explicit Adam(std::vector<ParamGroup> groups);
  std::string name() const override { return decoupled_ ? "AdamW" : "Adam"; }

 protected:
  Adam(std::vector<ParamGroup> groups, bool decoupled_weight_decay);
  void check_group(const ParamGroup& group) const override;
  void update(const ParamGroup& group, Variable& param, const Tensor& grad, ParamState& state) override;
  std::vector<std::string> buffer_names() const override { return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}; }

 private:
  bool decoupled_ = false;
};

class AdamW : public Adam {
 public:
  explicit AdamW(std::vector<ParamGroup> groups);
};

}  // namespace lowbit::optim
