// lowbit_runtime.h: a self-contained reader and integer-only engine for lowbit's integer model files
// (.lbq versions 2 to 4, docs/format.md; 4: Huffman-coded weights, plain or with zero runs). C++17 and its standard
// library only: copy this one file into a project. It is also the readable reference of the format: plain loops, one
// image at a time.
//
// Contract
//   Model::load(path), Model::from_memory(data, size [, source = "memory"])
//       parse a .lbq byte image, checking everything docs/format.md lists before allocating what a
//       record declares: size, magic, version (2 to 4), flags, the payload's CRC-32, every op's fields and
//       ranges, the graph (input first, dequantize last, earlier sources and residuals, shapes that
//       chain, residual shapes and types, the requantization's ranges). A defect throws
//       std::runtime_error("SOURCE: defect"), SOURCE the path or the source name given.
//   run(images, n)      n images of height() x width() x channels() uint8 pixels (NHWC, the data
//                       set's bytes) -> the n x classes() float logits, row-major.
//   predict(images, n)  the arg-max class of each image (ties: the lower class).
// Everything between pixels and logits is integer (uint8 codes, signed codes as uint8 128 + q, integer
// weights, exact accumulators
// held in int64, requantization by integer multiplier, offset and shift), with the constants and
// rounding of lowbit's engine (core/kernels/requant.cpp, deploy/engine.cpp): the logits, fma(scale,
// acc, offset) in double rounded to float, equal lowbit's bit for bit. A loaded Model is immutable:
// run may be called from several threads at once. Embedding and tests: docs/embedding.md.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace lowbit_runtime {

enum class OpKind : uint8_t { input = 1, conv, linear, max_pool, flatten, dequantize, sum_pool, shortcut };
enum class Type : uint8_t { u8, s32, s64 };  // an op's output: codes, int32 or int64 accumulators

// An op's output shape [H][W][C] ({1, 1, F} for a vector).
struct Shape {
  int64_t H = 1, W = 1, C = 1;
  Type type = Type::u8;
  bool flat = false;  // a vector from flatten, linear or sum_pool
};

// One op: the fields of its body (docs/format.md, "Op bodies"), then what the reader derives.
struct Op {
  OpKind kind = OpKind::input;
  int src = 0;                         // the op whose output this one reads
  std::string name;                    // conv, linear
  int64_t K = 1, C = 1, R = 1, S = 1;  // conv, linear (K outputs, C inputs); max_pool: R x S window
  int64_t stride_h = 1, stride_w = 1;  // conv, max_pool, shortcut
  int64_t pad_h = 0, pad_w = 0;        // conv, max_pool
  int64_t dil_h = 1, dil_w = 1;        // conv
  int64_t groups = 1;                  // conv: 1, or C = K (depthwise)
  int in_zero_point = 0;               // conv: the padding value ...
  std::vector<double> pad_values;      // ... unless given per input channel ([C] in [0, 255], fractional allowed)
  int residual = -1;                   // conv, linear: the op added before requantization (-1: none)
  std::vector<double> residual_scale;  // [K]
  int bits = 0, coding = 0;            // stored weight bits; 0 two's complement, 1 odd
  int out_qmax = 0;                    // > 0: requantize to codes 0..out_qmax; 0: keep the accumulators
  bool out_signed = false;             // version 3: codes 128 + round(clip(y, -1, 1) out_qmax), out_qmax <= 127
  std::vector<double> scale, offset;   // conv, linear: [K]; dequantize: [F]
  std::vector<int16_t> weights;        // decoded: [K][R][S][C/groups] (linear: [K][C])
  bool ceil_mode = false;              // max_pool
  int64_t pad_lo = 0, pad_hi = 0;      // shortcut: channels added below / above
  int zero_point = 0;                  // input, shortcut
  double input_scale = 0;              // input: real value of a pixel code (1/255)
  std::vector<double> mean, std;       // input: the normalization folded into the first layer (info)
  // Derived by the reader.
  Shape out;                                  // the output shape
  bool hi_lo = false;                         // requantized from int8 halves (below)
  std::vector<int16_t> w_hi, w_lo;            // hi_lo: w = 256 hi + lo, both in [-128, 127]
  std::vector<int64_t> pad_codes;             // [C] the input's padding codes: round(pad_values) or in_zero_point
  std::vector<int64_t> correction;            // fractional padding: sum w (v - round(v)) per output, fixed point
  std::vector<int64_t> mult, res_mult, bias;  // [K] requantization: m_c, m'_c, B_c
  std::vector<int> shift;                     // [K] S_c
};

namespace detail {

// Throws std::runtime_error("SOURCE: a...") unless ok.
template <class... A>
void check(bool ok, const std::string& source, const A&... a) {
  if (ok) return;
  std::ostringstream s;
  s << source << ": ";
  (s << ... << a);
  throw std::runtime_error(s.str());
}

// zlib's CRC-32 (reflected polynomial 0xEDB88320, initial and final value 0xFFFFFFFF).
inline uint32_t crc32(const unsigned char* p, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

inline bool fractional_padding(const Op& op) {
  return std::any_of(op.pad_values.begin(), op.pad_values.end(), [](double v) { return v != std::nearbyint(v); });
}

inline const char* kind_name(OpKind k) {
  static const char* const names[] = {"input",   "conv",       "linear",   "max_pool",
                                      "flatten", "dequantize", "sum_pool", "shortcut"};
  return names[int(k) - 1];
}

constexpr int64_t kMaxDim = int64_t(1) << 20;       // any one size, stride, padding
constexpr int64_t kMaxElements = int64_t(1) << 31;  // a layer's weights, an op's output per image
constexpr int64_t kMaxReceptive = 65793;            // R S C/groups: |acc| <= 255 128 R S C fits int32
constexpr int64_t kMaxCount = int64_t(1) << 16;     // metadata entries, ops
constexpr int64_t kMaxWide = 32639;                 // 127 256 + 127: the largest two-int8 weight

// Little-endian fields; every read checks that the bytes are there first.
struct Reader {
  const unsigned char* p;
  uint64_t size, pos;
  const std::string& source;
  std::string what;  // "op 3 (conv 'conv2')": where we are, for messages

  void need(uint64_t n, const char* item) const {
    check(n <= size - pos, source, "truncated: ", what, ": ", item, " needs ", n, " bytes, ", size - pos, " left");
  }
  uint64_t uint(int bytes, const char* item) {
    need(uint64_t(bytes), item);
    uint64_t v = 0;
    for (int b = 0; b < bytes; ++b) v |= uint64_t(p[pos + uint64_t(b)]) << (8 * b);
    pos += uint64_t(bytes);
    return v;
  }
  uint8_t u8(const char* item) { return uint8_t(uint(1, item)); }
  uint32_t u32(const char* item) { return uint32_t(uint(4, item)); }
  uint64_t u64(const char* item) { return uint(8, item); }
  int64_t sint(int bytes, const char* item) {  // two's complement
    const uint64_t v = uint(bytes, item), sign = uint64_t(1) << (8 * bytes - 1);
    return v & sign ? -int64_t(~v & (sign - 1)) - 1 : int64_t(v);
  }
  int64_t s32(const char* item) { return sint(4, item); }
  double f64(const char* item) {
    const uint64_t v = u64(item);
    double d;
    std::memcpy(&d, &v, 8);
    return d;
  }
  int64_t dim(const char* item, int64_t lo = 1, int64_t hi = kMaxDim) {
    const int64_t v = int64_t(u32(item));
    check(v >= lo && v <= hi, source, what, ": ", item, " = ", v, " is outside [", lo, ", ", hi, "]");
    return v;
  }
  std::string str(const char* item) {
    const uint32_t n = u32(item);
    check(n <= (1u << 20), source, what, ": ", item, " length ", n, " is beyond the limit 1048576");
    need(n, item);
    std::string s(reinterpret_cast<const char*>(p + pos), n);
    pos += n;
    return s;
  }
  std::vector<double> f64s(int64_t n, const char* item) {
    need(uint64_t(n) * 8, item);  // n <= 2^31 by the caller
    std::vector<double> v(static_cast<size_t>(n));
    for (double& x : v) x = f64(item);
    return v;
  }
};

// core/kernels/requant.cpp's requantization_from_double: the largest shift s <= 52 at which
// nearbyint(|x| 2^s) <= limit.
inline int max_shift(double x, double limit) {
  if (x == 0) return 52;
  int e = 0;
  std::frexp(std::fabs(x), &e);  // |x| = f 2^e, f in [0.5, 1)
  int s = std::min(52, int(std::log2(limit + 1)) - e);
  while (std::nearbyint(std::ldexp(std::fabs(x), s)) > limit) --s;
  return s;
}

// code = clamp(round_half_even((a m_k + b m'_k + B_k) / 2^S_k), 0, qmax): docs/format.md (1) in
// integers; signed output (1s): B_k holds 128 2^S_k and the clamp is [128 - qmax, 128 + qmax]. a, b are
// the accumulator and the residual, or a wide layer's acc_hi and acc_lo.
inline int64_t requantize(const Op& op, int64_t k, int64_t a, int64_t b) {
  constexpr int64_t limit = int64_t(1) << 62;
  // |a m| < 2^62 and |b m'| < 2^62. Clamping their sum to +-2^62 before adding |B| <= 2^61 cannot
  // change the code (a clamped sum is beyond +-2^61 / 2^52 codes either way) and keeps int64 exact.
  const int64_t u = std::clamp(a * op.mult[size_t(k)] + b * op.res_mult[size_t(k)], -limit, limit) + op.bias[size_t(k)];
  const int64_t unit = int64_t(1) << op.shift[size_t(k)];
  int64_t q = u >= 0 ? u / unit : -((-u + unit - 1) / unit);     // floor(u / 2^S)
  const int64_t frac = u - q * unit;                             // in [0, 2^S)
  if (2 * frac > unit || (2 * frac == unit && q % 2 != 0)) ++q;  // half to even
  return op.out_signed ? std::clamp<int64_t>(q, 128 - op.out_qmax, 128 + op.out_qmax)
                       : std::clamp<int64_t>(q, 0, op.out_qmax);
}

// The k-bit fields of a Huffman-coded weight body (version 4, docs/format.md "Huffman-coded
// weights"): u32 n; n entries {u16 symbol, u8 length}, symbols increasing, lengths 1..24 forming a
// complete code (n = 1: length 1); then the canonical code of each field, most significant bit first,
// stream bit t being bit 7 - t % 8 of byte t / 8, zero-padded to a byte. Reads exactly `size` bytes.
inline std::vector<uint32_t> huffman_fields(Reader& b, uint64_t size, int64_t count, int bits) {
  const std::string where = b.what + ": huffman weights: ";
  Reader t{b.p + b.pos, size, 0, b.source, b.what + ": huffman weights"};
  const uint32_t n = t.u32("table size");
  const uint64_t max_n = std::min<uint64_t>(uint64_t(1) << bits, uint64_t(count));
  check(n >= 1 && n <= max_n, b.source, where, "table size ", n, " is outside [1, ", max_n, "]");
  t.need(3 * uint64_t(n), "table");
  std::vector<uint32_t> symbol(n), per_length(25, 0);
  std::vector<int> length(n);
  uint64_t kraft = 0;  // sum of 2^(24 - length); a complete code: 2^24
  for (uint32_t i = 0; i < n; ++i) {
    symbol[i] = uint32_t(t.uint(2, "symbol")), length[i] = t.u8("length");
    check(symbol[i] < (uint32_t(1) << bits) && (i == 0 || symbol[i] > symbol[i - 1]), b.source, where, "table entry ",
          i, ": symbol ", symbol[i], " does not fit ", bits, " bits or is not above the previous one");
    check(n == 1 ? length[i] == 1 : length[i] >= 1 && length[i] <= 24, b.source, where, "table entry ", i,
          ": code length ", length[i], " is outside [1, 24] (1 for the only symbol)");
    ++per_length[size_t(length[i])], kraft += uint64_t(1) << (24 - length[i]);
  }
  check(n == 1 || kraft == (uint64_t(1) << 24), b.source, where, "the code lengths do not form a complete prefix code");
  const uint64_t stream = size - t.pos, bits_in = 8 * stream;
  check(uint64_t(count) <= bits_in, b.source, where, "truncated: ", count, " fields need at least ", (count + 7) / 8,
        " stream bytes, the body has ", stream);
  // Canonical code: symbols ordered by (length, symbol); codes of a length consecutive, after the
  // shorter ones: first[l] = (first[l - 1] + per_length[l - 1]) << 1.
  std::vector<uint32_t> sorted;
  for (int l = 1; l <= 24; ++l)
    for (uint32_t i = 0; i < n; ++i)
      if (length[i] == l) sorted.push_back(symbol[i]);
  std::array<int64_t, 25> first{}, index{};
  int64_t code = 0, at = 0, longest = 0;
  for (int l = 1; l <= 24; ++l) {
    code = (code + per_length[size_t(l - 1)]) << 1;
    first[size_t(l)] = code, index[size_t(l)] = at, at += per_length[size_t(l)];
    if (per_length[size_t(l)]) longest = l;
  }
  std::vector<uint32_t> u(static_cast<size_t>(count));
  uint64_t bit = 0;
  const unsigned char* s = t.p + t.pos;
  for (int64_t j = 0; j < count; ++j) {
    int64_t c = 0;
    for (int l = 1;; ++l) {
      check(bit < bits_in, b.source, where, "truncated: the stream ends in field ", j, " of ", count);
      c = c << 1 | ((s[bit / 8] >> (7 - bit % 8)) & 1), ++bit;
      if (c >= first[size_t(l)] && c - first[size_t(l)] < int64_t(per_length[size_t(l)])) {
        u[size_t(j)] = sorted[size_t(index[size_t(l)] + c - first[size_t(l)])];
        break;
      }
      check(l < longest, b.source, where, "field ", j, ": no code matches the stream");
    }
  }
  check((bit + 7) / 8 == stream, b.source, where, "trailing bytes: the fields take ", (bit + 7) / 8,
        " stream bytes, the body has ", stream);
  check(bit % 8 == 0 || (s[stream - 1] & (0xffu >> (bit % 8))) == 0, b.source, where,
        "the last stream byte's unused low bits are not 0");
  b.pos += size;
  return u;
}

// The k-bit fields of a zero run-length + Huffman-coded body (version 4, storage 2, docs/format.md
// "Run-length Huffman-coded weights"): u32 n; n entries {u32 symbol, u8 length}, symbols increasing,
// each a field u < 2^bits other than `zero` or a run class 2^bits + j with 2^j <= count, lengths as
// huffman_fields'; then the canonical code of each symbol, a run class followed by j extra bits e
// (MSB first) coding a run of 2^j + e zero fields. The whole stream is checked (pass 1) before the
// count fields are allocated (pass 2). Reads exactly `size` bytes.
inline std::vector<uint32_t> rle_fields(Reader& b, uint64_t size, int64_t count, int bits, uint32_t zero) {
  const std::string where = b.what + ": huffman-rle weights: ";
  Reader t{b.p + b.pos, size, 0, b.source, b.what + ": huffman-rle weights"};
  const uint32_t n = t.u32("table size");
  const uint64_t run0 = uint64_t(1) << bits;
  int max_run = 0;  // the largest j with 2^j <= count
  while ((int64_t(2) << max_run) <= count) ++max_run;
  const uint64_t max_n = std::min<uint64_t>(run0 + uint64_t(max_run), uint64_t(count));
  check(n >= 1 && n <= max_n, b.source, where, "table size ", n, " is outside [1, ", max_n, "]");
  t.need(5 * uint64_t(n), "table");
  std::vector<uint32_t> symbol(n), per_length(25, 0);
  std::vector<int> length(n);
  uint64_t kraft = 0;
  for (uint32_t i = 0; i < n; ++i) {
    symbol[i] = t.u32("symbol"), length[i] = t.u8("length");
    check(symbol[i] != zero && (symbol[i] < run0 || symbol[i] - run0 <= uint64_t(max_run)) &&
              (i == 0 || symbol[i] > symbol[i - 1]),
          b.source, where, "table entry ", i, ": symbol ", symbol[i],
          " is the zero field, beyond the alphabet or not above the previous one");
    check(n == 1 ? length[i] == 1 : length[i] >= 1 && length[i] <= 24, b.source, where, "table entry ", i,
          ": code length ", length[i], " is outside [1, 24] (1 for the only symbol)");
    ++per_length[size_t(length[i])], kraft += uint64_t(1) << (24 - length[i]);
  }
  check(n == 1 || kraft == (uint64_t(1) << 24), b.source, where, "the code lengths do not form a complete prefix code");
  const uint64_t stream = size - t.pos, bits_in = 8 * stream;
  std::vector<uint32_t> sorted;
  for (int l = 1; l <= 24; ++l)
    for (uint32_t i = 0; i < n; ++i)
      if (length[i] == l) sorted.push_back(symbol[i]);
  std::array<int64_t, 25> first{}, index{};
  int64_t code = 0, at = 0, longest = 0;
  for (int l = 1; l <= 24; ++l) {
    code = (code + per_length[size_t(l - 1)]) << 1;
    first[size_t(l)] = code, index[size_t(l)] = at, at += per_length[size_t(l)];
    if (per_length[size_t(l)]) longest = l;
  }
  const unsigned char* s = t.p + t.pos;
  std::vector<uint32_t> u;
  for (int pass = 0; pass < 2; ++pass) {  // 0: check the stream; 1: decode into count fields
    if (pass == 1) u.resize(size_t(count));
    uint64_t bit = 0;
    int64_t j = 0;
    auto next = [&]() -> int64_t {
      check(bit < bits_in, b.source, where, "truncated: the stream ends in field ", j, " of ", count);
      const int64_t v = (s[bit / 8] >> (7 - bit % 8)) & 1;
      ++bit;
      return v;
    };
    while (j < count) {
      int64_t c = 0;
      uint32_t sym = 0;
      for (int l = 1;; ++l) {
        c = c << 1 | next();
        if (c >= first[size_t(l)] && c - first[size_t(l)] < int64_t(per_length[size_t(l)])) {
          sym = sorted[size_t(index[size_t(l)] + c - first[size_t(l)])];
          break;
        }
        check(l < longest, b.source, where, "field ", j, ": no code matches the stream");
      }
      if (sym < run0) {
        if (pass == 1) u[size_t(j)] = sym;
        ++j;
        continue;
      }
      int64_t run = 1;  // 2^j' + the j' extra bits
      for (uint64_t e = 0; e < sym - run0; ++e) run = run << 1 | next();
      check(run <= count - j, b.source, where, "field ", j, ": a run of ", run, " zero fields overruns the ", count,
            " fields");
      if (pass == 1) std::fill(u.begin() + j, u.begin() + j + run, zero);
      j += run;
    }
    check((bit + 7) / 8 == stream, b.source, where, "trailing bytes: the fields take ", (bit + 7) / 8,
          " stream bytes, the body has ", stream);
    check(bit % 8 == 0 || (s[stream - 1] & (0xffu >> (bit % 8))) == 0, b.source, where,
          "the last stream byte's unused low bits are not 0");
  }
  b.pos += size;
  return u;
}

}  // namespace detail

class Model {
 public:
  static Model load(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    detail::check(f.good(), path, "cannot open the model file");
    const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    detail::check(!f.bad(), path, "read error");
    return from_memory(bytes.data(), bytes.size(), path);
  }
  static Model from_memory(const unsigned char* data, size_t size, const std::string& source = "memory");

  const std::string& source() const { return source_; }
  const std::map<std::string, std::string>& metadata() const { return meta_; }  // numbers as text
  const std::vector<Op>& ops() const { return ops_; }
  int64_t height() const { return ops_.front().out.H; }
  int64_t width() const { return ops_.front().out.W; }
  int64_t channels() const { return ops_.front().out.C; }
  int64_t classes() const { return int64_t(ops_.back().scale.size()); }

  std::vector<float> run(const uint8_t* images_nhwc, int n) const;
  std::vector<int> predict(const uint8_t* images_nhwc, int n) const {
    const std::vector<float> l = run(images_nhwc, n);
    const size_t F = size_t(classes());
    std::vector<int> best;
    for (size_t i = 0; i < l.size(); i += F)
      best.push_back(int(std::max_element(l.begin() + i, l.begin() + i + F) - l.begin() - i));
    return best;
  }

 private:
  Model() = default;  // from load or from_memory only
  void read_op(detail::Reader& r, size_t i, size_t count, uint32_t version);
  void check_graph(size_t i);
  void derive(size_t i);
  std::string label(size_t i) const {  // "op 3 (conv 'conv2')"
    const Op& op = ops_[i];
    return "op " + std::to_string(i) + " (" + detail::kind_name(op.kind) +
           (op.name.empty() ? ")" : " '" + op.name + "')");
  }

  std::string source_;
  std::map<std::string, std::string> meta_;
  std::vector<Op> ops_;
};

inline Model Model::from_memory(const unsigned char* data, size_t size, const std::string& source) {
  using detail::check;
  Model m;
  m.source_ = source;
  check(size >= 32, source, "truncated: ", size, " bytes, shorter than the 32-byte header of a .lbq model file");
  check(std::memcmp(data, "LOWBITQM", 8) == 0, source, "bad magic: not a lowbit integer model (.lbq) file");
  detail::Reader h{data, 32, 8, source, "header"};
  const uint32_t version = h.u32("version");
  check(version >= 2 && version <= 4, source, "unsupported version ", version, " (this reader reads versions 2 to 4)");
  const uint32_t flags = h.u32("flags");
  check(flags == 0, source, "unknown flags ", flags);
  const uint64_t payload = h.u64("payload size");
  const uint32_t crc = h.u32("checksum");
  check(payload == size - 32, source, payload > size - 32 ? "truncated" : "trailing bytes", ": the header declares ",
        payload, " payload bytes, the file has ", size - 32);
  check(detail::crc32(data + 32, size - 32) == crc, source, "checksum mismatch (the file is corrupt)");

  detail::Reader r{data + 32, size - 32, 0, source, "metadata"};
  const uint32_t entries = r.u32("entry count");
  check(entries <= detail::kMaxCount, source, entries, " metadata entries (limit 65536)");
  for (uint32_t i = 0; i < entries; ++i) {
    const std::string key = r.str("key");
    const uint8_t type = r.u8("type");
    check(type <= 2, source, "metadata '", key, "': unknown type ", int(type));
    std::ostringstream value;  // int64, f64 (17 digits: exact) or string
    value.precision(17);
    if (type == 0) value << r.sint(8, "int64 value");
    if (type == 1) value << r.f64("double value");
    if (type == 2) value << r.str("string value");
    check(m.meta_.emplace(key, value.str()).second, source, "duplicate metadata key '", key, "'");
  }
  r.what = "op table";
  const uint32_t count = r.u32("op count");
  check(count >= 3 && count <= detail::kMaxCount, source, "op count ", count,
        " is outside [3, 65536] (an input, a weight layer and a dequantize op at least)");
  for (size_t i = 0; i < count; ++i) m.read_op(r, i, count, version);
  check(r.pos == r.size, source, r.size - r.pos, " bytes after the last op");
  for (size_t i = 1; i < count; ++i) m.derive(i);
  return m;
}

// Op i's record: kind, source, body; then its place in the graph (check_graph).
inline void Model::read_op(detail::Reader& r, size_t i, size_t count, uint32_t version) {
  using detail::check;
  r.what = "op " + std::to_string(i);
  Op op;
  const uint8_t kind = r.u8("kind");
  check(kind >= 1 && kind <= 8, source_, "op ", i, ": unknown kind ", int(kind));
  op.kind = OpKind(kind);
  const uint32_t src = r.u32("source");
  check(i == 0 ? src == 0 : src < i, source_, "op ", i, ": source ", src,
        i == 0 ? " must be 0" : " is not an earlier op");
  op.src = int(src);
  const uint64_t len = r.u64("body size");
  r.need(len, "body");
  detail::Reader b{r.p + r.pos, len, 0, source_, r.what + " (" + detail::kind_name(op.kind) + ")"};
  r.pos += len;
  auto ok = [&](bool cond, const auto&... a) { check(cond, source_, b.what, ": ", a...); };
  switch (op.kind) {
    case OpKind::input: {
      op.out.C = b.dim("C"), op.out.H = b.dim("H"), op.out.W = b.dim("W");
      op.input_scale = b.f64("scale");
      op.zero_point = int(b.s32("zero point"));
      const uint8_t norm = b.u8("normalization flag");
      ok(norm <= 1, "normalization flag ", int(norm), " is not 0 or 1");
      if (norm) op.mean = b.f64s(op.out.C, "mean"), op.std = b.f64s(op.out.C, "std");
      break;
    }
    case OpKind::conv:
    case OpKind::linear: {
      op.name = b.str("name");
      b.what += " '" + op.name + "'";
      op.K = b.dim("K"), op.C = b.dim("C"), op.R = b.dim("R"), op.S = b.dim("S");
      op.stride_h = b.dim("stride_h"), op.stride_w = b.dim("stride_w");
      op.pad_h = b.dim("pad_h", 0), op.pad_w = b.dim("pad_w", 0);
      op.dil_h = b.dim("dil_h"), op.dil_w = b.dim("dil_w");
      op.groups = b.dim("groups");
      op.in_zero_point = int(b.s32("input zero point"));
      const uint8_t has_pad = b.u8("padding values flag");
      ok(has_pad <= 1, "padding values flag ", int(has_pad), " is not 0 or 1");
      if (has_pad) op.pad_values = b.f64s(op.C, "padding values");
      op.residual = int(b.s32("residual"));
      ok(op.residual >= -1 && op.residual < int64_t(i), "residual ", op.residual, " is not -1 or an earlier op");
      if (op.residual >= 0) op.residual_scale = b.f64s(op.K, "residual_scale");
      op.bits = b.u8("bits");
      ok(op.bits >= 1 && op.bits <= 16, "bits ", op.bits, " is outside [1, 16]");
      op.coding = b.u8("coding");
      ok(op.coding <= 1, "unknown weight coding ", op.coding);
      op.out_qmax = int(b.s32("out_qmax"));
      if (version >= 3) {  // the byte version 3 adds
        const uint8_t sign = b.u8("out_signed");
        ok(sign <= 1, "out_signed ", int(sign), " is not 0 or 1");
        op.out_signed = sign == 1;
      }
      op.scale = b.f64s(op.K, "scale");
      op.offset = b.f64s(op.K, "offset");
      const bool conv = op.kind == OpKind::conv;
      ok(op.groups == 1 || (conv && op.groups == op.C && op.C == op.K), "groups ", op.groups,
         " must be 1 or, for a depthwise conv, C = K = ", op.C);
      const int64_t numel = op.K * op.R * op.S * (op.C / op.groups);
      ok(numel <= detail::kMaxElements, numel, " weights (limit 2^31)");
      // Field j: packed, bits j*bits .. j*bits + bits - 1 of the byte string, LSB first; or (version 4,
      // storage 1) Huffman-coded; or (storage 2) zero run-length + Huffman-coded, the zero field being
      // the one of weight 0 (0 in two's complement; the odd coding has none).
      const uint8_t storage = version >= 4 ? b.u8("weight storage") : 0;
      ok(storage <= 2, "unknown weight storage ", int(storage), " (0 packed, 1 huffman, 2 huffman-rle)");
      ok(storage != 2 || op.coding == 0, "huffman-rle weights need a coding with a zero weight (coding ", op.coding,
         " has none)");
      std::vector<uint32_t> fields;
      if (storage != 0) {
        const uint64_t coded = b.u64("coded size");
        b.need(coded, "coded weights");
        fields = storage == 1 ? detail::huffman_fields(b, coded, numel, op.bits)
                              : detail::rle_fields(b, coded, numel, op.bits, 0);
      } else {
        const uint64_t packed = b.u64("packed size"), expect = (uint64_t(numel) * uint64_t(op.bits) + 7) / 8;
        ok(packed == expect, packed, " bytes of packed weights, expected ", expect, " (", numel, " weights at ",
           op.bits, " bits)");
        b.need(packed, "packed weights");
        fields.resize(size_t(numel));
        for (int64_t j = 0; j < numel; ++j)
          for (int t = 0; t < op.bits; ++t) {
            const uint64_t bit = uint64_t(j) * uint64_t(op.bits) + uint64_t(t);
            fields[size_t(j)] |= uint32_t((b.p[b.pos + bit / 8] >> (bit % 8)) & 1) << t;
          }
        b.pos += packed;
      }
      const int64_t lo = op.coding ? -((int64_t(1) << op.bits) - 1) : -(int64_t(1) << (op.bits - 1));
      const int64_t hi =
          std::min(op.coding ? (int64_t(1) << op.bits) - 1 : (int64_t(1) << (op.bits - 1)) - 1, detail::kMaxWide);
      ok(op.coding == 0 ? op.bits >= 2 : op.bits <= 15,
         op.coding == 0 ? "two's complement needs >= 2 bits" : "odd coding needs <= 15 bits");
      op.weights.resize(size_t(numel));
      for (int64_t j = 0; j < numel; ++j) {
        const int64_t u = fields[size_t(j)];
        const int64_t w = op.coding ? 2 * u - ((int64_t(1) << op.bits) - 1)
                                    : (u >= (int64_t(1) << (op.bits - 1)) ? u - (int64_t(1) << op.bits) : u);
        ok(w >= lo && w <= hi, "weight ", j, " = ", w, " is beyond ", detail::kMaxWide);
        op.weights[size_t(j)] = int16_t(w);
      }
      break;
    }
    case OpKind::max_pool: {
      op.R = b.dim("R"), op.S = b.dim("S"), op.stride_h = b.dim("stride_h"), op.stride_w = b.dim("stride_w");
      op.pad_h = b.dim("pad_h", 0), op.pad_w = b.dim("pad_w", 0);
      const uint8_t ceil = b.u8("ceil_mode");
      ok(ceil <= 1, "ceil_mode ", int(ceil), " is not 0 or 1");
      op.ceil_mode = ceil == 1;
      break;
    }
    case OpKind::flatten:
    case OpKind::sum_pool: break;
    case OpKind::shortcut:
      op.stride_h = b.dim("stride_h"), op.stride_w = b.dim("stride_w");
      op.pad_lo = b.dim("pad_lo", 0), op.pad_hi = b.dim("pad_hi", 0);
      op.zero_point = int(b.s32("zero point"));
      break;
    case OpKind::dequantize: {
      const int64_t F = b.dim("F", 1, detail::kMaxElements);
      op.scale = b.f64s(F, "scale");
      op.offset = b.f64s(F, "offset");
      break;
    }
  }
  ok(b.pos == b.size, b.size - b.pos, " bytes left over in its body");
  ok((i == 0) == (op.kind == OpKind::input),
     i == 0 ? "the first op must be the input" : "an input op may only come first");
  ok((i + 1 == count) == (op.kind == OpKind::dequantize),
     op.kind == OpKind::dequantize ? "dequantize must be the last op" : "the last op must be dequantize");
  ops_.push_back(std::move(op));
  check_graph(i);
}

// Op i against the ops before it: what it may read, its ranges, its output shape.
inline void Model::check_graph(size_t i) {
  using detail::check;
  Op& op = ops_[i];
  const std::string what = label(i);
  auto ok = [&](bool cond, const auto&... a) { check(cond, source_, what, ": ", a...); };
  auto finite = [&](const std::vector<double>& v, const char* item) {
    for (size_t j = 0; j < v.size(); ++j) ok(std::isfinite(v[j]), item, "[", j, "] is not finite");
  };
  if (op.kind == OpKind::input) {
    const Shape& s = op.out;
    ok(s.H * s.W * s.C <= detail::kMaxElements, "image too large");
    ok(std::isfinite(op.input_scale) && op.input_scale > 0, "scale must be finite and > 0");
    ok(op.zero_point >= 0 && op.zero_point <= 255, "zero point ", op.zero_point, " is outside [0, 255]");
    for (size_t c = 0; c < op.mean.size(); ++c)
      ok(std::isfinite(op.mean[c]) && std::isfinite(op.std[c]) && op.std[c] > 0, "mean/std of channel ", c,
         " must be finite (std > 0)");
    return;
  }
  const Op& src = ops_[size_t(op.src)];
  const Shape in = src.out;
  const bool after_sum = op.kind == OpKind::linear && src.kind == OpKind::sum_pool;
  ok(in.type == Type::u8 || op.kind == OpKind::dequantize || after_sum, "reads op ", op.src,
     "'s integer accumulators, which only a residual, dequantize (or, for sum_pool, a linear) may read");
  ok(op.kind == OpKind::linear || op.kind == OpKind::dequantize || !in.flat, "needs an image, op ", op.src,
     "'s output is flattened");
  Shape& out = op.out;
  out = in;
  out.type = Type::u8;
  switch (op.kind) {
    case OpKind::conv:
    case OpKind::linear: {
      const bool conv = op.kind == OpKind::conv;
      if (!conv)
        ok(op.R == 1 && op.S == 1 && op.stride_h == 1 && op.stride_w == 1 && op.pad_h == 0 && op.pad_w == 0 &&
               op.dil_h == 1 && op.dil_w == 1 && op.pad_values.empty(),
           "a linear layer has no kernel, stride, padding or dilation");
      ok(conv || in.flat || (in.H == 1 && in.W == 1), "a linear needs a flattened input (flatten or sum_pool first)");
      const int64_t in_c = conv ? in.C : in.H * in.W * in.C;
      ok(op.C == in_c, "takes ", op.C, " input channels/features, its input has ", in_c);
      ok(op.R * op.S * (op.C / op.groups) <= detail::kMaxReceptive, "R S C = ", op.R * op.S * (op.C / op.groups),
         " exceeds 65793 (int32 accumulators)");
      ok(op.in_zero_point >= 0 && op.in_zero_point <= 255, "input zero point ", op.in_zero_point,
         " is outside [0, 255]");
      for (double v : op.pad_values) ok(v >= 0 && v <= 255, "padding value ", v, " is outside [0, 255]");
      ok(op.out_qmax >= 0 && op.out_qmax <= 255, "out_qmax ", op.out_qmax, " is outside [0, 255]");
      ok(!after_sum || op.out_qmax == 0, "a linear after sum_pool keeps its accumulators (out_qmax 0)");
      ok(!op.out_signed || (op.out_qmax >= 1 && op.out_qmax <= 127), "signed output needs out_qmax in [1, 127]");
      finite(op.scale, "scale");
      finite(op.offset, "offset");
      for (int64_t k = 0; k < op.K && op.out_qmax > 0; ++k)
        ok(std::fabs(op.scale[size_t(k)]) * op.out_qmax < 0x1p30 &&
               std::fabs(op.offset[size_t(k)]) * op.out_qmax < 0x1p59,
           "scale/offset of channel ", k, " beyond the requantization's range");
      if (conv) {
        ok(in.H + 2 * op.pad_h >= op.dil_h * (op.R - 1) + 1 && in.W + 2 * op.pad_w >= op.dil_w * (op.S - 1) + 1,
           "the kernel is larger than the padded ", in.H, "x", in.W, " input");
        out.H = (in.H + 2 * op.pad_h - op.dil_h * (op.R - 1) - 1) / op.stride_h + 1;
        out.W = (in.W + 2 * op.pad_w - op.dil_w * (op.S - 1) - 1) / op.stride_w + 1;
        out.C = op.K;
      } else {
        out = {1, 1, op.K, Type::u8, true};
      }
      ok(out.H * out.W * out.C <= detail::kMaxElements, "output too large");
      out.type = op.out_qmax > 0 ? Type::u8 : after_sum ? Type::s64 : Type::s32;
      ok(!detail::fractional_padding(op) || (op.out_qmax > 0 && op.groups == 1 &&
                                             (op.residual < 0 || ops_[size_t(op.residual)].out.type == Type::s32)),
         "fractional padding values need a layer with groups 1, requantized output and no residual but accumulators");
      if (op.residual < 0) return;
      ok(op.residual > 0, "residual op 0 is not an earlier op");
      const Op& res = ops_[size_t(op.residual)];
      ok(op.out_qmax > 0, "a residual needs requantized output (out_qmax > 0)");
      ok(res.out.type == Type::u8 || (res.out.type == Type::s32 && res.kind != OpKind::sum_pool), "residual op ",
         op.residual, " outputs sums, not codes or accumulators");
      ok(res.out.H == out.H && res.out.W == out.W && res.out.C == out.C && res.out.flat == out.flat, "residual op ",
         op.residual, "'s output ", res.out.H, "x", res.out.W, "x", res.out.C, " is not the layer's ", out.H, "x",
         out.W, "x", out.C);
      finite(op.residual_scale, "residual_scale");
      for (int64_t k = 0; k < op.K; ++k)
        ok(std::fabs(op.residual_scale[size_t(k)]) * op.out_qmax < 0x1p30, "residual_scale of channel ", k,
           " beyond the requantization's range");
      return;
    }
    case OpKind::max_pool: {
      ok(2 * op.pad_h <= op.R && 2 * op.pad_w <= op.S, "padding must be within half the window");
      ok(in.H + 2 * op.pad_h >= op.R && in.W + 2 * op.pad_w >= op.S, "window ", op.R, "x", op.S, " is larger than the ",
         in.H, "x", in.W, " input");
      auto size = [&](int64_t n, int64_t k, int64_t s, int64_t pad) {  // PyTorch's output size
        const int64_t span = n + 2 * pad - k;
        int64_t o = (op.ceil_mode ? (span + s - 1) / s : span / s) + 1;
        if (op.ceil_mode && (o - 1) * s >= n + pad) --o;  // the last window must start inside
        return o;
      };
      out.H = size(in.H, op.R, op.stride_h, op.pad_h);
      out.W = size(in.W, op.S, op.stride_w, op.pad_w);
      return;
    }
    case OpKind::flatten: out = {1, 1, in.H * in.W * in.C, Type::u8, true}; return;
    case OpKind::sum_pool:
      ok(in.H * in.W <= detail::kMaxReceptive, in.H * in.W, " positions to sum exceed 65793");
      out = {1, 1, in.C, Type::s32, true};
      return;
    case OpKind::shortcut:
      ok(op.zero_point >= 0 && op.zero_point <= 255, "zero point ", op.zero_point, " is outside [0, 255]");
      out.H = (in.H - 1) / op.stride_h + 1, out.W = (in.W - 1) / op.stride_w + 1;
      out.C = in.C + op.pad_lo + op.pad_hi;
      ok(out.H * out.W * out.C <= detail::kMaxElements, "output too large");
      return;
    case OpKind::dequantize:
      ok((src.kind == OpKind::conv || src.kind == OpKind::linear) && src.out_qmax == 0,
         "must read a weight layer with accumulator output (out_qmax 0), not op ", op.src);
      ok(in.H == 1 && in.W == 1, "takes a vector, its input is ", in.H, "x", in.W, "x", in.C);
      ok(int64_t(op.scale.size()) == in.C, "has ", op.scale.size(), " values, its input ", in.C);
      finite(op.scale, "scale");
      finite(op.offset, "offset");
      out = {1, 1, in.C, Type::u8, true};
      return;
    case OpKind::input: return;
  }
}

// With the whole graph known: the exactness bound of residuals, and each requantization's integer
// constants (core/kernels/requant.cpp's requantization_from_double, as deploy/engine.cpp calls it).
inline void Model::derive(size_t i) {
  Op& op = ops_[i];
  if (op.kind != OpKind::conv && op.kind != OpKind::linear) return;
  const std::string what = label(i);
  const bool read_as_residual =
      std::any_of(ops_.begin(), ops_.end(), [&](const Op& o) { return o.residual == int(i); });
  int64_t max_abs = 0;
  bool wide = false;  // a weight beyond int8: the engine runs it as two int8 halves
  for (int16_t w : op.weights) max_abs = std::max<int64_t>(max_abs, std::abs(w)), wide |= w < -128 || w > 127;
  const int64_t receptive = op.R * op.S * (op.C / op.groups);
  const bool fractional = detail::fractional_padding(op);
  // Where the engine adds a wide layer's halves in int32 (with fractional padding: beyond lowbit's checks).
  if ((read_as_residual || op.residual >= 0 || fractional) && max_abs > 127)
    detail::check(255 * max_abs * receptive < (int64_t(1) << 31), source_, what,
                  ": 255 max|w| R S C = ", 255 * max_abs * receptive,
                  " does not fit int32 (needed for a wide layer with or as a residual, or with fractional padding)");
  // Padding: channel c's code is round(v_c); fractional values v_c add sum w[k][r][s][c] (v_c - round(v_c))
  // over the taps on padding, per output position, in fixed point of 2^-F accumulator units (the
  // engine's sum order): F = 11, the correction joining the requantization as a residual of
  // multiplier s 2^-11; or, when the layer's residual is int32 accumulators with residual_scale =
  // scale 2^-F, added to that residual.
  int F = 11;
  if (fractional && op.residual >= 0) {
    const double ratio = std::fabs(op.scale[0] / op.residual_scale[0]);
    F = std::isfinite(ratio) && ratio > 0 ? int(std::lround(std::log2(ratio))) : -1;
    for (size_t k = 0; k < size_t(op.K); ++k)
      detail::check(F >= 0 && F <= 24 && op.scale[k] == std::ldexp(op.residual_scale[k], F), source_, what,
                    ": fractional padding with a residual needs residual_scale = scale 2^-F (0 <= F <= 24)");
  }
  op.pad_codes.assign(size_t(op.C), op.in_zero_point);
  for (size_t c = 0; c < op.pad_values.size(); ++c) op.pad_codes[c] = int64_t(std::nearbyint(op.pad_values[c]));
  const Shape& in = ops_[size_t(op.src)].out;
  for (int64_t p = 0; p < op.out.H && fractional; ++p)
    for (int64_t q = 0; q < op.out.W; ++q)
      for (int64_t k = 0; k < op.K; ++k) {
        double sum = 0;
        for (int64_t r = 0; r < op.R; ++r)
          for (int64_t s = 0; s < op.S; ++s) {
            const int64_t h = p * op.stride_h - op.pad_h + r * op.dil_h, w = q * op.stride_w - op.pad_w + s * op.dil_w;
            if (h >= 0 && h < in.H && w >= 0 && w < in.W) continue;
            for (int64_t c = 0; c < op.C; ++c) {
              const double v = op.pad_values[size_t(c)];
              sum = std::fma(double(op.weights[size_t(((k * op.R + r) * op.S + s) * op.C + c)]), v - std::nearbyint(v),
                             sum);
            }
          }
        const double fixed = std::nearbyint(std::ldexp(sum, F));
        detail::check(std::fabs(fixed) < 0x1p31, source_, what, ": the fractional padding's contribution ", sum,
                      " is beyond its fixed-point range");
        op.correction.push_back(int64_t(fixed));
      }
  if (op.out_qmax == 0) return;
  // The requantization (docs/format.md (1)) as the engine computes it: u = a m + b m' + B with
  //   a, b = acc_hi, acc_lo and m, m' those of 256 s and s (one shift) for a wide layer without
  //       residual or fractional padding, and not read as a residual ("hi_lo");
  //   else a = acc, b = the residual (m' of residual_scale) plus the fractional padding's correction,
  //       or that correction alone (m' of s 2^-11), or none.
  op.hi_lo = wide && !read_as_residual && op.residual < 0 && !fractional;
  if (op.hi_lo)
    for (int16_t w : op.weights) {
      const int lo = ((w + 128) & 255) - 128;
      op.w_hi.push_back(int16_t((w - lo) / 256)), op.w_lo.push_back(int16_t(lo));
    }
  const bool res_u8 = op.residual >= 0 && ops_[size_t(op.residual)].out.type == Type::u8;
  const double qmax = op.out_qmax;
  const double res_limit = res_u8 ? double((int64_t(1) << 54) - 1) : double(INT32_MAX);
  for (size_t k = 0; k < size_t(op.K); ++k) {
    const double s = op.scale[k];
    const double M = qmax * (op.hi_lo ? 256 * s : s), T = qmax * op.offset[k];
    const double Mr = qmax * (op.hi_lo           ? s
                              : op.residual >= 0 ? op.residual_scale[k]
                              : fractional       ? std::ldexp(s, -11)
                                                 : 0.0);
    const int zero = op.out_signed ? 128 : 0;  // signed codes: 128 2^S in B_k (requant.h (1s))
    const int shift = std::min({detail::max_shift(M, double(INT32_MAX)), detail::max_shift(Mr, res_limit),
                                detail::max_shift(std::fabs(T) + zero, double(int64_t(1) << 61))});
    detail::check(shift >= 1, source_, what, ": channel ", k, ": scale or offset beyond the requantization's range");
    op.shift.push_back(shift);
    op.mult.push_back(int64_t(std::nearbyint(std::ldexp(M, shift))));
    op.res_mult.push_back(int64_t(std::nearbyint(std::ldexp(Mr, shift))));
    op.bias.push_back(int64_t(std::nearbyint(std::ldexp(T, shift))) + (int64_t(zero) << shift));
  }
}

inline std::vector<float> Model::run(const uint8_t* images_nhwc, int n) const {
  detail::check(n >= 0 && (n == 0 || images_nhwc), source_, "run: needs n >= 0 images");
  const size_t image = size_t(height() * width() * channels()), F = size_t(classes());
  std::vector<float> logits(size_t(n) * F);
  std::vector<std::vector<int64_t>> v(ops_.size());  // each op's output: codes or accumulators
  for (size_t img = 0; img < size_t(n); ++img) {
    v[0].assign(images_nhwc + img * image, images_nhwc + (img + 1) * image);  // the pixels are the codes
    for (size_t i = 1; i < ops_.size(); ++i) {
      const Op& op = ops_[i];
      const std::vector<int64_t>& x = v[size_t(op.src)];
      const Shape& in = ops_[size_t(op.src)].out;
      const Shape& out = op.out;
      std::vector<int64_t>& y = v[i];
      y.assign(size_t(out.H * out.W * out.C), 0);
      switch (op.kind) {
        case OpKind::conv:
        case OpKind::linear: {  // a linear is a 1x1 conv of its F features
          const int64_t Cg = op.C / op.groups, per_k = op.R * op.S * Cg;
          const std::vector<int64_t>* res = op.residual >= 0 ? &v[size_t(op.residual)] : nullptr;
          for (int64_t p = 0; p < out.H; ++p)
            for (int64_t q = 0; q < out.W; ++q)
              for (int64_t k = 0; k < op.K; ++k) {
                const int64_t c0 = op.groups == 1 ? 0 : k;  // depthwise: channel k only
                auto dot = [&](const std::vector<int16_t>& w) {
                  int64_t acc = 0;
                  for (int64_t r = 0; r < op.R; ++r)
                    for (int64_t s = 0; s < op.S; ++s) {
                      const int64_t h = p * op.stride_h - op.pad_h + r * op.dil_h;
                      const int64_t ww = q * op.stride_w - op.pad_w + s * op.dil_w;
                      const bool inside = h >= 0 && h < in.H && ww >= 0 && ww < in.W;
                      const int64_t* xs = inside ? &x[size_t((h * in.W + ww) * in.C + c0)] : &op.pad_codes[size_t(c0)];
                      const int16_t* ws = &w[size_t(k * per_k + (r * op.S + s) * Cg)];
                      for (int64_t c = 0; c < Cg; ++c) acc += xs[c] * ws[c];
                    }
                  return acc;
                };
                const size_t at = size_t((p * out.W + q) * op.K + k);
                // b: the residual, plus (or else) the fractional padding's correction; int32 in the engine
                const int64_t b = (res ? (*res)[at] : 0) + (op.correction.empty() ? 0 : op.correction[at]);
                if (b <= INT32_MIN || b > INT32_MAX)
                  detail::check(false, source_, label(i), ": residual ", b, " beyond int32");
                if (op.out_qmax == 0)
                  y[at] = dot(op.weights);
                else if (op.hi_lo)
                  y[at] = detail::requantize(op, k, dot(op.w_hi), dot(op.w_lo));
                else
                  y[at] = detail::requantize(op, k, dot(op.weights), b);
              }
          break;
        }
        case OpKind::max_pool:  // the largest in-image input of each window
          for (int64_t p = 0; p < out.H; ++p)
            for (int64_t q = 0; q < out.W; ++q)
              for (int64_t c = 0; c < out.C; ++c) {
                int64_t best = -1;
                for (int64_t r = 0; r < op.R; ++r)
                  for (int64_t s = 0; s < op.S; ++s) {
                    const int64_t h = p * op.stride_h - op.pad_h + r, w = q * op.stride_w - op.pad_w + s;
                    if (h >= 0 && h < in.H && w >= 0 && w < in.W)
                      best = std::max(best, x[size_t((h * in.W + w) * in.C + c)]);
                  }
                y[size_t((p * out.W + q) * out.C + c)] = best;
              }
          break;
        case OpKind::flatten: y = x; break;  // NHWC is already the flattened order
        case OpKind::sum_pool:
          for (size_t j = 0; j < x.size(); ++j) y[j % size_t(in.C)] += x[j];
          break;
        case OpKind::shortcut:  // subsample, then pad the channels with zero_point
          for (int64_t p = 0; p < out.H; ++p)
            for (int64_t q = 0; q < out.W; ++q)
              for (int64_t c = 0; c < out.C; ++c) {
                const int64_t cin = c - op.pad_lo;
                y[size_t((p * out.W + q) * out.C + c)] =
                    cin >= 0 && cin < in.C ? x[size_t((p * op.stride_h * in.W + q * op.stride_w) * in.C + cin)]
                                           : op.zero_point;
              }
          break;
        case OpKind::dequantize:
          for (size_t f = 0; f < F; ++f) logits[img * F + f] = float(std::fma(op.scale[f], double(x[f]), op.offset[f]));
          break;
        case OpKind::input: break;
      }
    }
  }
  return logits;
}

}  // namespace lowbit_runtime
