#include "models/zoo.h"

#include <functional>

#include "models/common.h"

namespace lowbit::models {

int64_t window_out(int64_t in, int64_t kernel, int64_t stride, int64_t pad, bool ceil_mode, int64_t dilation) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1;
  int64_t out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

void init_conv_net(Module& m, Generator& gen, double linear_std) {
  m.apply([&](const std::string&, Module& mod) {
    if (auto* conv = dynamic_cast<Conv2d*>(&mod)) {
      Tensor w = conv->weight().data();
      init::kaiming_normal_(w, 0, init::FanMode::fan_out, init::Nonlinearity::relu, gen);
      if (conv->has_bias()) conv->bias().mutable_data().fill_(0);
    } else if (auto* fc = dynamic_cast<Linear*>(&mod); fc && linear_std > 0) {
      Tensor w = fc->weight().data();
      init::normal_(w, 0, linear_std, gen);
      if (fc->has_bias()) fc->bias().mutable_data().fill_(0);
    }
  });
}

namespace {

struct Entry {
  ModelInfo info;
  std::function<std::shared_ptr<Module>(const ModelOptions&, Generator&)> build;
};

const std::vector<Entry>& registry() {
  static const std::vector<Entry> entries = {
      {{"lenet5", "LeNet-5 (MNIST; §9.3): conv 20 5x5, pool, conv 50 5x5, pool, fc 500, fc classes", 1, 28, {}},
       build_lenet5},
      {{"simplenet_cifar",
        "Distiller simplenet_cifar (§9.1): conv 6 5x5, pool, conv 16 5x5, pool, fc 120, 84, classes",
        3,
        32,
        {}},
       build_simplenet_cifar},
      {{"svhn_net",
        "pytorch-playground / Distiller SVHN net (§9.2a): 7 convs 3x3 with ReLU + Dropout(0.3), fc 256",
        3,
        32,
        {}},
       build_svhn_net},
      {{"alexnet",
        "AlexNet: 'cifar' (bearpaw CIFAR AlexNet, 32 px), '224' (torchvision, §9.6a), '64' (torchvision with a "
        "5x5/2 stem for 64 px)",
        3,
        32,
        {"cifar", "224", "64"}},
       build_alexnet},
      {{"alexnet_bn", "AlexNet-BN, DoReFa / Distiller style (§9.6b), 224 px", 3, 224, {}}, build_alexnet_bn},
      {{"vgg11", "VGG-11 for CIFAR (Distiller vgg11_cifar, §9.5): cfg A convs + Linear 512->classes", 3, 32, {}},
       [](const ModelOptions& o, Generator& g) { return build_vgg11(o, g, false); }},
      {{"vgg11_bn", "VGG-11 with batch norm for CIFAR (Distiller vgg11_bn_cifar, §9.5)", 3, 32, {}},
       [](const ModelOptions& o, Generator& g) { return build_vgg11(o, g, true); }},
      {{"resnet20",
        "ResNet-20 for CIFAR (§9.4): 'B' 1x1 conv + BN projection shortcuts (Distiller), 'A' subsample + zero-pad "
        "shortcuts (akamaster / Sony)",
        3,
        32,
        {"B", "A"}},
       build_resnet20},
      {{"resnet18",
        "ResNet-18 (§9.8): 'imagenet' torchvision (7x7/2 stem + maxpool), 'cifar' 3x3 stem, no maxpool",
        3,
        224,
        {"imagenet", "cifar"}},
       build_resnet18},
      {{"mobilenet_v1",
        "MobileNet-V1 (Distiller, §9.7): 'imagenet' 224 px, 'cifar' stride-1 stem for 32 px",
        3,
        224,
        {"imagenet", "cifar"}},
       build_mobilenet_v1},
      {{"mobilenet_v2",
        "MobileNet-V2 (torchvision, §9.7): 'imagenet' 224 px, 'cifar' stride-1 stem and stage 2 for 32 px",
        3,
        224,
        {"imagenet", "cifar"}},
       build_mobilenet_v2},
  };
  return entries;
}

const Entry& find_entry(const std::string& name) {
  for (const Entry& e : registry())
    if (e.info.name == name) return e;
  std::string known;
  for (const Entry& e : registry()) known += (known.empty() ? "" : ", ") + e.info.name;
  throw Error(detail::concat("models: unknown model '", name, "' (known: ", known, ")"));
}

}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> out;
  for (const Entry& e : registry()) out.push_back(e.info.name);
  return out;
}

ModelInfo model_info(const std::string& name) { return find_entry(name).info; }

std::shared_ptr<Module> create_model(const std::string& name, const ModelOptions& opt) {
  const Entry& e = find_entry(name);
  ModelOptions o = opt;
  if (o.in_channels == 0) o.in_channels = e.info.default_in_channels;
  if (o.variant.empty() && !e.info.variants.empty()) o.variant = e.info.variants.front();
  if (!o.variant.empty()) {
    bool ok = false;
    std::string known;
    for (const auto& v : e.info.variants) ok |= v == o.variant, known += (known.empty() ? "" : ", ") + v;
    LOWBIT_CHECK(ok, "create_model(", name, "): unknown variant '", o.variant,
                 "' (known: ", known.empty() ? std::string("none") : known, ")");
  }
  LOWBIT_CHECK(o.num_classes > 0 && o.in_channels > 0 && o.image_size >= 0 && o.width_mult > 0, "create_model(", name,
               "): need num_classes > 0, in_channels > 0, image_size >= 0, width_mult > 0; got ", o.num_classes, ", ",
               o.in_channels, ", ", o.image_size, ", ", o.width_mult);
  Generator seeded(o.seed.value_or(0));
  Generator& gen = o.seed ? seeded : default_generator();
  return e.build(o, gen);
}

int64_t default_image_size(const std::string& name, const std::string& variant) {
  const ModelInfo info = model_info(name);
  if (variant == "cifar") return 32;
  if (variant == "64") return 64;
  if (variant == "imagenet" || variant == "224") return 224;
  return info.default_image_size;
}

}  // namespace lowbit::models
