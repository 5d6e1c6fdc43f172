// ResNet building block (He et al. 2016), used by resnet20 (CIFAR, §9.4) and resnet18 (§9.8).
//   BasicBlock: y = relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x)); conv1 3x3/stride, conv2 3x3/1.
//   Shortcut when stride != 1 or channels change:
//     Projection ("B", torchvision / Distiller): child "downsample" = Sequential(conv 1x1/stride, BN).
//     ZeroPad ("A", akamaster / Sony): child "shortcut" = x[:, :, ::stride, ::stride] with the new channels
//       zero-padded equally on both sides; parameter-free.
//   forward fuses relu1 into bn1 (batch_norm_relu) and relu2 into the residual sum (add_relu); the
//   ReLU modules' output hooks (activation quantizers) still apply to their outputs.
#pragma once

#include <memory>

#include "core/random.h"
#include "layers/layers.h"

namespace lowbit::models {

enum class ShortcutKind { projection, zero_pad };

class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride, ShortcutKind kind, Generator& gen);
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "BasicBlock"; }
  std::string extra_repr() const override;

 private:
  int64_t in_, out_, stride_;
  std::shared_ptr<Module> conv1_, relu1_, conv2_, shortcut_, relu2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
};

}  // namespace lowbit::models
