#include "layers/conv.h"

#include "autograd/ops.h"
#include "layers/init.h"

namespace lowbit {

Conv2dOptions conv_options(int64_t stride, int64_t padding, int64_t groups, int64_t dilation) {
  Conv2dOptions o;
  o.stride = {stride, stride};
  o.padding = {padding, padding};
  o.dilation = {dilation, dilation};
  o.groups = groups;
  return o;
}

// Two constructors sharing init(): g++ 12.2's SLP vectorizer with AVX-512 (-O2 -march=native) miscompiled a
// delegating constructor forwarding a by-value Conv2dOptions (make_shared, int kernel: padding came out {1, 0});
// -fno-tree-slp-vectorize or clang gave the right result. tests/test_layers.cpp guards it.
Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, std::array<int64_t, 2> kernel, const Conv2dOptions& opt,
               bool bias, Generator& gen)
    : in_(in_channels), out_(out_channels), kernel_(kernel), opt_(opt), has_bias_(bias) {
  init(gen);
}

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, const Conv2dOptions& opt, bool bias,
               Generator& gen)
    : in_(in_channels), out_(out_channels), kernel_{kernel, kernel}, opt_(opt), has_bias_(bias) {
  init(gen);
}

void Conv2d::init(Generator& gen) {
  LOWBIT_CHECK(in_ > 0 && out_ > 0 && kernel_[0] > 0 && kernel_[1] > 0,
               "Conv2d: channels and kernel must be positive, got ", in_, " -> ", out_, ", kernel ", kernel_[0], "x",
               kernel_[1]);
  LOWBIT_CHECK(opt_.groups > 0 && in_ % opt_.groups == 0 && out_ % opt_.groups == 0, "Conv2d: groups=", opt_.groups,
               " must divide in_channels=", in_, " and out_channels=", out_);
  weight_ = register_parameter("weight", Tensor::empty({out_, in_ / opt_.groups, kernel_[0], kernel_[1]}));
  if (has_bias_) bias_ = register_parameter("bias", Tensor::empty({out_}));
  reset_parameters(gen);
}

void Conv2d::reset_parameters(Generator& gen) {
  Tensor w = weight_.data(), b = has_bias_ ? bias_.data() : Tensor();
  init::default_layer_init_(w, has_bias_ ? &b : nullptr, gen);
}

Variable Conv2d::effective_weight() { return weight_hook_ ? weight_hook_(weight_) : weight_; }

Variable Conv2d::forward(const Variable& x) {
  LOWBIT_CHECK(x.dim() == 4 && x.size(1) == in_, "Conv2d::forward: expected input [N, ", in_, ", H, W], got ",
               shape_str(x.shape()));
  return conv2d(x, effective_weight(), bias(), opt_);
}

std::string Conv2d::extra_repr() const {
  auto pair = [](const std::array<int64_t, 2>& a) {
    return a[0] == a[1] ? std::to_string(a[0]) : std::to_string(a[0]) + "x" + std::to_string(a[1]);
  };
  std::string s = detail::concat(in_, ", ", out_, ", kernel=", kernel_[0], "x", kernel_[1],
                                 ", stride=", pair(opt_.stride), ", pad=", pair(opt_.padding));
  if (opt_.dilation[0] != 1 || opt_.dilation[1] != 1) s += ", dilation=" + pair(opt_.dilation);
  if (opt_.groups != 1) s += ", groups=" + std::to_string(opt_.groups);
  if (!has_bias_) s += ", bias=false";
  return s;
}

}  // namespace lowbit
