// Per-layer quantization of a model without touching its code: every Conv2d/Linear gets a weight
// quantizer (through its weight hook) and every activation module (ReLU, ReLU6, Hardtanh) an
// activation quantizer (through its output hook), with name-pattern overrides. The quantizers are
// the entries of the method registry (quant/methods.h), which states each one's formula, bits,
// learnable parameters and matching sinusoid. The first and last weight layers stay at full
// precision by default (spec convention 7, Distiller's `overrides`).
// A StreamPoint (layers/container.h: a signed activation without an activation function, MobileNet
// v2's residual stream) gets a signed activation quantizer when the method quantizes activations:
// signed_pact (quant/quantizers.h) at the run's activation bits (at least 2: sign and one level),
// whatever the method, its clip `alpha` learned in the "clip" group like PACT's and initialised to
// max|a| of the first batch it sees (0 until then); docs/quantization.md.
//
// Bits count the sign bit for weights (convention 1); >= 32 means "full precision" (no quantizer).
// The weight bits of each layer live in a shared cell, so set_weight_bits() re-targets a layer at
// any time (WaveQ's learned bits, a ReLeQ bit vector).
//
// Patterns: comma-separated `PATTERN=BITS` with `*` matching any run of characters, matched
// against the full module name ("layer2.1.conv1"); later entries win; "first"/"last" name the
// first/last weight layer. A pattern that matches no layer, or bits outside the method's range,
// is an error naming the option (--wbits-overrides / --abits-overrides) and the layers there are.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "layers/module.h"
#include "quant/methods.h"

namespace lowbit::quant {

struct QuantConfig {
  std::string method = "none";  // a quant_methods() name
  int weight_bits = 32;         // 0: the method's default
  int activation_bits = 32;     // 0: the method's default
  bool quantize_first_last = false;
  std::string weight_overrides{};      // "conv1=8,fc*=32"
  std::string activation_overrides{};  // "relu1=8"
  double pact_alpha_init = 8.0;
  // wrpn: quantize w / s and scale back, s = max|w| per layer (held constant in the gradient), so
  // the grid spans the layer's weights instead of [-1, 1] (WeightScale::max_abs); none: raw w.
  WeightScale weight_scale = WeightScale::none;
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
  // One sample's activation count (numel / batch), recorded by the hook at every call; 0 until the
  // first forward pass (the activation memory of quant/budget.h).
  std::shared_ptr<int64_t> features = std::make_shared<int64_t>(0);
};

class Quantization {
 public:
  std::vector<QuantizedLayer> layers;            // every Conv2d/Linear, in model order
  std::vector<QuantizedActivation> activations;  // every activation module with a quantizer
  // Every StreamPoint with a signed quantizer (signed_pact; its "alpha" in parameter_names). Kept
  // apart: the method's own activation parameters, bits and budgets do not apply to them.
  std::vector<QuantizedActivation> signed_activations;
  const QuantMethod* method = nullptr;

  // Re-targets one layer's weight quantizer (bits >= 32 disables it); throws for an unknown layer
  // or bits outside the method's range.
  void set_weight_bits(const std::string& layer, int bits);
  // The bits a layer is stored at: inferred from learned parameters (u3) or the configured k.
  int stored_weight_bits(const QuantizedLayer& layer) const;
  // Layers whose weights are quantized during training (bits < 32).
  std::vector<const QuantizedLayer*> quantized_layers() const;
  // Full names of the learnable quantizer parameters it registered ("conv2.w_step", "relu1.alpha").
  std::vector<std::string> parameter_names;
  // Parameter constraints of the method after an optimizer step (U3's clipping); no-op for most.
  void after_step() const;
  // Weight hooks off (float shadow weights) while fn runs; activation quantizers stay on.
  template <class F>
  auto with_weight_quantizers_off(F&& fn) const;
};

// Installs the quantizers of `config` into `model` (replacing hooks installed before). Throws for
// an unknown method, bits outside its range, and override patterns that match no layer.
Quantization attach_quantizers(Module& model, const QuantConfig& config);
// The same with a method that is not in the registry (config.method is then only a label): for
// quantizers with state of their own that training does not use, e.g. the range-calibrated
// post-training quantizer of quant/ptq.h. `method` must outlive the returned Quantization.
Quantization attach_quantizers(Module& model, const QuantConfig& config, const QuantMethod& method);

// The registered quantizer (method and weight scale) whose weight levels are the zeros of the
// sinusoid on `grid` in the `scale` domain: what float-trained, regularized weights are rounded
// with. nullopt when no quantizer has those levels.
std::optional<QuantConfig> quantizer_with_levels(Grid grid, WeightScale scale);

// `*`-glob match of a full name.
bool name_matches(const std::string& pattern, const std::string& name);

// The weight hook of a Conv2d or Linear (nullptr for other modules), and setting it.
VariableTransform weight_hook_of(Module& layer);
void set_weight_hook(Module& layer, VariableTransform hook);

template <class F>
auto Quantization::with_weight_quantizers_off(F&& fn) const {
  std::vector<VariableTransform> saved;
  for (const auto& l : layers) saved.push_back(weight_hook_of(*l.module)), set_weight_hook(*l.module, nullptr);
  struct Restore {
    const Quantization* q;
    std::vector<VariableTransform>* saved;
    ~Restore() {
      for (size_t i = 0; i < q->layers.size(); ++i) set_weight_hook(*q->layers[i].module, (*saved)[i]);
    }
  } restore{this, &saved};
  return fn();
}

}  // namespace lowbit::quant
