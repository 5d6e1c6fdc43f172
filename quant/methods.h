// The quantization method registry: every quantizer is declared once, here, with everything the
// rest of lowbit needs to know about it. Option parsing, `--help`, error messages, reports, the
// README's list and the per-method test table all walk quant_methods(); nothing else names a
// method by hand.
//
// An entry holds
//   name, help                 "dorefa", one line for --help and the README
//   weight_bits / act_bits     the bitwidths it accepts (sign bit included for weights,
//                              convention 1) and the default when --wbits / --abits are not given;
//                              32 always means "full precision" (no quantizer on that layer)
//   weight(site)               builds the weight quantizer of one Conv2d/Linear (its weight hook);
//                              it reads *site.bits at every call, so the layer can be re-targeted
//   activation(site)           the same for an activation module (ReLU, ReLU6, Hardtanh output hook)
//   weight_params/act_params   local names of the learnable parameters the constructors register
//                              on the module ("w_step" on a conv, "alpha" on a ReLU); the training
//                              context puts them in the optimizer group "quantizer"
//   sinusoid(config)           the SinReQ/WaveQ sinusoid whose zeros are exactly this quantizer's
//                              weight levels (a grid and the domain the quantizer rounds in), or
//                              nullopt when none is (learned steps, fixed-level quantizers): the
//                              regularizers are then refused with this method
//   stored_bits(layer, k)      the bits a layer's weights are stored at: k, or inferred from learned
//                              parameters (U3); null means k
//   bits_variable(module, weight)  the bits as a differentiable scalar of the learned parameters
//                              (U3 §6.3), for the memory budgets of quant/budget.h; null: fixed bits
//   after_step(module, weight) parameter constraints after each optimizer step (U3 §6.4); may be null
//   bits_follow_beta           whether WaveQ's learned bits can drive this quantizer's bits (its
//                              levels are a function of k alone)
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "layers/module.h"
#include "quant/regularizers.h"

namespace lowbit::quant {

struct QuantConfig;

struct BitRange {
  int min = 1, max = 16;
  int default_bits = 4;
  bool contains(int bits) const { return bits == 32 || (bits >= min && bits <= max); }
  std::string str() const;  // "2..16" or "1"
};

// What a quantizer constructor is given for one module.
struct QuantSite {
  Module& module;             // Conv2d / Linear (weights) or the activation module
  std::string name;           // its full name, "layer1.0.conv1"
  std::shared_ptr<int> bits;  // the layer's bit cell (weights) — read it at call time
  const QuantConfig& config;
};

// The sinusoid that matches a quantizer's weight levels.
struct SinusoidMatch {
  Grid grid = Grid::wrpn;
  WeightScale scale = WeightScale::none;
};

struct QuantMethod {
  std::string name;
  std::string help;
  BitRange weight_bits, activation_bits;
  std::function<VariableTransform(const QuantSite&)> weight;
  std::function<VariableTransform(const QuantSite&)> activation;
  std::vector<std::string> weight_params, activation_params;
  std::function<std::optional<SinusoidMatch>(const QuantConfig&)> sinusoid;
  std::function<int(Module& layer, int configured_bits)> stored_bits;
  std::function<Variable(Module& module, bool weight_side)> bits_variable;
  std::function<void(Module& module, bool weight_side)> after_step;
  bool bits_follow_beta = false;
};

// Every method, "none" first (no quantizer: float training, or float training with a regularizer).
const std::vector<QuantMethod>& quant_methods();
// The entry called `name`; throws naming the unknown name and listing the methods.
const QuantMethod& find_method(const std::string& name);
// "none | dorefa | wrpn | ..." (separator as given).
std::string method_names(const std::string& separator = " | ");

}  // namespace lowbit::quant
