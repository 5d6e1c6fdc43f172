// Range-based linear post-training quantization (PTQ): Distiller's range-linear quantizer (spec
// §8.7), the evaluation of Alizadeh et al. (§7.2: "per-tensor uniform linear (min/max) on weights
// and activations", bit settings 8/8, 6/6, 4/4). No training: a float model's weights are rounded
// from their own range, and its activations from ranges calibrated on a few training batches.
//
// The formulas (§8.7; Distiller q_utils.py):
//   asymmetric, n bits, range [min, max]:  x_q = clamp(round(q_x x − zp_x), 0, 2^n − 1),
//       q_x = (2^n − 1) / (max − min),  zp_x = round(min q_x),  x' = (x_q + zp_x) / q_x
//       with the range first widened to contain 0 (min <- min(min, 0), max <- max(max, 0)), so
//       that 0 is exactly representable; after a ReLU min = 0, zp_x = 0: unsigned n-bit codes.
//   symmetric, n bits (sign included, convention 1):  x_q = round(x (2^(n−1) − 1) / max|x|),
//       clamped to [−2^(n−1), 2^(n−1) − 1], x' = x_q max|x| / (2^(n−1) − 1): 2^n − 1 levels.
//   round: half to even (torch.round). A zero-width range (an all-zero tensor) gets q_x = 1, as
//   Distiller's (all-zero values stay 0).
//
// The default setting is the paper's: weights symmetric per tensor (per output channel as an
// option), activations asymmetric per tensor (unsigned after a ReLU), every Conv2d/Linear and every
// activation module (ReLU, ReLU6, Hardtanh) quantized, the first and last layers included.
//
// Where: the hooks of quant/qconfig.h. The weight side is installed by attach_quantizers with a
// method of its own (not in the registry: no training use), so every Conv2d/Linear, the first/last
// flags and the per-layer bit cells are qconfig's; each weight hook rounds the float weight from its
// own range at every forward pass (the weights do not change, so this equals rounding them once
// offline; the stored weights are never written). Activations: the output hook of every module
// attach_quantizers treats as an activation (ReLU, ReLU6, Hardtanh), i.e. the input of the next
// layer; these hooks carry the calibration state. Not quantized (float, as in a simulated
// quantization): the network input, biases, batch norm (not folded into the weights), the residual
// sums before their ReLU, pooling outputs, MobileNet-V2's StreamPoints, the logits.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "layers/module.h"
#include "quant/methods.h"
#include "quant/qconfig.h"

namespace lowbit::quant {

// One linear quantizer: codes x_q = clamp(round(scale x − zero_point), code_min, code_max) (round
// half to even), values (x_q + zero_point) / scale. Distiller range-linear, spec §8.7.
struct LinearQuant {
  double scale = 1;       // q_x
  double zero_point = 0;  // zp_x, an integer (0 for symmetric)
  double code_min = 0, code_max = 0;
  double code(double x) const;
  double value(double code) const { return (code + zero_point) / scale; }
  double operator()(double x) const { return value(code(x)); }
};

// Asymmetric (unsigned) n-bit quantizer of the range [min, max] (widened to contain 0). bits >= 1.
LinearQuant asymmetric_linear(double min, double max, int bits);
// Symmetric n-bit quantizer of [−max_abs, max_abs]. bits >= 2.
LinearQuant symmetric_linear(double max_abs, int bits);

enum class RangeMode { symmetric, asymmetric };
const char* range_mode_name(RangeMode mode);  // "symmetric" / "asymmetric"
// The quantizer of the range [min, max] in `mode` (symmetric: max_abs = max(|min|, |max|)).
LinearQuant linear_quant(RangeMode mode, double min, double max, int bits);

// q(x) for every element (float32 or float64; shape, dtype and a dense layout kept).
Tensor fake_quantize(const Tensor& x, const LinearQuant& q);
// Per output channel: q[i] on the slice x[i] along dim 0 (q.size() == x.size(0)); contiguous result.
Tensor fake_quantize_per_channel(const Tensor& x, const std::vector<LinearQuant>& q);

// Smallest and largest element (float32 or float64; non-empty).
std::pair<double, double> tensor_min_max(const Tensor& x);
// The same per slice along dim 0.
std::vector<std::pair<double, double>> channel_min_max(const Tensor& x);

// A weight tensor quantized from its own range: per tensor, or per output channel (dim 0).
Tensor range_linear_weight(const Tensor& w, int bits, RangeMode mode, bool per_channel);

// One bit setting of the post-training quantizer. Bits: 2..16, or 32 (= float, no quantizer).
struct PtqConfig {
  int weight_bits = 8;      // sign included
  int activation_bits = 8;  // unsigned codes after a ReLU (asymmetric mode)
  // > 0: the first and last weight layers' weights, and the last activation module's output (the
  // last layer's input), at these bits instead (e.g. 8); 0: every layer at the setting's bits.
  int first_last_bits = 0;
  bool per_channel = false;  // weights: one range per output channel
  // Batch norm folded, as deployed (and Distiller's PTQ): a conv's weights followed directly by a
  // BatchNorm2d are rounded as w_k s_k, s_k = gamma_k / sqrt(running_var_k + eps), then divided by
  // s_k again, so the float batch norm after it gives the folded layer's output exactly.
  bool fold_bn = false;
  RangeMode weight_mode = RangeMode::symmetric;
  RangeMode activation_mode = RangeMode::asymmetric;
};

// A calibrated range: an activation's min/max over every calibration pass, or a weight's own.
struct ObservedRange {
  std::string name;  // module name, "layer1.0.relu1" / "layer1.0.conv1"
  bool weight = false;
  double min = 0, max = 0;
  int64_t passes = 0;  // activations: forward passes seen while calibrating
};

// Range-linear hooks on a model: every Conv2d/Linear weight and every activation module's output.
//
//   quant::PostTrainingQuantizer ptq(*model);   // hooks installed, float pass-through
//   ptq.calibrate();                            // then forward passes of calibration batches
//   for (...) model(batch);
//   ptq.quantize({.weight_bits = 4, .activation_bits = 4});   // evaluate ...
//   ptq.quantize({.weight_bits = 8, .activation_bits = 8});   // ... at any setting, same ranges
//   // ~PostTrainingQuantizer: the hooks the model had before are put back
//
// Calibration keeps, per activation, the running min and max over every element of every pass
// since calibrate() (the global min/max of the calibration data: Distiller's statistics without
// clipping, ClipMode.NONE — not the mean of per-batch extremes). The ranges come from the float
// model (weights not quantized while calibrating) and serve every setting, as Distiller's
// collected statistics do. The model's parameters and buffers are never written by the hooks; run
// the calibration passes in eval mode without gradients (train mode would update batch norm's
// running statistics). The model must outlive the quantizer.
class PostTrainingQuantizer {
 public:
  explicit PostTrainingQuantizer(Module& model);  // hooks installed in float pass-through
  ~PostTrainingQuantizer();
  PostTrainingQuantizer(const PostTrainingQuantizer&) = delete;
  PostTrainingQuantizer& operator=(const PostTrainingQuantizer&) = delete;

  // Float pass-through that records activation ranges; forgets earlier ranges.
  void calibrate();
  // Quantizes at `config` from now on. Throws for bits outside 2..16 (32: float) and, when
  // activations are quantized, for an activation that calibration never saw.
  void quantize(const PtqConfig& config);
  // Float pass-through (ranges kept).
  void use_float();

  std::vector<ObservedRange> activation_ranges() const;  // in model order
  std::vector<ObservedRange> weight_ranges() const;      // per tensor, in model order
  // The weight layers as attach_quantizers enumerated them, with the current setting's bits.
  const Quantization& quantization() const { return quantization_; }

 private:
  struct State;
  struct Activation;
  std::shared_ptr<State> state_;
  QuantMethod method_;
  Quantization quantization_;
  std::vector<std::pair<Module*, VariableTransform>> saved_output_hooks_, saved_weight_hooks_;
};

}  // namespace lowbit::quant
