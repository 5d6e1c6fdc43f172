// MobileNet-V1 (Distiller mobilenet, §9.7) and MobileNet-V2 (torchvision, §9.7).
#include "models/mobilenet.h"

#include <cmath>

#include "autograd/ops.h"
#include "models/common.h"

namespace lowbit::models {

std::shared_ptr<Sequential> conv_bn_act(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups,
                                        bool relu6, Generator& gen) {
  auto s = std::make_shared<Sequential>();
  s->push_back(std::make_shared<Conv2d>(in, out, kernel, conv_options(stride, (kernel - 1) / 2, groups), false, gen));
  s->push_back(std::make_shared<BatchNorm2d>(out));
  if (relu6)
    s->push_back(std::make_shared<ReLU6>());
  else
    s->push_back(std::make_shared<ReLU>());
  return s;
}

int64_t make_divisible(double v, int64_t divisor, int64_t min_value) {
  if (min_value == 0) min_value = divisor;
  int64_t r = std::max<int64_t>(min_value, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (r < 0.9 * v) r += divisor;
  return r;
}

InvertedResidual::InvertedResidual(int64_t in_channels, int64_t out_channels, int64_t stride, int64_t expand_ratio,
                                   Generator& gen)
    : in_(in_channels), out_(out_channels), stride_(stride), expand_(expand_ratio) {
  LOWBIT_CHECK(stride == 1 || stride == 2, "InvertedResidual: stride must be 1 or 2, got ", stride);
  const int64_t hidden = in_ * expand_;
  use_res_ = stride == 1 && in_ == out_;
  conv_ = std::make_shared<Sequential>();
  if (expand_ != 1) conv_->push_back(conv_bn_act(in_, hidden, 1, 1, 1, true, gen));
  conv_->push_back(conv_bn_act(hidden, hidden, 3, stride, hidden, true, gen));
  conv_->push_back(std::make_shared<Conv2d>(hidden, out_, 1, Conv2dOptions{}, false, gen));
  conv_->push_back(std::make_shared<BatchNorm2d>(out_));
  register_module("conv", conv_);
  stream_ = register_module("out", std::make_shared<StreamPoint>());
}

Variable InvertedResidual::forward(const Variable& x) {
  const Variable y = (*conv_)(x);
  return (*stream_)(use_res_ ? x + y : y);
}

std::string InvertedResidual::extra_repr() const {
  return detail::concat(in_, " -> ", out_, ", stride=", stride_, ", expand=", expand_);
}

std::shared_ptr<Module> build_mobilenet_v1(const ModelOptions& o, Generator& gen) {
  // Distiller: channels max(floor(n * multiplier), 8); conv_bn(3, 32, 2), 13 conv_dw blocks, avg pool, fc.
  const bool imagenet = o.variant != "cifar";
  const int64_t size = o.image_size ? o.image_size : (imagenet ? 224 : 32);
  auto ch = [&](int64_t n) {
    return std::max<int64_t>(static_cast<int64_t>(std::floor(static_cast<double>(n) * o.width_mult)), 8);
  };
  struct Dw {
    int64_t out, stride;
  };
  const Dw cfg[] = {{64, 1},  {128, 2}, {128, 1}, {256, 2}, {256, 1},  {512, 2}, {512, 1},
                    {512, 1}, {512, 1}, {512, 1}, {512, 1}, {1024, 2}, {1024, 1}};
  auto body = std::make_shared<Sequential>();
  int64_t in = ch(32);
  body->push_back(conv_bn_act(o.in_channels, in, 3, imagenet ? 2 : 1, 1, false, gen));
  int64_t s = window_out(size, 3, imagenet ? 2 : 1, 1);
  for (const Dw& d : cfg) {
    const int64_t out = ch(d.out);
    auto block = std::make_shared<Sequential>();
    block->push_back(std::make_shared<Conv2d>(in, in, 3, conv_options(d.stride, 1, in), false, gen));  // depthwise
    block->push_back(std::make_shared<BatchNorm2d>(in));
    block->push_back(std::make_shared<ReLU>());
    block->push_back(std::make_shared<Conv2d>(in, out, 1, Conv2dOptions{}, false, gen));  // pointwise
    block->push_back(std::make_shared<BatchNorm2d>(out));
    block->push_back(std::make_shared<ReLU>());
    body->push_back(block);
    s = window_out(s, 3, d.stride, 1);
    in = out;
  }
  LOWBIT_CHECK(s >= 1, "mobilenet_v1: image_size ", size, " is too small");
  body->push_back(std::make_shared<GlobalAvgPool2d>());  // Distiller's AvgPool2d(7) at 224 px
  auto m = std::make_shared<Model>("MobileNetV1");
  m->push_back("model", body);
  m->push_back("fc", std::make_shared<Linear>(in, o.num_classes, true, gen));
  return m;
}

std::shared_ptr<Module> build_mobilenet_v2(const ModelOptions& o, Generator& gen) {
  const bool imagenet = o.variant != "cifar";
  const int64_t size = o.image_size ? o.image_size : (imagenet ? 224 : 32);
  LOWBIT_CHECK(size >= 8, "mobilenet_v2: image_size ", size, " is too small");
  struct Stage {
    int64_t t, c, n, s;
  };
  // Sandler et al. Table 2; the CIFAR variant keeps stride 1 in the stem and in the 24-channel stage.
  const Stage cfg[] = {
      {1, 16, 1, 1}, {6, 24, 2, imagenet ? 2 : 1}, {6, 32, 3, 2}, {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2},
      {6, 320, 1, 1}};
  int64_t in = make_divisible(32 * o.width_mult);
  const int64_t last = make_divisible(1280 * std::max(1.0, o.width_mult));
  auto features = std::make_shared<Sequential>();
  features->push_back(conv_bn_act(o.in_channels, in, 3, imagenet ? 2 : 1, 1, true, gen));
  for (const Stage& st : cfg) {
    const int64_t out = make_divisible(st.c * o.width_mult);
    for (int64_t i = 0; i < st.n; ++i) {
      features->push_back(std::make_shared<InvertedResidual>(in, out, i == 0 ? st.s : 1, st.t, gen));
      in = out;
    }
  }
  features->push_back(conv_bn_act(in, last, 1, 1, 1, true, gen));
  auto classifier = std::make_shared<Sequential>();
  classifier->push_back(std::make_shared<Dropout>(0.2, gen.next_u64()));
  classifier->push_back(std::make_shared<Linear>(last, o.num_classes, true, gen));
  auto m = std::make_shared<Model>("MobileNetV2");
  m->push_back("features", features);
  m->push_back("pool", std::make_shared<GlobalAvgPool2d>());
  m->push_back("classifier", classifier);
  init_conv_net(*m, gen, 0.01);  // torchvision: kaiming_normal(fan_out) convs, Linear normal(0, 0.01)
  return m;
}

}  // namespace lowbit::models
