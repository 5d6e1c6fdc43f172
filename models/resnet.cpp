// ResNet-20 (CIFAR, §9.4) and ResNet-18 (torchvision, §9.8).
#include "models/resnet.h"

#include "autograd/ops.h"
#include "models/common.h"

namespace lowbit::models {

BasicBlock::BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride, ShortcutKind kind, Generator& gen)
    : in_(in_channels), out_(out_channels), stride_(stride) {
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(in_, out_, 3, conv_options(stride, 1), false, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(out_));
  relu1_ = register_module("relu1", std::make_shared<ReLU>());
  conv2_ = register_module("conv2", std::make_shared<Conv2d>(out_, out_, 3, conv_options(1, 1), false, gen));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out_));
  if (stride != 1 || in_ != out_) {
    if (kind == ShortcutKind::projection) {
      shortcut_ = register_module(
          "downsample",
          std::make_shared<Sequential>(std::make_shared<Conv2d>(in_, out_, 1, conv_options(stride, 0), false, gen),
                                       std::make_shared<BatchNorm2d>(out_)));
    } else {
      LOWBIT_CHECK(out_ >= in_ && (out_ - in_) % 2 == 0,
                   "BasicBlock: zero-pad shortcut needs an even channel increase, got ", in_, " -> ", out_);
      const int64_t lo = (out_ - in_) / 2, s = stride;
      shortcut_ = register_module("shortcut", std::make_shared<Lambda>(
                                                  [lo, s](const Variable& x) {
                                                    Pool2dOptions sub;  // kernel 1, stride s: x[:, :, ::s, ::s]
                                                    sub.kernel = {1, 1};
                                                    sub.stride = {s, s};
                                                    const Variable y = s == 1 ? x : avg_pool2d(x, sub);
                                                    return pad(y, {0, 0, 0, 0, lo, lo});
                                                  },
                                                  "ZeroPadShortcut"));
    }
  }
  relu2_ = register_module("relu2", std::make_shared<ReLU>());
}

Variable BasicBlock::forward(const Variable& x) {
  // relu1(bn1(conv1(x))) and relu2(bn2(conv2(y)) + shortcut(x)), each ReLU fused into the op before it.
  Variable y = bn1_->forward_with_relu((*conv1_)(x), *relu1_);
  y = (*bn2_)((*conv2_)(y));
  return relu2_->apply_output_hook(add_relu(y, shortcut_ ? (*shortcut_)(x) : x));
}

std::string BasicBlock::extra_repr() const { return detail::concat(in_, " -> ", out_, ", stride=", stride_); }

namespace {

std::shared_ptr<Sequential> make_stage(int64_t& in, int64_t out, int64_t blocks, int64_t stride, ShortcutKind kind,
                                       Generator& gen) {
  auto stage = std::make_shared<Sequential>();
  for (int64_t b = 0; b < blocks; ++b) {
    stage->push_back(std::make_shared<BasicBlock>(in, out, b == 0 ? stride : 1, kind, gen));
    in = out;
  }
  return stage;
}

}  // namespace

std::shared_ptr<Module> build_resnet20(const ModelOptions& o, Generator& gen) {
  const ShortcutKind kind = o.variant == "A" ? ShortcutKind::zero_pad : ShortcutKind::projection;
  const int64_t size = o.image_size ? o.image_size : 32;
  LOWBIT_CHECK(size >= 4, "resnet20: image_size ", size, " is too small");
  const int64_t w16 = scale_width(16, o.width_mult), w32 = scale_width(32, o.width_mult),
                w64 = scale_width(64, o.width_mult);
  auto m = std::make_shared<Model>("ResNet20");
  m->push_back("conv1", std::make_shared<Conv2d>(o.in_channels, w16, 3, conv_options(1, 1), false, gen));
  m->push_back("bn1", std::make_shared<BatchNorm2d>(w16));
  m->push_back("relu", std::make_shared<ReLU>());
  int64_t in = w16;
  m->push_back("layer1", make_stage(in, w16, 3, 1, kind, gen));
  m->push_back("layer2", make_stage(in, w32, 3, 2, kind, gen));
  m->push_back("layer3", make_stage(in, w64, 3, 2, kind, gen));
  m->push_back("avgpool", std::make_shared<GlobalAvgPool2d>());
  m->push_back("fc", std::make_shared<Linear>(in, o.num_classes, true, gen));
  init_conv_net(*m, gen);
  return m;
}

std::shared_ptr<Module> build_resnet18(const ModelOptions& o, Generator& gen) {
  const bool imagenet = o.variant != "cifar";
  const int64_t size = o.image_size ? o.image_size : (imagenet ? 224 : 32);
  LOWBIT_CHECK(size >= (imagenet ? 32 : 8), "resnet18: image_size ", size, " is too small");
  const double w = o.width_mult;
  const int64_t c64 = scale_width(64, w);
  auto m = std::make_shared<Model>("ResNet18");
  if (imagenet) {
    m->push_back("conv1", std::make_shared<Conv2d>(o.in_channels, c64, 7, conv_options(2, 3), false, gen));
    m->push_back("bn1", std::make_shared<BatchNorm2d>(c64));
    m->push_back("relu", std::make_shared<ReLU>());
    m->push_back("maxpool", std::make_shared<MaxPool2d>(3, 2, 1));
  } else {
    m->push_back("conv1", std::make_shared<Conv2d>(o.in_channels, c64, 3, conv_options(1, 1), false, gen));
    m->push_back("bn1", std::make_shared<BatchNorm2d>(c64));
    m->push_back("relu", std::make_shared<ReLU>());
  }
  int64_t in = c64;
  m->push_back("layer1", make_stage(in, c64, 2, 1, ShortcutKind::projection, gen));
  m->push_back("layer2", make_stage(in, scale_width(128, w), 2, 2, ShortcutKind::projection, gen));
  m->push_back("layer3", make_stage(in, scale_width(256, w), 2, 2, ShortcutKind::projection, gen));
  m->push_back("layer4", make_stage(in, scale_width(512, w), 2, 2, ShortcutKind::projection, gen));
  m->push_back("avgpool", std::make_shared<GlobalAvgPool2d>());
  m->push_back("fc", std::make_shared<Linear>(in, o.num_classes, true, gen));
  init_conv_net(*m, gen);
  return m;
}

}  // namespace lowbit::models
