// Export of a trained, quantized sequential model to the integer model (deploy/model_file.h).
//
// Contract
//   export_model(model, quantization, options) walks the model's layers in forward order (nested
//   Sequential containers, ResNet BasicBlocks, MobileNet v2 InvertedResiduals; anything else is
//   refused) and returns the integer model plus a per-layer account. The model is evaluated as the
//   simulated-quantization model `lowbit eval` runs: each Conv2d/Linear's weight hook at its current
//   bits (set the final bits first: train::QuantContext::use_final_bits), each activation
//   quantizer's bits.
//
//   Weights: the hook's output (the simulated weights) must lie on a uniform grid of at most
//   2^bits levels, w = step * c with integer codes c (DoReFa: c odd, step 1/(2^k - 1); WRPN: step
//   s/(2^(k-1) - 1); binary/ternary: step = max|w|); the codes are stored exactly ("exact") when
//   they fit the engine's 16-bit weights (|c| <= 32639; beyond int8 they run as two int8 passes:
//   DoReFa at 8 bits, odd codes up to +-255, is exact). Otherwise (float first/last layers) the
//   weights are rounded to 16 bits per output channel, step_k = max|w_k|/32512 (lossy, relative
//   error <= 1.6e-5 of the channel's largest weight, said in the account).
//   Activations: every weight layer but the last must be followed (after an optional batch norm,
//   folded into its requantization) by an activation module (ReLU, ReLU6, Hardtanh) whose output
//   quantizer is DoReFa's / WRPN's round(clip(a, 0, 1) n)/n or PACT's (alpha); its n = 2^k - 1 <= 255
//   becomes the requantization's qmax. Max pooling, flatten, dropout and identity are allowed
//   between them. A StreamPoint with a signed quantizer (quant/qconfig.h: MobileNet v2's residual
//   stream after its linear bottleneck) makes the layer before it output signed codes (model_file.h
//   out_signed: 128 + round(clip(y / alpha, -1, 1) n), n = 2^(k-1) - 1); the layers reading them fold
//   the zero point 128 into their offsets (and pad with code 128), and an InvertedResidual's add
//   joins the projection's requantization as a residual of codes, like a BasicBlock's.
//   The last weight layer's int32 accumulators are dequantized to float logits.
//   Input: the normalization ((x/255 - mean_c)/std_c) is folded into the first layer, exactly
//   (codes kept when every std_c is equal, else 16 bits per channel); padding in the first layer uses
//   the pixel code round(255 mean) (all channels must share it), whose error is <= 0.5/255/std.
//   Throws lowbit::Error naming the layer and what is not exportable (method, module type, float
//   activations, ...). Methods: dorefa, wrpn, pact, binary, ternary, lsq (its learned steps: the
//   weights' w_step is the codes' step, the activations' a_step times Q_P their clip); u3 is refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "deploy/model_file.h"
#include "layers/module.h"
#include "quant/qconfig.h"

namespace lowbit::deploy {

struct ExportOptions {
  std::string model_name;  // metadata "model"
  int64_t channels = 1, height = 28, width = 28;
  std::vector<double> mean, std;  // per input channel, [0, 1] units; empty: x / 255 only
  std::string source;             // metadata "source" (e.g. the checkpoint's path)
};

struct ExportedLayer {
  std::string name;
  int trained_bits = 32;  // what the simulated model ran it at (32: float)
  int stored_bits = 8;    // bits per weight in the file
  bool exact = true;      // codes equal the simulated weights (false: rounded to 16 bits per channel)
  int64_t weights = 0;
  int out_bits = 0;  // output activation bits (0: float logits)
  int low_bits = 0;  // > 0: a second pass of this many bits holds the 16-bit rounding's remainder (first layer)
};

struct ExportResult {
  Model model;
  std::vector<ExportedLayer> layers;
  int64_t fp32_parameter_bytes = 0;  // 4 bytes per parameter of the exported layers (weights, biases, BN)
};

ExportResult export_model(Module& model, const quant::Quantization& quantization, const ExportOptions& options);

// Entropy coding of an integer model's weights (spec methods.md §3.4; `lowbit export --entropy-code`).
// entropy_code(m) sets each weight layer's storage to the smallest body of packed, huffman and
// huffman_rle (zero runs; only for a coding with a zero weight; ties: the simpler, in that order;
// deploy/entropy.h), and returns the account per layer and the spec's compression ratio
// CR = 32 N / sum_l (coded bits_l + table bits_l + 32) with this convention: each layer counted in the
// storage chosen (packed: bits per weight times weights, no table; huffman: the stream bits, table
// 32 + 24 per symbol; huffman-rle: the stream bits with the runs' extra bits, table 32 + 40 per
// symbol), 32 bits of delta_l per layer; N = the weights of the layers, not counting a low-order pass
// (`NAME.low`: its weights are extra storage of the first layer, in the denominator only); scales,
// offsets and the graph not counted.
struct CodedLayer {
  std::string name;
  int64_t weights = 0, zeros = 0;  // zeros: weights whose integer is 0 (the sparsity's numerator)
  int bits = 0;
  int64_t symbols = 0, stream_bits = 0, packed_bytes = 0, huffman_bytes = 0;  // huffman: its symbols and bits
  int64_t rle_symbols = 0, rle_stream_bits = 0, rle_bytes = -1;               // huffman-rle (-1: not possible)
  int64_t formula_bits = 0;  // the layer's term of the formula's denominator, in the storage chosen
  bool low_pass = false;
  WeightStorage storage = WeightStorage::packed;
  int64_t stored_bytes() const;           // the chosen storage's body
  double stored_bits_per_weight() const;  // the chosen storage's weight bits (stream or packed) per weight
};
struct EntropyAccount {
  std::vector<CodedLayer> layers;
  int64_t formula_weights = 0;  // N
  int64_t formula_bits = 0;     // the denominator
  double formula_ratio() const { return formula_bits ? 32.0 * double(formula_weights) / double(formula_bits) : 0; }
};
EntropyAccount entropy_code(Model& m);

}  // namespace lowbit::deploy
