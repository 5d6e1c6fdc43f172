// MobileNet-V2 inverted residual block (Sandler et al. 2018), torchvision layout:
//   conv = Sequential([ConvBNReLU6(in, hidden, 1x1) if expand_ratio != 1], ConvBNReLU6(hidden, hidden, 3x3/stride,
//          groups = hidden), Conv2d(hidden, out, 1x1, no bias), BatchNorm2d(out));
//   y = out(x + conv(x)) when stride == 1 and in == out, else out(conv(x)); `out` is a StreamPoint (an
//   identity where quant/ puts the signed activation quantizer of the residual stream; no parameters
//   in a float model, so the state dict is torchvision's).
#pragma once

#include <memory>

#include "core/random.h"
#include "layers/layers.h"

namespace lowbit::models {

// Sequential(Conv2d(k x k, stride, pad (k-1)/2, groups, no bias), BatchNorm2d, ReLU6 or ReLU) named 0, 1, 2.
std::shared_ptr<Sequential> conv_bn_act(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups,
                                        bool relu6, Generator& gen);

class InvertedResidual : public Module {
 public:
  InvertedResidual(int64_t in_channels, int64_t out_channels, int64_t stride, int64_t expand_ratio, Generator& gen);
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "InvertedResidual"; }
  std::string extra_repr() const override;
  bool uses_residual() const { return use_res_; }

 private:
  int64_t in_, out_, stride_, expand_;
  bool use_res_;
  std::shared_ptr<Sequential> conv_;
  std::shared_ptr<StreamPoint> stream_;  // child "out"
};

// torchvision's _make_divisible: round v to the nearest multiple of `divisor` (at least min_value, default
// divisor), never going down by more than 10%.
int64_t make_divisible(double v, int64_t divisor = 8, int64_t min_value = 0);

}  // namespace lowbit::models
