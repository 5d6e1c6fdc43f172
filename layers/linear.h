// Linear: y = x W_eff^T + b for x [..., in] -> [..., out]; W [out, in], b [out] (optional).
// W_eff = weight_hook(W) when a hook is set (quant/ installs weight quantizers here), else W; gradients
// flow through the hook to W. Default init as PyTorch (layers/init.h).
#pragma once

#include "core/random.h"
#include "layers/module.h"

namespace lowbit {

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator& gen = default_generator());

  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "Linear"; }
  std::string extra_repr() const override;

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  bool has_bias() const { return has_bias_; }
  Variable& weight() { return param("weight"); }
  Variable bias() const { return has_bias_ ? bias_ : Variable(); }

  void set_weight_hook(VariableTransform hook) { weight_hook_ = std::move(hook); }
  const VariableTransform& weight_hook() const { return weight_hook_; }
  Variable effective_weight();  // the weight after the hook
  void reset_parameters(Generator& gen = default_generator());

 private:
  int64_t in_, out_;
  bool has_bias_;
  Variable weight_, bias_;
  VariableTransform weight_hook_;
};

}  // namespace lowbit
