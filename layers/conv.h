// Conv2d: x [N, C, H, W] -> [N, K, P, Q] with weight [K, C/groups, R, S] and bias [K] (optional);
// stride/padding/dilation/groups as autograd/ops_nn.h's Conv2dOptions (PyTorch semantics; output
// channels-last in memory). The weight used is weight_hook(weight) when a hook is set (quant/ installs
// weight quantizers here), else weight; gradients flow through the hook. Default init as PyTorch.
#pragma once

#include <array>

#include "autograd/ops_nn.h"
#include "core/random.h"
#include "layers/module.h"

namespace lowbit {

// Convenience builder: conv_options(stride, padding, groups, dilation), square.
Conv2dOptions conv_options(int64_t stride = 1, int64_t padding = 0, int64_t groups = 1, int64_t dilation = 1);

class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, std::array<int64_t, 2> kernel, const Conv2dOptions& opt = {},
         bool bias = true, Generator& gen = default_generator());
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, const Conv2dOptions& opt = {}, bool bias = true,
         Generator& gen = default_generator());

  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "Conv2d"; }
  std::string extra_repr() const override;

  int64_t in_channels() const { return in_; }
  int64_t out_channels() const { return out_; }
  std::array<int64_t, 2> kernel_size() const { return kernel_; }
  const Conv2dOptions& options() const { return opt_; }
  int64_t groups() const { return opt_.groups; }
  bool has_bias() const { return has_bias_; }
  bool is_depthwise() const { return opt_.groups == in_ && opt_.groups > 1; }
  Variable& weight() { return param("weight"); }
  Variable bias() const { return has_bias_ ? bias_ : Variable(); }

  void set_weight_hook(VariableTransform hook) { weight_hook_ = std::move(hook); }
  const VariableTransform& weight_hook() const { return weight_hook_; }
  Variable effective_weight();  // the weight after the hook
  void reset_parameters(Generator& gen = default_generator());

 private:
  void init(Generator& gen);
  int64_t in_, out_;
  std::array<int64_t, 2> kernel_;
  Conv2dOptions opt_;
  bool has_bias_;
  Variable weight_, bias_;
  VariableTransform weight_hook_;
};

}  // namespace lowbit
