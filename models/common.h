// Shared pieces of the zoo: the Model container, width scaling, per-model initialisation, and the
// builder functions registered by models/zoo.cpp.
#pragma once

#include <cmath>
#include <memory>
#include <string>

#include "core/random.h"
#include "layers/layers.h"
#include "models/zoo.h"

namespace lowbit::models {

// A Sequential with the model's own type name (printed by str()).
class Model : public Sequential {
 public:
  explicit Model(std::string name) : name_(std::move(name)) {}
  std::string type_name() const override { return name_; }

 private:
  std::string name_;
};

// round(c * width_mult), at least 1.
inline int64_t scale_width(int64_t c, double width_mult) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(static_cast<double>(c) * width_mult)));
}

// Output size of a convolution / pooling window along one axis (PyTorch's formula; ceil_mode rounds up,
// a window may not start in the right padding).
int64_t window_out(int64_t in, int64_t kernel, int64_t stride, int64_t pad = 0, bool ceil_mode = false,
                   int64_t dilation = 1);

// torchvision / Distiller init for conv nets: conv weights kaiming_normal(fan_out, relu), conv biases 0,
// BN weight 1 / bias 0 (already), Linear weights normal(0, linear_std) and biases 0 when linear_std > 0.
void init_conv_net(Module& m, Generator& gen, double linear_std = 0);

// Builders (one per model family file).
std::shared_ptr<Module> build_lenet5(const ModelOptions& o, Generator& gen);
std::shared_ptr<Module> build_simplenet_cifar(const ModelOptions& o, Generator& gen);
std::shared_ptr<Module> build_svhn_net(const ModelOptions& o, Generator& gen);
std::shared_ptr<Module> build_alexnet(const ModelOptions& o, Generator& gen);
std::shared_ptr<Module> build_alexnet_bn(const ModelOptions& o, Generator& gen);
std::shared_ptr<Module> build_vgg11(const ModelOptions& o, Generator& gen, bool batch_norm);
std::shared_ptr<Module> build_resnet20(const ModelOptions& o, Generator& gen);
std::shared_ptr<Module> build_resnet18(const ModelOptions& o, Generator& gen);
std::shared_ptr<Module> build_mobilenet_v1(const ModelOptions& o, Generator& gen);
std::shared_ptr<Module> build_mobilenet_v2(const ModelOptions& o, Generator& gen);

}  // namespace lowbit::models
