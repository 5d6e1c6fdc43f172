// Per-layer quantization of a model without touching its code: every Conv2d/Linear gets a weight
// quantizer (through its weight hook) and every activation module (ReLU, ReLU6, Hardtanh) an
// activation quantizer (through its output hook), with name-pattern overrides. The first and last
// weight layers stay at full precision by default (spec convention 7, Distiller's `overrides`).
//
// Methods and the quantizers they install (quant/quantizers.h; surrogate gradients stated there):
//   dorefa   weights dorefa_weight(w, k)           activations dorefa_activation(a, k)
//   wrpn     weights wrpn_weight(w, k)             activations wrpn_activation(a, k)
//   binary   weights binary_weight(w)              activations dorefa_activation(a, k)
//   ternary  weights ternary_weight(w)             activations dorefa_activation(a, k)
//   lsq      weights lsq(w, s_w, k) signed         activations lsq(a, s_a, k) unsigned
//            (s_w, s_a learnable, initialised by lsq_init_step; registered as "w_step" on the
//             layer and "a_step" on the activation module)
//   pact     weights dorefa_weight(w, k)           activations pact(a, alpha, k) (alpha learnable,
//            initialised to pact_alpha_init; registered as "alpha" on the activation module)
//   u3       weights uniform_u3(w, d, q_max) signed, activations uniform_u3(a, d, q_max) unsigned
//            (Uhlich et al., spec §6: step d and range q_max learnable, registered as "w_d",
//             "w_qmax" / "a_d", "a_qmax"; initialised at k bits from max|w| / the first batch's
//             max; the bitwidth is inferred from them, inferred_weight_bits)
// Bits >= 32 mean "full precision" (no quantizer). The weight bits of each layer live in a shared
// cell, so set_weight_bits() re-targets a layer at any time (e.g. WaveQ's learned bits at the end).
//
// Patterns: comma-separated `PATTERN=BITS` with `*` matching any run of characters, matched
// against the full module name ("layer2.1.conv1"); later entries win; "first"/"last" name the
// first/last weight layer.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "layers/module.h"

namespace lowbit::quant {

enum class Method { none, dorefa, wrpn, binary, ternary, lsq, pact, u3 };
Method parse_method(const std::string& name);  // throws listing the methods
const char* method_name(Method m);

struct QuantConfig {
  Method method = Method::none;
  int weight_bits = 32;
  int activation_bits = 32;
  bool quantize_first_last = false;
  std::string weight_overrides;      // "conv1=8,fc*=32"
  std::string activation_overrides;  // "relu1=8"
  double pact_alpha_init = 8.0;
  // wrpn only: quantize w / s and scale back, s = max |w| per layer (held constant in the
  // gradient), so the grid spans the layer's weights instead of [-1, 1] (matches the regularizers'
  // WeightScale::max_abs).
  bool weight_scale_max = false;
};

struct QuantizedLayer {
  std::string name;                  // full module name, "layer1.0.conv1"
  std::shared_ptr<Module> module;    // a Conv2d or Linear
  std::shared_ptr<int> weight_bits;  // shared with the hook; >= 32: full precision
  bool first = false, last = false;
  Variable& weight() const;  // the float (shadow) weight
  int64_t numel() const;
};

struct QuantizedActivation {
  std::string name;
  std::shared_ptr<Module> module;
  int bits = 32;
};

class Quantization {
 public:
  std::vector<QuantizedLayer> layers;            // every Conv2d/Linear, in model order
  std::vector<QuantizedActivation> activations;  // every activation module with a quantizer
  Method method = Method::none;

  // Re-targets one layer's weight quantizer (bits >= 32 disables it).
  void set_weight_bits(const std::string& layer, int bits);
  // The layer's bits: for u3 inferred from its learned (d, q_max) (spec §6.3), else the configured k.
  int inferred_weight_bits(const QuantizedLayer& layer) const;
  // Layers whose weights are quantized during training (bits < 32).
  std::vector<const QuantizedLayer*> quantized_layers() const;
  // Full names of the learnable quantizer parameters it registered ("conv2.w_step", "relu1.alpha").
  std::vector<std::string> parameter_names;
};

// Installs the quantizers of `config` into `model` (replacing hooks installed before).
Quantization attach_quantizers(Module& model, const QuantConfig& config);

// `*`-glob match of a full name.
bool name_matches(const std::string& pattern, const std::string& name);

}  // namespace lowbit::quant
