#include "deploy/model_file.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include "core/error.h"
#include "core/serialize.h"
#include "deploy/entropy.h"

namespace lowbit::deploy {
namespace {

static_assert(std::endian::native == std::endian::little, "the .lbq writer assumes a little-endian host");

constexpr int64_t kMaxDim = int64_t(1) << 20;       // any one size (channels, height, ...)
constexpr int64_t kMaxElements = int64_t(1) << 31;  // weights of one layer, one activation
constexpr int64_t kMaxReceptive = 65793;            // R S C: int32 accumulators cannot overflow
constexpr uint32_t kMaxString = 1 << 20;
constexpr uint32_t kMaxCount = 1 << 16;  // metadata entries, ops
constexpr size_t kHeaderSize = 32;

uint32_t crc32_of(std::string_view s) {
  uLong crc = crc32(0L, Z_NULL, 0);
  size_t done = 0;
  while (done < s.size()) {
    const uInt chunk = uInt(std::min<size_t>(s.size() - done, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(s.data() + done), chunk);
    done += chunk;
  }
  return uint32_t(crc);
}

// ---- writing ----
struct Writer {
  std::string b;
  template <class T>
  void pod(T v) {
    char buf[sizeof(T)];
    std::memcpy(buf, &v, sizeof(T));
    b.append(buf, sizeof(T));
  }
  void str(const std::string& s) {
    pod(uint32_t(s.size()));
    b += s;
  }
  void f64s(const std::vector<double>& v) {
    for (double x : v) pod(x);
  }
};

// ---- reading: every read checks the bytes are there first ----
struct Reader {
  std::string_view d;
  size_t pos = 0;
  const std::string& file;
  std::string what;  // "op 3 (conv 'conv2')" for messages

  size_t left() const { return d.size() - pos; }
  void need(size_t n, const char* item) const {
    LOWBIT_CHECK(n <= left(), file, ": truncated: ", what, (what.empty() ? "" : ": "), item, " needs ", n, " bytes, ",
                 left(), " left");
  }
  template <class T>
  T pod(const char* item) {
    need(sizeof(T), item);
    T v;
    std::memcpy(&v, d.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string str(const char* item) {
    const uint32_t n = pod<uint32_t>(item);
    LOWBIT_CHECK(n <= kMaxString, file, ": ", what, (what.empty() ? "" : ": "), item, " length ", n,
                 " is beyond the limit ", kMaxString);
    need(n, item);
    std::string s(d.substr(pos, n));
    pos += n;
    return s;
  }
  int64_t dim(const char* item, int64_t lo = 1, int64_t hi = kMaxDim) {
    const uint32_t v = pod<uint32_t>(item);
    LOWBIT_CHECK(int64_t(v) >= lo && int64_t(v) <= hi, file, ": ", what, ": ", item, " = ", v, " is outside [", lo,
                 ", ", hi, "]");
    return int64_t(v);
  }
  std::vector<double> f64s(int64_t n, const char* item) {
    need(size_t(n) * 8, item);  // n is bounded by the caller's checks
    std::vector<double> v(static_cast<size_t>(n));
    std::memcpy(v.data(), d.data() + pos, size_t(n) * 8);
    pos += size_t(n) * 8;
    return v;
  }
};

int64_t coding_min(int32_t bits, WeightCoding c) {
  return c == WeightCoding::odd ? -((int64_t(1) << bits) - 1) : -(int64_t(1) << (bits - 1));
}
int64_t coding_max(int32_t bits, WeightCoding c) {
  return std::min<int64_t>(c == WeightCoding::odd ? (int64_t(1) << bits) - 1 : (int64_t(1) << (bits - 1)) - 1,
                           kMaxWideWeight);
}

std::string op_label(size_t i, const Op& op) {
  std::string s = detail::concat("op ", i, " (", op_kind_name(op.kind));
  if (op.kind == OpKind::conv || op.kind == OpKind::linear) s += " '" + op.layer.name + "'";
  return s + ")";
}

void check_values(const std::vector<double>& v, int64_t n, const std::string& file, const std::string& what,
                  const char* item) {
  LOWBIT_CHECK(int64_t(v.size()) == n, file, ": ", what, ": ", item, " has ", v.size(), " values, expected ", n);
  for (size_t i = 0; i < v.size(); ++i)
    LOWBIT_CHECK(std::isfinite(v[i]), file, ": ", what, ": ", item, "[", i, "] is not finite");
}

}  // namespace

const char* op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::input: return "input";
    case OpKind::conv: return "conv";
    case OpKind::linear: return "linear";
    case OpKind::max_pool: return "max_pool";
    case OpKind::flatten: return "flatten";
    case OpKind::dequantize: return "dequantize";
    case OpKind::sum_pool: return "sum_pool";
    case OpKind::shortcut: return "shortcut";
  }
  return "unknown";
}

const char* storage_name(WeightStorage s) {
  switch (s) {
    case WeightStorage::packed: return "packed";
    case WeightStorage::huffman: return "huffman";
    case WeightStorage::huffman_rle: return "huffman-rle";
  }
  return "unknown";
}

bool WeightOp::wide() const {
  return std::any_of(weights.begin(), weights.end(), [](int16_t w) { return w < -128 || w > 127; });
}

int64_t Model::classes() const {
  return !ops.empty() && ops.back().kind == OpKind::dequantize ? int64_t(ops.back().dequant.scale.size()) : 0;
}

std::vector<ActShape> validate(const Model& m, const std::string& file) {
  LOWBIT_CHECK(m.ops.size() >= 3, file, ": a model needs an input, a weight layer and a dequantize op; it has ",
               m.ops.size(), " ops");
  LOWBIT_CHECK(m.ops.size() <= kMaxCount, file, ": ", m.ops.size(), " ops (limit ", kMaxCount, ")");
  std::vector<ActShape> shapes;
  // Per op: read as a residual (its accumulators then must fit int32 exactly).
  std::vector<bool> residual_source(m.ops.size(), false);
  for (const Op& op : m.ops)
    if ((op.kind == OpKind::conv || op.kind == OpKind::linear) && op.layer.residual >= 0 &&
        size_t(op.layer.residual) < m.ops.size())
      residual_source[size_t(op.layer.residual)] = true;
  for (size_t i = 0; i < m.ops.size(); ++i) {
    const Op& op = m.ops[i];
    const std::string what = op_label(i, op);
    LOWBIT_CHECK((i == 0) == (op.kind == OpKind::input), file, ": ", what,
                 i == 0 ? ": the first op must be the input" : ": an input op may only come first");
    LOWBIT_CHECK(
        (i + 1 == m.ops.size()) == (op.kind == OpKind::dequantize), file, ": ", what,
        op.kind == OpKind::dequantize ? ": dequantize must be the last op" : ": the last op must be dequantize");
    ActShape cur;  // the source's output
    if (i > 0) {
      const int32_t src = source_of(m, i);
      LOWBIT_CHECK(src >= 0 && size_t(src) < i, file, ": ", what, ": source op ", src, " is not an earlier op");
      cur = shapes[size_t(src)];
      const bool takes_acc =
          op.kind == OpKind::dequantize ||
          (op.kind == OpKind::linear && cur.type == ValueType::s32 && m.ops[size_t(src)].kind == OpKind::sum_pool);
      LOWBIT_CHECK(cur.type == ValueType::u8 || takes_acc, file, ": ", what, ": reads op ", src,
                   "'s integer accumulators, which only a residual, dequantize (or, for sum_pool, a linear) may read");
      if (op.kind != OpKind::linear && op.kind != OpKind::dequantize)
        LOWBIT_CHECK(!cur.flat, file, ": ", what, ": needs an image, op ", src, "'s output is flattened");
    }
    ActShape out = cur;
    out.type = ValueType::u8;
    switch (op.kind) {
      case OpKind::input: {
        const InputOp& in = op.input;
        LOWBIT_CHECK(op.src <= 0, file, ": ", what, ": the input op has no source");
        for (int64_t v : {in.C, in.H, in.W})
          LOWBIT_CHECK(v >= 1 && v <= kMaxDim, file, ": ", what, ": size ", v, " is outside [1, ", kMaxDim, "]");
        LOWBIT_CHECK(in.C * in.H * in.W <= kMaxElements, file, ": ", what, ": image too large");
        LOWBIT_CHECK(std::isfinite(in.scale) && in.scale > 0, file, ": ", what, ": scale must be finite and > 0");
        LOWBIT_CHECK(in.zero_point >= 0 && in.zero_point <= 255, file, ": ", what, ": zero point ", in.zero_point,
                     " is outside [0, 255]");
        LOWBIT_CHECK(in.mean.size() == in.std.size() && (in.mean.empty() || int64_t(in.mean.size()) == in.C), file,
                     ": ", what, ": mean/std must both have C = ", in.C, " values or none");
        for (size_t c = 0; c < in.mean.size(); ++c)
          LOWBIT_CHECK(std::isfinite(in.mean[c]) && std::isfinite(in.std[c]) && in.std[c] > 0, file, ": ", what,
                       ": mean/std of channel ", c, " must be finite (std > 0)");
        out = {in.H, in.W, in.C, ValueType::u8, false};
        break;
      }
      case OpKind::conv:
      case OpKind::linear: {
        const WeightOp& l = op.layer;
        const bool conv = op.kind == OpKind::conv;
        const bool after_sum = !conv && cur.type == ValueType::s32;
        for (int64_t v : {l.K, l.C, l.R, l.S, l.stride_h, l.stride_w, l.dil_h, l.dil_w, l.groups})
          LOWBIT_CHECK(v >= 1 && v <= kMaxDim, file, ": ", what, ": a size, stride, dilation or group count (", v,
                       ") is outside [1, ", kMaxDim, "]");
        LOWBIT_CHECK(l.pad_h >= 0 && l.pad_w >= 0 && l.pad_h <= kMaxDim && l.pad_w <= kMaxDim, file, ": ", what,
                     ": padding out of range");
        LOWBIT_CHECK(l.groups == 1 || (conv && l.groups == l.C && l.C == l.K), file, ": ", what, ": groups ", l.groups,
                     " must be 1 or, for a depthwise conv, C = K = ", l.C);
        if (!conv)
          LOWBIT_CHECK(l.R == 1 && l.S == 1 && l.stride_h == 1 && l.stride_w == 1 && l.pad_h == 0 && l.pad_w == 0 &&
                           l.dil_h == 1 && l.dil_w == 1 && l.pad_values.empty(),
                       file, ": ", what, ": a linear layer has no kernel, stride, padding or dilation");
        LOWBIT_CHECK(conv || cur.flat || after_sum || (cur.H == 1 && cur.W == 1), file, ": ", what,
                     ": a linear needs a flattened input (flatten or sum_pool first)");
        const int64_t in_c = conv ? cur.C : cur.H * cur.W * cur.C;
        LOWBIT_CHECK(l.C == in_c, file, ": ", what, ": takes ", l.C, " input channels/features, its input has ", in_c);
        const int64_t receptive = l.R * l.S * (l.C / l.groups);
        LOWBIT_CHECK(receptive <= kMaxReceptive, file, ": ", what, ": R S C = ", receptive, " exceeds ", kMaxReceptive,
                     " (int32 accumulators)");
        LOWBIT_CHECK(l.numel() <= kMaxElements, file, ": ", what, ": too many weights");
        LOWBIT_CHECK(l.in_zero_point >= 0 && l.in_zero_point <= 255, file, ": ", what, ": input zero point ",
                     l.in_zero_point, " is outside [0, 255]");
        LOWBIT_CHECK(l.pad_values.empty() || int64_t(l.pad_values.size()) == l.C, file, ": ", what, ": has ",
                     l.pad_values.size(), " padding values, expected none or C = ", l.C);
        for (double v : l.pad_values)
          LOWBIT_CHECK(v >= 0 && v <= 255, file, ": ", what, ": padding value ", v, " is outside [0, 255]");
        LOWBIT_CHECK(l.bits >= 1 && l.bits <= 16, file, ": ", what, ": bits ", l.bits, " is outside [1, 16]");
        LOWBIT_CHECK(l.coding == WeightCoding::twos_complement || l.coding == WeightCoding::odd, file, ": ", what,
                     ": unknown weight coding ", int(l.coding));
        LOWBIT_CHECK(l.coding != WeightCoding::odd || l.bits <= 15, file, ": ", what,
                     ": odd coding at 16 bits is beyond the engine's 16-bit weights");
        LOWBIT_CHECK(l.coding != WeightCoding::twos_complement || l.bits >= 2, file, ": ", what,
                     ": two's complement needs >= 2 bits (1 bit: the odd coding, -1/+1)");
        LOWBIT_CHECK(l.storage == WeightStorage::packed || l.storage == WeightStorage::huffman ||
                         l.storage == WeightStorage::huffman_rle,
                     file, ": ", what, ": unknown weight storage ", int(l.storage));
        LOWBIT_CHECK(l.storage != WeightStorage::huffman_rle || zero_field(l.bits, l.coding) >= 0, file, ": ", what,
                     ": huffman-rle storage needs a coding with a zero weight (the odd coding has none)");
        LOWBIT_CHECK(l.out_qmax >= 0 && l.out_qmax <= 255, file, ": ", what, ": out_qmax ", l.out_qmax,
                     " is outside [0, 255]");
        LOWBIT_CHECK(!after_sum || l.out_qmax == 0, file, ": ", what,
                     ": a linear after sum_pool keeps its accumulators (out_qmax 0)");
        LOWBIT_CHECK(!l.out_signed || (l.out_qmax >= 1 && l.out_qmax <= 127), file, ": ", what,
                     ": signed output needs out_qmax in [1, 127] (codes 128 -+ out_qmax), not ", l.out_qmax);
        check_values(l.scale, l.K, file, what, "scale");
        check_values(l.offset, l.K, file, what, "offset");
        if (l.out_qmax > 0)
          for (int64_t k = 0; k < l.K; ++k)
            LOWBIT_CHECK(std::abs(l.scale[k]) * l.out_qmax < 0x1p30 && std::abs(l.offset[k]) * l.out_qmax < 0x1p59,
                         file, ": ", what, ": scale/offset of channel ", k, " beyond the requantization's range");
        LOWBIT_CHECK(int64_t(l.weights.size()) == l.numel(), file, ": ", what, ": has ", l.weights.size(),
                     " weights, expected ", l.numel());
        const int64_t lo = coding_min(l.bits, l.coding), hi = coding_max(l.bits, l.coding);
        int64_t max_abs = 0;
        for (size_t j = 0; j < l.weights.size(); ++j) {
          const int w = l.weights[j];
          LOWBIT_CHECK(w >= lo && w <= hi && (l.coding != WeightCoding::odd || (w & 1)), file, ": ", what, ": weight ",
                       j, " = ", w, " is not a ", l.bits, "-bit ",
                       l.coding == WeightCoding::odd ? "odd" : "two's complement", " value (at most ", kMaxWideWeight,
                       ")");
          max_abs = std::max<int64_t>(max_abs, std::abs(w));
        }
        if (conv) {
          LOWBIT_CHECK(cur.H + 2 * l.pad_h >= l.dil_h * (l.R - 1) + 1 && cur.W + 2 * l.pad_w >= l.dil_w * (l.S - 1) + 1,
                       file, ": ", what, ": the kernel is larger than the padded ", cur.H, "x", cur.W, " input");
          // The padded input is an activation too (the fast kernels pad a copy); this also keeps the
          // output's size product below from overflowing.
          LOWBIT_CHECK((cur.H + 2 * l.pad_h) * (cur.W + 2 * l.pad_w) <= kMaxElements / cur.C, file, ": ", what,
                       ": the padded input ", cur.H + 2 * l.pad_h, "x", cur.W + 2 * l.pad_w, "x", cur.C, " exceeds ",
                       kMaxElements, " elements");
          out.H = (cur.H + 2 * l.pad_h - l.dil_h * (l.R - 1) - 1) / l.stride_h + 1;
          out.W = (cur.W + 2 * l.pad_w - l.dil_w * (l.S - 1) - 1) / l.stride_w + 1;
          out.C = l.K;
        } else {
          out = {1, 1, l.K, ValueType::u8, true};
        }
        LOWBIT_CHECK(out.H * out.W * out.C <= kMaxElements, file, ": ", what, ": output too large");
        out.type = l.out_qmax > 0 ? ValueType::u8 : after_sum ? ValueType::s64 : ValueType::s32;
        // Exact int32 accumulators where they are combined from int8 halves (a wide layer's) and
        // then read as a residual or requantized with one (fractional padding's contribution is one).
        const bool fractional_pad =
            std::any_of(l.pad_values.begin(), l.pad_values.end(), [](double v) { return v != std::nearbyint(v); });
        if ((residual_source[i] || l.residual >= 0 || fractional_pad) && max_abs > 127)
          LOWBIT_CHECK(255 * max_abs * receptive < (int64_t(1) << 31), file, ": ", what,
                       ": 255 max|w| R S C = ", 255 * max_abs * receptive,
                       " does not fit int32 (needed for a wide layer with or as a residual)");
        if (l.residual >= 0) {
          LOWBIT_CHECK(size_t(l.residual) < i && l.residual > 0, file, ": ", what, ": residual op ", l.residual,
                       " is not an earlier op");
          const ActShape& r = shapes[size_t(l.residual)];
          LOWBIT_CHECK(l.out_qmax > 0, file, ": ", what, ": a residual needs requantized output (out_qmax > 0)");
          LOWBIT_CHECK(r.type != ValueType::s64 &&
                           !(r.type == ValueType::s32 && m.ops[size_t(l.residual)].kind == OpKind::sum_pool),
                       file, ": ", what, ": residual op ", l.residual, " outputs sums, not codes or accumulators");
          LOWBIT_CHECK(r.H == out.H && r.W == out.W && r.C == out.C && r.flat == out.flat, file, ": ", what,
                       ": residual op ", l.residual, "'s output ", r.H, "x", r.W, "x", r.C, " is not the layer's ",
                       out.H, "x", out.W, "x", out.C);
          check_values(l.residual_scale, l.K, file, what, "residual_scale");
          for (int64_t k = 0; k < l.K; ++k)
            LOWBIT_CHECK(std::abs(l.residual_scale[k]) * l.out_qmax < 0x1p30, file, ": ", what,
                         ": residual_scale of channel ", k, " beyond the requantization's range");
        } else {
          LOWBIT_CHECK(l.residual == -1 && l.residual_scale.empty(), file, ": ", what, ": residual ", l.residual,
                       " with ", l.residual_scale.size(), " residual scales");
        }
        const bool fractional =
            std::any_of(l.pad_values.begin(), l.pad_values.end(), [](double v) { return v != std::nearbyint(v); });
        LOWBIT_CHECK(!fractional || (l.out_qmax > 0 && l.groups == 1 &&
                                     (l.residual < 0 || shapes[size_t(l.residual)].type == ValueType::s32)),
                     file, ": ", what,
                     ": fractional padding values need a layer with groups 1, requantized output and no residual "
                     "but accumulators");
        break;
      }
      case OpKind::max_pool: {
        const PoolOp& p = op.pool;
        for (int64_t v : {p.R, p.S, p.stride_h, p.stride_w})
          LOWBIT_CHECK(v >= 1 && v <= kMaxDim, file, ": ", what, ": window/stride ", v, " is outside [1, ", kMaxDim,
                       "]");
        LOWBIT_CHECK(p.pad_h >= 0 && p.pad_w >= 0 && 2 * p.pad_h <= p.R && 2 * p.pad_w <= p.S, file, ": ", what,
                     ": padding must be within half the window");
        LOWBIT_CHECK(cur.H + 2 * p.pad_h >= p.R && cur.W + 2 * p.pad_w >= p.S, file, ": ", what, ": window ", p.R, "x",
                     p.S, " is larger than the ", cur.H, "x", cur.W, " input");
        auto size = [&](int64_t in, int64_t k, int64_t s, int64_t pad) {
          const int64_t span = in + 2 * pad - k;
          int64_t o = (p.ceil_mode ? (span + s - 1) / s : span / s) + 1;
          if (p.ceil_mode && (o - 1) * s >= in + pad) --o;
          return o;
        };
        out.H = size(cur.H, p.R, p.stride_h, p.pad_h);
        out.W = size(cur.W, p.S, p.stride_w, p.pad_w);
        LOWBIT_CHECK(out.H * out.W * out.C <= kMaxElements, file, ": ", what, ": output too large");
        break;
      }
      case OpKind::flatten: out = {1, 1, cur.H * cur.W * cur.C, ValueType::u8, true}; break;
      case OpKind::sum_pool:
        LOWBIT_CHECK(cur.H * cur.W <= kMaxReceptive, file, ": ", what, ": ", cur.H * cur.W, " positions to sum exceed ",
                     kMaxReceptive);
        out = {1, 1, cur.C, ValueType::s32, true};
        break;
      case OpKind::shortcut: {
        const ShortcutOp& s = op.shortcut;
        for (int64_t v : {s.stride_h, s.stride_w})
          LOWBIT_CHECK(v >= 1 && v <= kMaxDim, file, ": ", what, ": stride ", v, " is outside [1, ", kMaxDim, "]");
        LOWBIT_CHECK(s.pad_lo >= 0 && s.pad_hi >= 0 && s.pad_lo <= kMaxDim && s.pad_hi <= kMaxDim, file, ": ", what,
                     ": channel padding out of range");
        LOWBIT_CHECK(s.zero_point >= 0 && s.zero_point <= 255, file, ": ", what, ": zero point ", s.zero_point,
                     " is outside [0, 255]");
        out.H = (cur.H - 1) / s.stride_h + 1, out.W = (cur.W - 1) / s.stride_w + 1;
        out.C = cur.C + s.pad_lo + s.pad_hi;
        LOWBIT_CHECK(out.H * out.W * out.C <= kMaxElements, file, ": ", what, ": output too large");
        break;
      }
      case OpKind::dequantize: {
        const int32_t src = source_of(m, i);
        const Op& s = m.ops[size_t(src)];
        LOWBIT_CHECK((s.kind == OpKind::conv || s.kind == OpKind::linear) && s.layer.out_qmax == 0, file, ": ", what,
                     ": must read a weight layer with accumulator output (out_qmax 0), not op ", src);
        LOWBIT_CHECK(cur.H == 1 && cur.W == 1, file, ": ", what, ": takes a vector, its input is ", cur.H, "x", cur.W,
                     "x", cur.C);
        check_values(op.dequant.scale, cur.C, file, what, "scale");
        check_values(op.dequant.offset, cur.C, file, what, "offset");
        out = {1, 1, cur.C, ValueType::u8, true};  // float logits (nothing reads them)
        break;
      }
      default: throw Error(detail::concat(file, ": ", what, ": unknown op kind ", int(op.kind)));
    }
    shapes.push_back(out);
  }
  return shapes;
}

std::string pack_weights(const std::vector<int16_t>& w, int32_t bits, WeightCoding coding) {
  LOWBIT_CHECK(bits >= 1 && bits <= 16, "pack_weights: bits ", bits, " is outside [1, 16]");
  const int64_t lo = coding_min(bits, coding), hi = coding_max(bits, coding);
  std::string out(static_cast<size_t>((int64_t(w.size()) * bits + 7) / 8), '\0');
  const uint32_t mask = (1u << bits) - 1;
  for (size_t i = 0; i < w.size(); ++i) {
    const int v = w[i];
    LOWBIT_CHECK(v >= lo && v <= hi && (coding != WeightCoding::odd || (v & 1)), "pack_weights: value ", v,
                 " is not representable at ", bits, " bits");
    const uint32_t u = (coding == WeightCoding::odd ? uint32_t((v + int(mask)) / 2) : uint32_t(v)) & mask;
    const uint64_t bit = uint64_t(i) * uint64_t(bits);
    for (int32_t b = 0; b < bits; ++b)
      if (u >> b & 1u) out[size_t((bit + b) / 8)] |= char(1u << ((bit + b) % 8));
  }
  return out;
}

std::vector<int16_t> unpack_weights(std::string_view packed, int64_t count, int32_t bits, WeightCoding coding) {
  LOWBIT_CHECK(bits >= 1 && bits <= 16 && count >= 0 && int64_t(packed.size()) * 8 >= count * bits,
               "unpack_weights: ", packed.size(), " bytes do not hold ", count, " values of ", bits, " bits");
  std::vector<int16_t> w(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t bit = uint64_t(i) * uint64_t(bits);
    int32_t u = 0;
    for (int32_t b = 0; b < bits; ++b) u |= ((uint8_t(packed[size_t((bit + b) / 8)]) >> ((bit + b) % 8)) & 1) << b;
    w[size_t(i)] = field_weight(uint32_t(u), bits, coding);
  }
  return w;
}

int16_t field_weight(uint32_t u, int32_t bits, WeightCoding coding) {
  const int32_t v = int32_t(u), full = (1 << bits) - 1;
  return int16_t(coding == WeightCoding::odd ? 2 * v - full : (v >= (1 << (bits - 1)) ? v - (1 << bits) : v));
}

int64_t zero_field(int32_t, WeightCoding coding) { return coding == WeightCoding::twos_complement ? 0 : -1; }

std::vector<uint32_t> weight_fields(const WeightOp& l) {
  LOWBIT_CHECK(l.bits >= 1 && l.bits <= 16, "weight_fields: bits ", l.bits, " is outside [1, 16]");
  const uint32_t mask = (1u << l.bits) - 1;
  std::vector<uint32_t> u(l.weights.size());
  for (size_t i = 0; i < u.size(); ++i) {
    const int v = l.weights[i];
    u[i] = (l.coding == WeightCoding::odd ? uint32_t((v + int(mask)) / 2) : uint32_t(v)) & mask;
  }
  return u;
}

uint32_t model_version(const Model& m) {
  uint32_t v = 2;
  for (const Op& op : m.ops)
    if (op.kind == OpKind::conv || op.kind == OpKind::linear) {
      if (op.layer.storage != WeightStorage::packed) return 4;
      if (op.layer.out_signed) v = 3;
    }
  return v;
}

std::string serialize_model(const Model& m, uint32_t version) {
  validate(m, "serialize_model");
  const uint32_t needed = model_version(m);
  if (version == 0) version = needed;
  LOWBIT_CHECK(version >= needed && version <= kModelVersion, "serialize_model: version ", version,
               " cannot hold this model (it needs ", needed, " to ", kModelVersion, ")");
  Writer p;
  p.pod(uint32_t(m.meta.size()));
  for (const auto& [key, value] : m.meta) {
    p.str(key);
    p.pod(uint8_t(value.index()));
    if (const auto* i = std::get_if<int64_t>(&value)) p.pod(*i);
    if (const auto* d = std::get_if<double>(&value)) p.pod(*d);
    if (const auto* s = std::get_if<std::string>(&value)) p.str(*s);
  }
  p.pod(uint32_t(m.ops.size()));
  for (size_t i = 0; i < m.ops.size(); ++i) {
    const Op& op = m.ops[i];
    Writer b;
    switch (op.kind) {
      case OpKind::input:
        for (int64_t v : {op.input.C, op.input.H, op.input.W}) b.pod(uint32_t(v));
        b.pod(op.input.scale);
        b.pod(int32_t(op.input.zero_point));
        b.pod(uint8_t(op.input.mean.empty() ? 0 : 1));
        b.f64s(op.input.mean);
        b.f64s(op.input.std);
        break;
      case OpKind::conv:
      case OpKind::linear: {
        const WeightOp& l = op.layer;
        b.str(l.name);
        for (int64_t v : {l.K, l.C, l.R, l.S, l.stride_h, l.stride_w, l.pad_h, l.pad_w, l.dil_h, l.dil_w, l.groups})
          b.pod(uint32_t(v));
        b.pod(int32_t(l.in_zero_point));
        b.pod(uint8_t(l.pad_values.empty() ? 0 : 1));
        b.f64s(l.pad_values);
        b.pod(int32_t(l.residual));
        b.f64s(l.residual_scale);
        b.pod(uint8_t(l.bits));
        b.pod(uint8_t(l.coding));
        b.pod(int32_t(l.out_qmax));
        if (version >= 3) b.pod(uint8_t(l.out_signed ? 1 : 0));
        b.f64s(l.scale);
        b.f64s(l.offset);
        if (version >= 4) b.pod(uint8_t(l.storage));
        const std::string stored = l.storage == WeightStorage::huffman ? huffman_encode(weight_fields(l), l.bits)
                                   : l.storage == WeightStorage::huffman_rle
                                       ? rle_encode(weight_fields(l), l.bits, uint32_t(zero_field(l.bits, l.coding)))
                                       : pack_weights(l.weights, l.bits, l.coding);
        b.pod(uint64_t(stored.size()));
        b.b += stored;
        break;
      }
      case OpKind::max_pool:
        for (int64_t v : {op.pool.R, op.pool.S, op.pool.stride_h, op.pool.stride_w, op.pool.pad_h, op.pool.pad_w})
          b.pod(uint32_t(v));
        b.pod(uint8_t(op.pool.ceil_mode ? 1 : 0));
        break;
      case OpKind::flatten:
      case OpKind::sum_pool: break;
      case OpKind::shortcut:
        for (int64_t v : {op.shortcut.stride_h, op.shortcut.stride_w, op.shortcut.pad_lo, op.shortcut.pad_hi})
          b.pod(uint32_t(v));
        b.pod(int32_t(op.shortcut.zero_point));
        break;
      case OpKind::dequantize:
        b.pod(uint32_t(op.dequant.scale.size()));
        b.f64s(op.dequant.scale);
        b.f64s(op.dequant.offset);
        break;
    }
    p.pod(uint8_t(op.kind));
    p.pod(uint32_t(i == 0 ? 0 : source_of(m, i)));
    p.pod(uint64_t(b.b.size()));
    p.b += b.b;
  }
  Writer h;
  h.b.append(kModelMagic, 8);
  h.pod(version);
  h.pod(uint32_t(0));  // flags
  h.pod(uint64_t(p.b.size()));
  h.pod(crc32_of(p.b));
  h.pod(uint32_t(0));  // reserved
  return h.b + p.b;
}

void save_model(const std::string& path, const Model& m) { write_file_atomic(path, serialize_model(m)); }

Model parse_model(std::string_view data, const std::string& file) {
  LOWBIT_CHECK(data.size() >= kHeaderSize, file, ": truncated: ", data.size(), " bytes, shorter than the ", kHeaderSize,
               "-byte header of a .lbq model file");
  LOWBIT_CHECK(std::memcmp(data.data(), kModelMagic, 8) == 0, file,
               ": bad magic: not a lowbit integer model (.lbq) file");
  Reader h{data, 8, file, "header"};
  const uint32_t version = h.pod<uint32_t>("version");
  LOWBIT_CHECK(version >= kModelMinVersion && version <= kModelVersion, file, ": unsupported version ", version,
               " (this reader reads versions ", kModelMinVersion, " to ", kModelVersion, ")");
  const uint32_t flags = h.pod<uint32_t>("flags");
  LOWBIT_CHECK(flags == 0, file, ": unknown flags ", flags);
  const uint64_t size = h.pod<uint64_t>("payload size");
  const uint32_t crc = h.pod<uint32_t>("checksum");
  h.pod<uint32_t>("reserved");
  LOWBIT_CHECK(
      size == data.size() - kHeaderSize, file,
      size > data.size() - kHeaderSize ? ": truncated: the header declares " : ": trailing bytes: the header declares ",
      size, " payload bytes, the file has ", data.size() - kHeaderSize);
  const std::string_view payload = data.substr(kHeaderSize);
  LOWBIT_CHECK(crc32_of(payload) == crc, file, ": checksum mismatch (the file is corrupt)");

  Model m;
  Reader r{payload, 0, file, "metadata"};
  const uint32_t nmeta = r.pod<uint32_t>("entry count");
  LOWBIT_CHECK(nmeta <= kMaxCount, file, ": ", nmeta, " metadata entries (limit ", kMaxCount, ")");
  for (uint32_t i = 0; i < nmeta; ++i) {
    std::string key = r.str("key");
    const uint8_t type = r.pod<uint8_t>("type");
    LOWBIT_CHECK(type <= 2, file, ": metadata '", key, "': unknown type ", int(type));
    MetaValue v;
    if (type == 0) v = r.pod<int64_t>("int64 value");
    if (type == 1) v = r.pod<double>("double value");
    if (type == 2) v = r.str("string value");
    LOWBIT_CHECK(m.meta.emplace(key, v).second, file, ": duplicate metadata key '", key, "'");
  }
  r.what = "op table";
  const uint32_t nops = r.pod<uint32_t>("op count");
  LOWBIT_CHECK(nops >= 1 && nops <= kMaxCount, file, ": op count ", nops, " is outside [1, ", kMaxCount, "]");
  for (uint32_t i = 0; i < nops; ++i) {
    r.what = detail::concat("op ", i);
    Op op;
    const uint8_t kind = r.pod<uint8_t>("kind");
    LOWBIT_CHECK(kind >= 1 && kind <= 8, file, ": op ", i, ": unknown kind ", int(kind));
    op.kind = OpKind(kind);
    const uint32_t src = r.pod<uint32_t>("source");
    LOWBIT_CHECK(i == 0 ? src == 0 : src < i, file, ": op ", i, " (", op_kind_name(op.kind), "): source ", src,
                 i == 0 ? " must be 0" : " is not an earlier op");
    op.src = i == 0 ? -1 : int32_t(src);
    const uint64_t len = r.pod<uint64_t>("body size");
    r.need(len, "body");
    Reader b{r.d.substr(r.pos, len), 0, file, detail::concat("op ", i, " (", op_kind_name(op.kind), ")")};
    r.pos += len;
    switch (op.kind) {
      case OpKind::input: {
        InputOp& in = op.input;
        in.C = b.dim("C"), in.H = b.dim("H"), in.W = b.dim("W");
        in.scale = b.pod<double>("scale");
        in.zero_point = b.pod<int32_t>("zero point");
        const uint8_t norm = b.pod<uint8_t>("normalization flag");
        LOWBIT_CHECK(norm <= 1, file, ": ", b.what, ": normalization flag ", int(norm), " is not 0 or 1");
        if (norm) in.mean = b.f64s(in.C, "mean"), in.std = b.f64s(in.C, "std");
        break;
      }
      case OpKind::conv:
      case OpKind::linear: {
        WeightOp& l = op.layer;
        l.name = b.str("name");
        b.what += " '" + l.name + "'";
        l.K = b.dim("K"), l.C = b.dim("C"), l.R = b.dim("R"), l.S = b.dim("S");
        l.stride_h = b.dim("stride_h"), l.stride_w = b.dim("stride_w");
        l.pad_h = b.dim("pad_h", 0), l.pad_w = b.dim("pad_w", 0);
        l.dil_h = b.dim("dil_h"), l.dil_w = b.dim("dil_w");
        l.groups = b.dim("groups");
        l.in_zero_point = b.pod<int32_t>("input zero point");
        const uint8_t has_pad = b.pod<uint8_t>("padding values flag");
        LOWBIT_CHECK(has_pad <= 1, file, ": ", b.what, ": padding values flag ", int(has_pad), " is not 0 or 1");
        if (has_pad) l.pad_values = b.f64s(l.C, "padding values");
        l.residual = b.pod<int32_t>("residual");
        LOWBIT_CHECK(l.residual >= -1 && l.residual < int32_t(i), file, ": ", b.what, ": residual ", l.residual,
                     " is not -1 or an earlier op");
        if (l.residual >= 0) l.residual_scale = b.f64s(l.K, "residual_scale");
        l.bits = b.pod<uint8_t>("bits");
        LOWBIT_CHECK(l.bits >= 1 && l.bits <= 16, file, ": ", b.what, ": bits ", l.bits, " is outside [1, 16]");
        const uint8_t coding = b.pod<uint8_t>("coding");
        LOWBIT_CHECK(coding <= 1, file, ": ", b.what, ": unknown weight coding ", int(coding));
        l.coding = WeightCoding(coding);
        l.out_qmax = b.pod<int32_t>("out_qmax");
        if (version >= 3) {
          const uint8_t sign = b.pod<uint8_t>("out_signed");
          LOWBIT_CHECK(sign <= 1, file, ": ", b.what, ": out_signed ", int(sign), " is not 0 or 1");
          l.out_signed = sign == 1;
        }
        l.scale = b.f64s(l.K, "scale");
        l.offset = b.f64s(l.K, "offset");
        LOWBIT_CHECK(l.groups == 1 || l.groups == l.C, file, ": ", b.what, ": groups ", l.groups,
                     " must be 1 or C = ", l.C);
        LOWBIT_CHECK(l.numel() <= kMaxElements, file, ": ", b.what, ": ", l.numel(), " weights (limit ", kMaxElements,
                     ")");
        if (version >= 4) {
          const uint8_t storage = b.pod<uint8_t>("weight storage");
          LOWBIT_CHECK(storage <= 2, file, ": ", b.what, ": unknown weight storage ", int(storage),
                       " (0 packed, 1 huffman, 2 huffman-rle)");
          l.storage = WeightStorage(storage);
        }
        const int64_t zero = zero_field(l.bits, l.coding);
        LOWBIT_CHECK(l.storage != WeightStorage::huffman_rle || zero >= 0, file, ": ", b.what,
                     ": huffman-rle weights need a coding with a zero weight (coding ", int(l.coding), " has none)");
        if (l.storage != WeightStorage::packed) {
          const uint64_t coded = b.pod<uint64_t>("coded size");
          b.need(coded, "coded weights");
          const std::string what = detail::concat(file, ": ", b.what);
          const std::vector<uint32_t> u =
              l.storage == WeightStorage::huffman
                  ? huffman_decode(b.d.substr(b.pos, coded), l.numel(), l.bits, what)
                  : rle_decode(b.d.substr(b.pos, coded), l.numel(), l.bits, uint32_t(zero), what);
          l.weights.resize(u.size());
          for (size_t j = 0; j < u.size(); ++j) l.weights[j] = field_weight(u[j], l.bits, l.coding);
          b.pos += coded;
          break;
        }
        const uint64_t packed = b.pod<uint64_t>("packed size");
        const uint64_t expect = uint64_t((l.numel() * l.bits + 7) / 8);
        LOWBIT_CHECK(packed == expect, file, ": ", b.what, ": ", packed, " bytes of packed weights, expected ", expect,
                     " (", l.numel(), " weights at ", l.bits, " bits)");
        b.need(packed, "packed weights");
        l.weights = unpack_weights(b.d.substr(b.pos, packed), l.numel(), l.bits, l.coding);
        b.pos += packed;
        break;
      }
      case OpKind::max_pool: {
        PoolOp& p = op.pool;
        p.R = b.dim("R"), p.S = b.dim("S"), p.stride_h = b.dim("stride_h"), p.stride_w = b.dim("stride_w");
        p.pad_h = b.dim("pad_h", 0), p.pad_w = b.dim("pad_w", 0);
        const uint8_t ceil = b.pod<uint8_t>("ceil_mode");
        LOWBIT_CHECK(ceil <= 1, file, ": ", b.what, ": ceil_mode ", int(ceil), " is not 0 or 1");
        p.ceil_mode = ceil == 1;
        break;
      }
      case OpKind::flatten:
      case OpKind::sum_pool: break;
      case OpKind::shortcut: {
        ShortcutOp& sc = op.shortcut;
        sc.stride_h = b.dim("stride_h"), sc.stride_w = b.dim("stride_w");
        sc.pad_lo = b.dim("pad_lo", 0), sc.pad_hi = b.dim("pad_hi", 0);
        sc.zero_point = b.pod<int32_t>("zero point");
        break;
      }
      case OpKind::dequantize: {
        const int64_t f = b.dim("F", 1, kMaxElements);
        op.dequant.scale = b.f64s(f, "scale");
        op.dequant.offset = b.f64s(f, "offset");
        break;
      }
    }
    LOWBIT_CHECK(b.left() == 0, file, ": ", b.what, ": ", b.left(), " bytes left over in its body");
    m.ops.push_back(std::move(op));
  }
  LOWBIT_CHECK(r.left() == 0, file, ": ", r.left(), " bytes after the last op");
  validate(m, file);
  return m;
}

Model load_model(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LOWBIT_CHECK(f.good(), path, ": cannot open the model file");
  const std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  LOWBIT_CHECK(!f.bad(), path, ": read error");
  return parse_model(data, path);
}

}  // namespace lowbit::deploy
