// Pooling layers on x [N, C, H, W] (PyTorch semantics, see autograd/ops_nn.h).
//   MaxPool2d / AvgPool2d(kernel, stride = kernel, padding = 0, ceil_mode = false) -> [N, C, P, Q];
//   AvgPool2d counts padding in the divisor by default (count_include_pad).
//   GlobalAvgPool2d: mean over H, W -> [N, C] (PyTorch's AdaptiveAvgPool2d(1) followed by flatten).
#pragma once

#include "autograd/ops_nn.h"
#include "layers/module.h"

namespace lowbit {

Pool2dOptions pool_options(int64_t kernel, int64_t stride = 0, int64_t padding = 0, bool ceil_mode = false);

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(Pool2dOptions opt) : opt_(opt) {}
  explicit MaxPool2d(int64_t kernel, int64_t stride = 0, int64_t padding = 0, bool ceil_mode = false)
      : opt_(pool_options(kernel, stride, padding, ceil_mode)) {}
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "MaxPool2d"; }
  std::string extra_repr() const override;
  const Pool2dOptions& options() const { return opt_; }

 private:
  Pool2dOptions opt_;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(Pool2dOptions opt) : opt_(opt) {}
  explicit AvgPool2d(int64_t kernel, int64_t stride = 0, int64_t padding = 0, bool ceil_mode = false)
      : opt_(pool_options(kernel, stride, padding, ceil_mode)) {}
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "AvgPool2d"; }
  std::string extra_repr() const override;
  const Pool2dOptions& options() const { return opt_; }

 private:
  Pool2dOptions opt_;
};

class GlobalAvgPool2d : public Module {
 public:
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "GlobalAvgPool2d"; }
};

}  // namespace lowbit
