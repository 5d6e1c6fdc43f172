// The integer model: an in-memory description of a quantized network as the integer engine runs it
// (deploy/engine.h), and its file format `.lbq` (specified in docs/format.md).
//
// Contract
//   A Model is a list of ops in execution order, N images at a time. Op i reads the output of op
//   `src` (< i; the previous op by default) and, for a weight op with a residual, also the output of
//   op `residual` (< i). Outputs are uint8 codes [N][H][W][C] (NHWC), or int32/int64 accumulators.
//     input       uint8 images [N][H][W][C]; the pixel bytes are the codes. Real value of a code x:
//                 scale * (x - zero_point) (1/255 and 0 for pixel images); the data set's
//                 normalization ((x/255 - mean)/std) is folded into the first weight layer.
//     conv        uint8 codes [N][H][W][C] -> [N][P][Q][K]: int32 accumulators of integer weights
//                 [K][R][S][C/groups] (groups 1, or groups = C = K: depthwise), input padding =
//                 pad_values[c] (or in_zero_point for every channel), then either requantized to
//                 uint8 codes (out_qmax > 0, core/kernels/requant.h (1):
//                 q = round(clip(scale_k acc + residual_scale_k res + offset_k, 0, 1) * out_qmax),
//                 res = the residual op's output at the same position, codes or accumulators) or
//                 kept as exact integer accumulators (out_qmax = 0: for a dequantize or a residual);
//                 out_signed: signed codes q = 128 + round(clip(y, -1, 1) * out_qmax), out_qmax <= 127
//                 (a signed activation stored as uint8 with zero point 128; requant.h (1s)).
//     linear      the same for [N][F] -> [N][K] with weights [K][F]; F indexes the flattened NHWC
//                 activation ((h W + w) C + c), not PyTorch's NCHW order; after sum_pool its input
//                 is the int32 sums (and out_qmax must be 0).
//     max_pool    uint8 codes, NHWC (core/kernels/pool_int8.h).
//     flatten     [N][H][W][C] -> [N][H W C] (no data movement: NHWC is already that order).
//     sum_pool    uint8 codes [N][H][W][C] -> int32 [N][C], the sum over H W (a global average pool
//                 whose 1/(H W) the following linear's scale carries).
//     shortcut    uint8 codes [N][H][W][C] -> [N][P][Q][C + pad_lo + pad_hi]: x[n][p sh][q sw][c]
//                 moved to channel c + pad_lo, the other channels zero_point (ResNet's parameter-free
//                 "option A" shortcut; P = (H - 1)/sh + 1).
//     dequantize  accumulators [N][F] -> float logits scale_f * acc + offset_f (the last op).
//   Weights are held decoded (one integer per weight) and stored as `bits`-bit fields (1..16) in the
//   file, packed or Huffman-coded (WeightStorage; WeightCoding says how a field maps to the
//   integer). Weights beyond int8 ("wide", in [-32768, 32639]) run as two int8 passes,
//   w = 256 hi + lo (deploy/engine.h).
//
//   save_model(path, m) validates m, then writes the file atomically (core/serialize.h's
//   write_file_atomic): version 2 when no op has signed output (version-2 readers read it), else 3
//   (conv/linear bodies gain the out_signed byte), 4 when a layer has storage huffman or huffman_rle
//   (its weights Huffman-coded, deploy/entropy.h; bodies gain a storage byte). load_model(path) /
//   parse_model(bytes, name) read versions 2 to 4 (the same decoded weights whatever the storage;
//   each layer's storage recorded) and check the magic, version, size
//   and CRC-32 (zlib) of the payload and every record (sizes, op parameters and their ranges, the
//   sources and shapes of the graph) before allocating anything a record declares, and throw
//   lowbit::Error naming the file and the defect. validate(m, name) is the graph check save and
//   load share.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace lowbit::deploy {

inline constexpr char kModelMagic[8] = {'L', 'O', 'W', 'B', 'I', 'T', 'Q', 'M'};
// 1: the chain of the first slice (no src, groups, residuals; not read); 2: no signed codes; 3: conv and
// linear bodies carry out_signed; 4: and a weight storage byte (packed, Huffman-coded or zero
// run-length + Huffman-coded, spec methods.md §3.4). The writer writes the lowest version that holds the model.
inline constexpr uint32_t kModelVersion = 4;
inline constexpr uint32_t kModelMinVersion = 2;

enum class OpKind : uint8_t {
  input = 1,
  conv = 2,
  linear = 3,
  max_pool = 4,
  flatten = 5,
  dequantize = 6,
  sum_pool = 7,
  shortcut = 8,
};
const char* op_kind_name(OpKind k);

// How a stored k-bit field u (0 <= u < 2^k) maps to the weight integer.
enum class WeightCoding : uint8_t {
  twos_complement = 0,  // w = u - 2^k if u >= 2^(k-1), else u        (range [-2^(k-1), 2^(k-1) - 1])
  odd = 1,              // w = 2u - (2^k - 1)     (DoReFa: the odd integers in [-(2^k-1), 2^k-1]; k <= 15)
};

// How the file stores a layer's k-bit fields (version 4; earlier versions: packed).
enum class WeightStorage : uint8_t {
  packed = 0,   // fixed-width fields, LSB first (pack_weights)
  huffman = 1,  // canonical Huffman code of the fields (deploy/entropy.h, docs/format.md)
  // zero run-length + canonical Huffman (deploy/entropy.h rle_encode, docs/format.md "Run-length
  // Huffman-coded weights"): runs of the zero field as symbols; needs a coding with a zero weight.
  huffman_rle = 2,
};
const char* storage_name(WeightStorage s);

struct InputOp {
  int64_t C = 1, H = 1, W = 1;
  double scale = 1.0 / 255;  // real value of code x: scale * (x - zero_point)
  int32_t zero_point = 0;
  std::vector<double> mean, std;  // the normalization folded into the first layer (informational), [C] or empty
};

// conv and linear (linear: K = out features, C = in features, R = S = H = W = 1, no stride/padding).
struct WeightOp {
  std::string name;
  int64_t K = 1, C = 1, R = 1, S = 1;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  int64_t groups = 1;                  // 1, or C (= K): depthwise, weights [K][R][S][1]
  int32_t in_zero_point = 0;           // the input code standing for real 0 (the padding value)
  std::vector<double> pad_values;      // empty, or [C]: per-channel padding values in [0, 255], in code
                                       // units, fractional allowed (the first layer's normalized 0: 255 mean_c)
  int32_t residual = -1;               // op whose output is added before requantization (-1: none)
  std::vector<double> residual_scale;  // [K] when residual >= 0
  int32_t bits = 8;                    // stored bits per weight, 1..16
  WeightCoding coding = WeightCoding::twos_complement;
  int32_t out_qmax = 255;   // > 0: requantize to codes 0..out_qmax; 0: int32 out (then dequantize)
  bool out_signed = false;  // codes 128 + round(clip(y, -1, 1) out_qmax), out_qmax <= 127 (file v3)
  WeightStorage storage = WeightStorage::packed;  // how the file stores the weights (not packed: file v4)
  std::vector<double> scale, offset;              // [K] per output channel (requant: y = scale acc + offset)
  std::vector<int16_t> weights;                   // [K][R][S][C] (conv) or [K][C] (linear), decoded
  bool wide() const;                              // a weight outside int8: two int8 passes
  int64_t numel() const { return K * R * S * (C / groups); }
};

struct PoolOp {
  int64_t R = 2, S = 2, stride_h = 2, stride_w = 2, pad_h = 0, pad_w = 0;
  bool ceil_mode = false;
};

struct ShortcutOp {
  int64_t stride_h = 1, stride_w = 1, pad_lo = 0, pad_hi = 0;
  int32_t zero_point = 0;  // the code of the added channels
};

struct DequantizeOp {
  std::vector<double> scale, offset;  // [F]: out = scale_f * acc + offset_f
};

struct Op {
  OpKind kind = OpKind::flatten;
  int32_t src = -1;      // the op this one reads (-1 in memory: the previous one; the file stores it)
  InputOp input;         // kind input
  WeightOp layer;        // kind conv / linear
  PoolOp pool;           // kind max_pool
  ShortcutOp shortcut;   // kind shortcut
  DequantizeOp dequant;  // kind dequantize
};

using MetaValue = std::variant<int64_t, double, std::string>;

struct Model {
  std::map<std::string, MetaValue> meta;  // "model", "method", "bits.<layer>", ... (docs/format.md)
  std::vector<Op> ops;
  int64_t classes() const;  // the dequantize op's size
};

// What an op outputs: uint8 codes, int32 (a weight op with out_qmax 0, sum_pool) or int64
// accumulators (a linear after sum_pool: sums of up to 255 H W per input).
enum class ValueType : uint8_t { u8, s32, s64 };

// Shape of the activation after each op: {H, W, C} ({1, 1, F} after flatten/linear/sum_pool).
struct ActShape {
  int64_t H = 1, W = 1, C = 1;
  ValueType type = ValueType::u8;
  bool flat = false;
};

// The resolved source of op i (src, or i - 1 when src < 0).
inline int32_t source_of(const Model& m, size_t i) { return m.ops[i].src >= 0 ? m.ops[i].src : int32_t(i) - 1; }

// Checks the graph (input first, dequantize last and only last, sources and residuals earlier ops
// of the right type and shape, ranges, weight values within `bits` under `coding`); throws naming
// `name` and the op. Returns the output shape of each op.
std::vector<ActShape> validate(const Model& m, const std::string& name);

// The version serialize_model writes for m: 4 when a layer's weights are Huffman-coded, else 3 when an
// op has signed output, else 2.
uint32_t model_version(const Model& m);
// Bytes of the file `save_model` writes: at `version` (2 or 3; 0: model_version(m)); throws when m
// needs a later version than the one asked for.
std::string serialize_model(const Model& m, uint32_t version = 0);
void save_model(const std::string& path, const Model& m);
Model parse_model(std::string_view file, const std::string& name);
Model load_model(const std::string& path);

// Bit-packing of k-bit fields (LSB first: field i occupies bits [i k, i k + k) of the byte string,
// bit b of the string being bit b % 8 of byte b / 8). pack_weights encodes values under `coding`
// (throws when one is not representable); unpack_weights decodes.
inline constexpr int32_t kMaxWideWeight = 32639;  // 256 hi + lo with hi, lo int8
std::string pack_weights(const std::vector<int16_t>& w, int32_t bits, WeightCoding coding);
std::vector<int16_t> unpack_weights(std::string_view packed, int64_t count, int32_t bits, WeightCoding coding);
// The k-bit fields u of a layer's weights (what pack_weights packs and Huffman codes), and back.
std::vector<uint32_t> weight_fields(const WeightOp& l);
int16_t field_weight(uint32_t u, int32_t bits, WeightCoding coding);
// The field that decodes to the weight 0 (the one storage huffman_rle codes as runs): 0 in two's
// complement; -1 in the odd coding, which has no 0.
int64_t zero_field(int32_t bits, WeightCoding coding);

}  // namespace lowbit::deploy
