// Model zoo: reference networks of ../shared/spec/methods.md §9 (path relative to the repository root),
// built from layers/ with parameter names that read like PyTorch's / Distiller's ("conv1", "layer1.0.conv1",
// "features.3", "fc"), since per-layer quantization settings match on these names. See docs/models.md for the
// table.
//
//   create_model(name, opt): a fresh model in training mode; weights drawn from Generator(opt.seed) when a
//     seed is given, else from default_generator(). Input [N, in_channels, image_size, image_size],
//     output logits [N, num_classes].
//   width_mult (WRPN widening) multiplies the channels / units of every hidden layer (never the input
//     channels or the classes); variant selects model-specific forms ("" = the model's default).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "layers/module.h"

namespace lowbit::models {

struct ModelOptions {
  int64_t num_classes = 10;
  int64_t in_channels = 0;   // 0 = model default
  int64_t image_size = 0;    // 0 = model (variant) default
  double width_mult = 1.0;   // WRPN widening: multiplies every hidden layer's channels/units
  std::string variant = "";  // model-specific, e.g. "A"/"B" shortcut, "cifar"/"imagenet" stem; "" = default
  std::optional<uint64_t> seed = std::nullopt;  // weights from Generator(seed); default_generator() when absent
};

std::shared_ptr<Module> create_model(const std::string& name, const ModelOptions& opt = {});
std::vector<std::string> model_names();

struct ModelInfo {
  std::string name, description;
  int64_t default_in_channels, default_image_size;  // of the default variant
  std::vector<std::string> variants;                // first = default; empty when the model has none
};
ModelInfo model_info(const std::string& name);  // unknown name -> Error listing the known names
// Default input height = width of a variant ("" = the default variant): "cifar" 32, "64" 64,
// "imagenet"/"224" 224, else the model's default.
int64_t default_image_size(const std::string& name, const std::string& variant);

}  // namespace lowbit::models
