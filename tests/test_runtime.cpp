// The standalone runtime (deploy/runtime/lowbit_runtime.h) against the library: the same logits as
// deploy::Engine bit for bit (hand-made graphs of every op kind and requantization path, exported
// zoo models), the same files accepted (random corruptions behind a valid checksum), errors naming
// the source; and the C header of `lowbit export --c-header` (deploy/c_header.h) holding the file.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

#include "autograd/ops.h"
#include "deploy/c_header.h"
#include "deploy/engine.h"
#include "deploy/entropy.h"
#include "deploy/export.h"
#include "deploy/runtime/lowbit_runtime.h"
#include "deploy_fixtures.h"
#include "models/zoo.h"
#include "optim/sgd.h"
#include "test_util.h"
#include "train/fit.h"
#include "train/quant_context.h"

using namespace lowbit;
using namespace lowbit::deploy;
using namespace lowbit::testing;

namespace {

// The message of the exception f throws (the runtime's std::runtime_error or a lowbit::Error), "" for none.
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

const unsigned char* bytes_of(const std::string& s) { return reinterpret_cast<const unsigned char*>(s.data()); }

std::vector<uint8_t> random_pixels(size_t count, uint64_t seed) {
  Generator gen(seed);
  std::vector<uint8_t> px(count);
  for (auto& v : px) v = uint8_t(gen.next_u64() % 256);
  return px;
}

// The runtime's logits on `n` images equal the engine's (fast and _ref paths), compared as bits.
void check_bit_identical(const Model& m, const std::vector<uint8_t>& px, int n, const std::string& what) {
  const std::string file = serialize_model(m);
  const auto rt = lowbit_runtime::Model::from_memory(bytes_of(file), file.size());
  Engine engine(parse_model(file, what));
  REQUIRE(rt.classes() == engine.classes());
  REQUIRE(px.size() == size_t(n * engine.height() * engine.width() * engine.channels()));
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<float> got = rt.run(px.data(), n);
  const auto t1 = std::chrono::steady_clock::now();
  std::vector<float> fast(got.size()), ref(got.size());
  engine.run(px.data(), n, fast.data());
  const auto t2 = std::chrono::steady_clock::now();
  engine.run(px.data(), n, ref.data(), Engine::Path::reference);
  int64_t differ = 0, differ_ref = 0;
  for (size_t i = 0; i < got.size(); ++i)
    differ += std::memcmp(&got[i], &fast[i], 4) != 0, differ_ref += std::memcmp(&got[i], &ref[i], 4) != 0;
  const auto ms = [&](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count() / n; };
  MESSAGE(what, ": ", n, " images x ", rt.classes(), " logits, ", differ, " differ from the engine's bit for bit (",
          differ_ref, " from its _ref path; ", ms(t0, t1), " ms/image, the engine ", ms(t1, t2), ")");
  CHECK(differ == 0);
  CHECK(differ_ref == 0);
  CHECK(std::any_of(got.begin(), got.end(), [&](float v) { return v != got[0]; }));  // not degenerate
  const std::vector<int> pred = rt.predict(px.data(), n);
  const std::vector<int32_t> epred = engine.predict(px.data(), n);
  CHECK(std::equal(pred.begin(), pred.end(), epred.begin(), epred.end()));
}

// ---- hand-made graphs: every op kind and every requantization path of the engine ----
struct Builder {
  Model m;
  Generator gen;
  std::vector<ActShape> shape;  // each op's output

  int add(Op op) {
    const ActShape in = shape.empty() ? ActShape{} : shape[size_t(op.src)];
    ActShape out = in;
    const WeightOp& l = op.layer;
    switch (op.kind) {
      case OpKind::input: out = {op.input.H, op.input.W, op.input.C, ValueType::u8, false}; break;
      case OpKind::conv:
        out.H = (in.H + 2 * l.pad_h - l.R) / l.stride_h + 1, out.W = (in.W + 2 * l.pad_w - l.S) / l.stride_w + 1;
        out.C = l.K, out.type = l.out_qmax ? ValueType::u8 : ValueType::s32;
        break;
      case OpKind::linear:
        out = {1, 1, l.K,
               l.out_qmax                  ? ValueType::u8
               : in.type == ValueType::s32 ? ValueType::s64
                                           : ValueType::s32,
               true};
        break;
      case OpKind::shortcut:
        out.H = (in.H - 1) / op.shortcut.stride_h + 1, out.W = (in.W - 1) / op.shortcut.stride_w + 1;
        out.C += op.shortcut.pad_lo + op.shortcut.pad_hi;
        break;
      case OpKind::max_pool: out.H = in.H / 2 + 1, out.W = in.W / 2 + 1; break;  // 3x3/2, padding 1, ceil mode
      case OpKind::flatten: out = {1, 1, in.H * in.W * in.C, ValueType::u8, true}; break;
      case OpKind::sum_pool: out = {1, 1, in.C, ValueType::s32, true}; break;
      default: break;
    }
    shape.push_back(out);
    m.ops.push_back(std::move(op));
    return int(m.ops.size()) - 1;
  }
  // A weight op reading `src`: random weights of `bits` bits, scales spreading its outputs over the
  // codes (or accumulators for out_qmax 0), an optional residual.
  int layer(OpKind kind, const std::string& name, int src, int64_t K, int64_t R, int64_t stride, int64_t pad,
            bool depthwise, int bits, WeightCoding coding, int out_qmax, int residual = -1) {
    const ActShape in = shape[size_t(src)];
    Op op;
    op.kind = kind;
    op.src = src;
    WeightOp& l = op.layer;
    l.name = name;
    l.C = kind == OpKind::conv ? in.C : in.H * in.W * in.C;
    l.K = depthwise ? l.C : K;
    l.R = l.S = R, l.stride_h = l.stride_w = stride, l.pad_h = l.pad_w = pad;
    l.groups = depthwise ? l.C : 1;
    l.bits = bits, l.coding = coding, l.out_qmax = out_qmax;
    const int64_t hi = std::min<int64_t>(coding == WeightCoding::odd ? (1 << bits) - 1 : (1 << (bits - 1)) - 1, 32639);
    for (int64_t j = 0; j < l.numel(); ++j) {
      const int64_t u = int64_t(gen.next_u64() % uint64_t(1 << bits));
      l.weights.push_back(int16_t(coding == WeightCoding::odd ? 2 * u - ((1 << bits) - 1)
                                                              : std::min(hi, u - (int64_t(1) << (bits - 1)))));
    }
    const double in_q = in.type == ValueType::u8 ? 200.0 : 2000.0;
    const double spread = 0.3 * std::sqrt(double(l.R * l.S * l.C / l.groups)) * in_q * double(hi);
    for (int64_t k = 0; k < l.K; ++k) {
      const double sign = k % 5 == 4 ? -1 : 1;  // some negative scales (a BN gamma < 0)
      l.scale.push_back(sign * (0.4 + gen.uniform()) / spread);
      l.offset.push_back(0.5 * gen.uniform() - 0.1);
    }
    if (residual >= 0) {
      l.residual = residual;
      const ActShape r = shape[size_t(residual)];
      const double unit = r.type == ValueType::u8 ? 15.0 : 2e5;
      for (int64_t k = 0; k < l.K; ++k) l.residual_scale.push_back((0.2 + 0.3 * gen.uniform()) / unit);
    }
    return add(op);
  }
};

// sum_pool_head: sum_pool + a linear on its int64 sums; else max_pool + flatten + four linear layers.
Model graph_model(bool sum_pool_head, uint64_t seed = 17) {
  Builder b{{}, Generator(seed), {}};
  Op in;
  in.kind = OpKind::input;
  in.input.C = 3, in.input.H = 9, in.input.W = 8;
  in.input.mean = {0.4, 0.45, 0.5}, in.input.std = {0.2, 0.25, 0.3};
  b.add(in);
  using enum OpKind;
  const auto odd = WeightCoding::odd, twos = WeightCoding::twos_complement;
  // 16-bit stem (wide) with per-channel padding: integer codes (requantized from its int8 halves:
  // acc_hi m + acc_lo m'), or fractional values (a fixed-point correction joins the requantization as
  // a residual, the halves combined)
  const int stem = b.layer(conv, "stem", 0, 6, 3, 1, 1, false, 16, twos, 15);
  b.m.ops[size_t(stem)].layer.pad_values =
      sum_pool_head ? std::vector<double>{89.25, 100.5, 110.8} : std::vector<double>{90, 100, 110};
  const int dw = b.layer(conv, "dw", stem, 0, 3, 2, 1, true, 4, odd, 15);  // depthwise, stride 2
  Op sc;
  sc.kind = shortcut;
  sc.src = stem;
  sc.shortcut.stride_h = sc.shortcut.stride_w = 2, sc.shortcut.pad_lo = sc.shortcut.pad_hi = 1;
  sc.shortcut.zero_point = 3;
  const int shortcut_op = b.add(sc);                                                   // 5x4x8 codes
  const int pw = b.layer(conv, "pw", dw, 8, 1, 1, 0, false, 3, odd, 15, shortcut_op);  // + uint8 residual
  const int proj = b.layer(conv, "proj", stem, 8, 1, 2, 0, false, 12, twos, 0);        // wide, int32 out
  b.m.ops[size_t(proj)].layer.in_zero_point = 7;
  // wide + int32 residual: the halves combined into 256 acc_hi + acc_lo, plain constants
  const int c3 = b.layer(conv, "c3", pw, 8, 3, 1, 1, false, 9, twos, 255, proj);
  const int dw2 = b.layer(conv, "dw_wide", c3, 0, 3, 1, 1, true, 10, twos, 7);  // depthwise wide (hi/lo)
  // Signed codes (format version 3: 128 + round(clip(y, -1, 1) qmax)): a 1x1 conv to them, a depthwise
  // conv on them (padding code 128) with them as its uint8 residual, a wide conv to them (hi/lo);
  // the readers' offsets hold the zero point 128.
  const int s1 = b.layer(conv, "s1", dw2, 6, 1, 1, 0, false, 4, twos, 7);
  const int s2 = b.layer(conv, "s2", s1, 0, 3, 1, 1, true, 5, twos, 7, s1);
  const int s3 = b.layer(conv, "s3", s2, 8, 3, 1, 1, false, 11, twos, 100);
  for (const int i : {s1, s2, s3}) {
    WeightOp& l = b.m.ops[size_t(i)].layer;
    l.out_signed = true;
    if (i == s1) continue;
    l.in_zero_point = 128;
    const size_t per = size_t(l.numel() / l.K);
    for (size_t k = 0; k < size_t(l.K); ++k) {
      double sum = 0;
      for (size_t j = 0; j < per; ++j) sum += l.weights[k * per + j];
      l.offset[k] -= 128 * (l.scale[k] * sum + (l.residual >= 0 ? l.residual_scale[k] : 0.0));
    }
  }
  if (sum_pool_head) {
    Op sp;
    sp.kind = sum_pool;
    sp.src = s3;
    const int sums = b.add(sp);
    const int fc = b.layer(linear, "fc", sums, 5, 1, 1, 0, false, 16, twos, 0);  // int64 sums
    b.m.ops[size_t(fc)].layer.scale.assign(5, 0);
    for (double& s : b.m.ops[size_t(fc)].layer.scale) s = 1e-6 * (1 + b.gen.uniform());
    Op d;
    d.kind = dequantize;
    d.src = fc;
    d.dequant.scale = b.m.ops[size_t(fc)].layer.scale, d.dequant.offset = b.m.ops[size_t(fc)].layer.offset;
    b.add(d);
    return b.m;
  }
  Op mp;
  mp.kind = max_pool;
  mp.src = s3;
  mp.pool.R = mp.pool.S = 3, mp.pool.stride_h = mp.pool.stride_w = 2, mp.pool.pad_h = mp.pool.pad_w = 1;
  mp.pool.ceil_mode = true;
  const int pool = b.add(mp);
  Op fl;
  fl.kind = flatten;
  fl.src = pool;
  const int flat = b.add(fl);
  const int fc1 = b.layer(linear, "fc1", flat, 16, 1, 1, 0, false, 16, twos, 15);       // wide linear (hi/lo)
  const int fc2 = b.layer(linear, "fc2", fc1, 16, 1, 1, 0, false, 5, twos, 15);         // int8
  const int fc3 = b.layer(linear, "fc3", fc2, 16, 1, 1, 0, false, 12, twos, 255, fc2);  // wide + residual
  const int fc4 = b.layer(linear, "fc4", fc3, 5, 1, 1, 0, false, 11, twos, 0);          // wide, accumulators
  const double spread = 0.3 * 4 * 200 * 1023;
  Op d;
  d.kind = dequantize;
  d.src = fc4;
  for (int k = 0; k < 5; ++k) d.dequant.scale.push_back((1 + k) / spread), d.dequant.offset.push_back(0.1 * k);
  b.add(d);
  return b.m;
}

// ---- a trained LeNet-5 (as tests/test_deploy.cpp trains it) and untrained zoo models ----

Model trained_lenet5(const train::QuantSpec& spec, int64_t epochs, const data::ImageDataset& train_set) {
  data::LoaderOptions o;
  o.batch_size = 32, o.seed = 3, o.prefetch = 0;
  o.transforms = data::parse_transforms("normalize:0.35:0.25");
  data::DataLoader loader(train_set, o);
  models::ModelOptions mo;
  mo.num_classes = 4, mo.in_channels = 1, mo.image_size = 28, mo.width_mult = 0.5, mo.seed = 11;
  auto model = models::create_model("lenet5", mo);
  train::QuantContext quant(*model, spec);
  optim::SGD sgd(quant.param_groups({.name = "weights", .lr = 0.005, .weight_decay = 5e-4, .momentum = 0.9}));
  train::FitOptions fo;
  fo.epochs = epochs, fo.verbose = 0;
  train::fit(*model, sgd, loader, nullptr, fo, &quant);
  quant.use_final_bits();
  ExportOptions eo;
  eo.model_name = "lenet5", eo.channels = 1, eo.height = 28, eo.width = 28, eo.mean = {0.35}, eo.std = {0.25};
  return export_model(*model, quant.quantization(), eo).model;
}

// An untrained 32x32 RGB zoo model, DoReFa 4/4 (float first/last layers: 16 bits per channel), its
// batch norms' statistics from a few random batches so the activations spread over the codes.
Model zoo_model(const std::string& name, const std::string& variant, double width) {
  models::ModelOptions mo;
  mo.num_classes = 10, mo.in_channels = 3, mo.image_size = 32, mo.width_mult = width, mo.variant = variant;
  mo.seed = 5;
  auto net = models::create_model(name, mo);
  train::QuantContext quant(*net, {.method = "dorefa", .wbits = 4, .abits = 4});
  {
    NoGradGuard ng;
    net->train();
    for (int i = 0; i < 3; ++i) (*net)(Variable(Tensor::randn({16, 3, 32, 32})));
    net->eval();
  }
  quant.use_final_bits();
  ExportOptions eo;
  eo.model_name = name, eo.channels = 3, eo.height = 32, eo.width = 32;
  eo.mean = {0.47, 0.47, 0.47}, eo.std = {0.25, 0.24, 0.26};
  return export_model(*net, quant.quantization(), eo).model;
}

}  // namespace

TEST_CASE("runtime: CRC-32 is zlib's") {
  const std::string s = "123456789";
  CHECK(lowbit_runtime::detail::crc32(bytes_of(s), s.size()) == 0xCBF43926u);
  CHECK(lowbit_runtime::detail::crc32(nullptr, 0) == 0u);
}

TEST_CASE("runtime == engine bit for bit on hand-made graphs of every op kind and requantization path") {
  for (const bool sum_pool_head : {false, true}) {
    const Model m = graph_model(sum_pool_head);
    check_bit_identical(m, random_pixels(40 * 9 * 8 * 3, 3), 40, sum_pool_head ? "graph/sum_pool" : "graph/flatten");
  }
}

// m with every weight layer's weights Huffman-coded (file version 4).
Model coded(Model m) {
  for (Op& op : m.ops)
    if (op.kind == OpKind::conv || op.kind == OpKind::linear) op.layer.storage = WeightStorage::huffman;
  return m;
}

namespace {
// 1,500 random one-bit corruptions of `good` behind a valid CRC: the library and the runtime both accept
// or both refuse each, and more than 100 are refused.
void check_corruptions_agree(const std::string& good, Generator& gen, const std::string& what) {
  int64_t accepted = 0, refused = 0;
  for (int t = 0; t < 1500; ++t) {
    std::string f = good;
    const size_t at = 32 + size_t(gen.next_u64() % (f.size() - 32));
    f[at] = char(f[at] ^ (1 << (gen.next_u64() % 8)));
    const uint32_t crc = lowbit_runtime::detail::crc32(bytes_of(f) + 32, f.size() - 32);
    std::memcpy(&f[24], &crc, 4);
    const std::string lib = message_of([&] { Engine e(parse_model(f, "memory")); });
    const std::string mine = message_of([&] { lowbit_runtime::Model::from_memory(bytes_of(f), f.size()); });
    CHECK_MESSAGE(lib.empty() == mine.empty(), "library: '", lib, "', runtime: '", mine, "'");
    accepted += lib.empty() && mine.empty(), refused += !lib.empty() && !mine.empty();
  }
  MESSAGE(what, " corruptions: ", accepted, " accepted by both, ", refused, " refused by both, of 1500");
  CHECK(refused > 100);
}
}  // namespace

TEST_CASE("runtime reads Huffman-coded weights (version 4): == engine bit for bit, == the packed file") {
  for (const bool sum_pool_head : {false, true}) {
    const Model m = coded(graph_model(sum_pool_head));
    const std::vector<uint8_t> px = random_pixels(16 * 9 * 8 * 3, 4);
    check_bit_identical(m, px, 16, sum_pool_head ? "coded graph/sum_pool" : "coded graph/flatten");
    const std::string a = serialize_model(m), b = serialize_model(graph_model(sum_pool_head));
    CHECK(a.substr(8, 4) == std::string("\x04\x00\x00\x00", 4));
    const auto ra = lowbit_runtime::Model::from_memory(bytes_of(a), a.size());
    const auto rb = lowbit_runtime::Model::from_memory(bytes_of(b), b.size());
    CHECK(ra.run(px.data(), 16) == rb.run(px.data(), 16));
    for (size_t i = 0; i < ra.ops().size(); ++i) CHECK(ra.ops()[i].weights == rb.ops()[i].weights);
  }
  const Model sm = coded(fixtures::signed_model());
  const InputOp& in = sm.ops[0].input;
  check_bit_identical(sm, random_pixels(size_t(8 * in.C * in.H * in.W), 6), 8, "coded signed");
  // Random corruptions of a coded file behind a valid CRC: both readers accept or both refuse.
  const std::string good = serialize_model(coded(graph_model(false)));
  Generator gen(11);
  check_corruptions_agree(good, gen, "coded-file");
  // Truncated: an error naming the source.
  CHECK(contains(message_of([&] { lowbit_runtime::Model::from_memory(bytes_of(good), good.size() - 3, "c.lbq"); }),
                 "c.lbq: truncated"));
}

// m with every two's complement weight layer pruned (all but every `keep`-th weight zero) and stored
// zero run-length + Huffman-coded (storage 2); the odd-coded layers (no zero weight) Huffman-coded.
Model rle_coded(Model m, int keep) {
  for (Op& op : m.ops) {
    if (op.kind != OpKind::conv && op.kind != OpKind::linear) continue;
    WeightOp& l = op.layer;
    if (l.coding == WeightCoding::odd) {
      l.storage = WeightStorage::huffman;
      continue;
    }
    for (size_t j = 0; j < l.weights.size(); ++j)
      if (j % size_t(keep)) l.weights[j] = 0;
    l.storage = WeightStorage::huffman_rle;
  }
  return m;
}

TEST_CASE("runtime reads run-length coded weights (storage 2) as the library does") {
  // The decoders alone: equal fields on random sparse layers; on corrupted bodies both refuse or both
  // decode the same fields.
  Generator gen(51);
  const std::string src = "memory";
  auto runtime_decode = [&](const std::string& body, int64_t count, int bits) {
    lowbit_runtime::detail::Reader r{bytes_of(body), body.size(), 0, src, "op 1"};
    std::vector<uint32_t> u = lowbit_runtime::detail::rle_fields(r, body.size(), count, bits, 0);
    CHECK(r.pos == body.size());
    return u;
  };
  int64_t agree_refused = 0, agree_decoded = 0;
  for (int bits : {2, 4, 8, 16})
    for (double sparsity : {0.0, 0.5, 0.95, 1.0}) {
      std::vector<uint32_t> u(1 + gen.next_u64() % 5000);
      for (auto& x : u) x = gen.uniform() < sparsity ? 0u : 1u + uint32_t(gen.next_u64() % ((1u << bits) - 1));
      const std::string body = rle_encode(u, bits, 0);
      const int64_t count = int64_t(u.size());
      CHECK(runtime_decode(body, count, bits) == u);
      for (int t = 0; t < 200; ++t) {
        std::string b = body;
        if (t % 4 == 0) {
          b = b.substr(0, gen.next_u64() % b.size());  // truncated
        } else {
          const size_t at = gen.next_u64() % b.size();
          b[at] = char(uint8_t(b[at]) ^ uint8_t(1 + gen.next_u64() % 255));
        }
        std::vector<uint32_t> lib, rt;
        const std::string e1 = message_of([&] { lib = rle_decode(b, count, bits, 0, "memory: op 1"); });
        const std::string e2 = message_of([&] { rt = runtime_decode(b, count, bits); });
        CHECK_MESSAGE(e1.empty() == e2.empty(), "library: '", e1, "', runtime: '", e2, "'");
        CHECK(lib == rt);
        if (!e1.empty()) CHECK(contains(e1, "huffman-rle weights"));
        if (!e2.empty()) CHECK(contains(e2, "huffman-rle weights"));
        agree_refused += !e1.empty() && !e2.empty(), agree_decoded += e1.empty() && e2.empty();
      }
    }
  MESSAGE("huffman-rle body corruptions: ", agree_refused, " refused by both, ", agree_decoded,
          " decoded alike by both");
  CHECK(agree_refused > 1000);
  // Whole files: the engine's logits bit for bit, the weights equal the packed file's.
  for (const bool sum_pool_head : {false, true}) {
    const Model m = rle_coded(graph_model(sum_pool_head), 3);
    Model packed = m;
    for (Op& op : packed.ops) op.layer.storage = WeightStorage::packed;
    const std::vector<uint8_t> px = random_pixels(16 * 9 * 8 * 3, 4);
    check_bit_identical(m, px, 16, sum_pool_head ? "rle graph/sum_pool" : "rle graph/flatten");
    const std::string a = serialize_model(m), b = serialize_model(packed);
    CHECK(a.substr(8, 4) == std::string("\x04\x00\x00\x00", 4));
    const auto ra = lowbit_runtime::Model::from_memory(bytes_of(a), a.size());
    const auto rb = lowbit_runtime::Model::from_memory(bytes_of(b), b.size());
    CHECK(ra.run(px.data(), 16) == rb.run(px.data(), 16));
    for (size_t i = 0; i < ra.ops().size(); ++i) CHECK(ra.ops()[i].weights == rb.ops()[i].weights);
  }
  // Random corruptions of the file behind a valid CRC: both readers accept or both refuse.
  const std::string good = serialize_model(rle_coded(graph_model(false), 4));
  check_corruptions_agree(good, gen, "rle-file");
}

TEST_CASE("runtime == engine bit for bit on trained LeNet-5s (DoReFa 4/4 with 16-bit first/last layers; 8/4)") {
  const data::ImageDataset train_set = fixtures::quadrants28(512, 1), test_set = fixtures::quadrants28(256, 2);
  const Tensor px = test_set.images.contiguous();
  const std::vector<uint8_t> images(px.data<uint8_t>(), px.data<uint8_t>() + px.numel());
  check_bit_identical(trained_lenet5({.method = "dorefa", .wbits = 4, .abits = 4}, 2, train_set), images, 256,
                      "lenet5 dorefa 4/4");
  check_bit_identical(
      trained_lenet5({.method = "dorefa", .wbits = 8, .abits = 4, .quantize_first_last = true}, 1, train_set), images,
      256, "lenet5 dorefa 8/4, all layers quantized");
}

TEST_CASE("a pruned LeNet-5 (fc1 98 % zero): export --entropy-code picks huffman-rle, the same predictions") {
  // Trained with WRPN 4/4 (two's complement codes, so 0 is a weight), exported, then fc1's integer
  // weights pruned to 2 % (the largest |w| kept), as the prune -> quantize -> code pipeline leaves it.
  const data::ImageDataset train_set = fixtures::quadrants28(512, 1), test_set = fixtures::quadrants28(256, 2);
  Model packed = trained_lenet5({.method = "wrpn", .wbits = 4, .abits = 4}, 1, train_set);
  WeightOp* fc1 = nullptr;
  for (Op& op : packed.ops)
    if (op.kind == OpKind::linear && (!fc1 || op.layer.numel() > fc1->numel())) fc1 = &op.layer;
  REQUIRE(fc1 != nullptr);
  REQUIRE(fc1->coding == WeightCoding::twos_complement);
  std::vector<int16_t> mags(fc1->weights);
  for (auto& w : mags) w = int16_t(std::abs(w));
  std::nth_element(mags.begin(), mags.begin() + std::ptrdiff_t(mags.size() * 98 / 100), mags.end());
  const int16_t cut = mags[mags.size() * 98 / 100];
  for (auto& w : fc1->weights)
    if (std::abs(w) < cut) w = 0;
  const double zeros = double(std::count(fc1->weights.begin(), fc1->weights.end(), int16_t(0))) / double(fc1->numel());
  CHECK(zeros > 0.9);
  Model coded = packed;
  const EntropyAccount a = entropy_code(coded);
  const CodedLayer* c = nullptr;
  for (const CodedLayer& l : a.layers)
    if (l.name == fc1->name) c = &l;
  REQUIRE(c != nullptr);
  MESSAGE("pruned lenet5 ", c->name, ": ", c->weights, " weights, sparsity ", zeros, ": packed ", c->packed_bytes,
          " B, huffman ", c->huffman_bytes, " B, huffman-rle ", c->rle_bytes, " B (", c->stored_bits_per_weight(),
          " bits/weight); formula ", a.formula_ratio(), "x");
  CHECK(c->storage == WeightStorage::huffman_rle);
  CHECK(c->rle_bytes < c->huffman_bytes);
  CHECK(c->stored_bits_per_weight() < 1.0);  // below Huffman's floor
  const std::string pf = serialize_model(packed), cf = serialize_model(coded);
  CHECK(cf.size() < pf.size());
  const Tensor px = test_set.images.contiguous();
  const std::vector<uint8_t> images(px.data<uint8_t>(), px.data<uint8_t>() + px.numel());
  Engine ep(parse_model(pf, "packed.lbq")), ec(parse_model(cf, "coded.lbq"));
  const std::vector<int32_t> pp = ep.predict(images.data(), 256), pc = ec.predict(images.data(), 256);
  CHECK(pp == pc);
  const auto rt = lowbit_runtime::Model::from_memory(bytes_of(cf), cf.size(), "coded.lbq");
  const std::vector<int> pr = rt.predict(images.data(), 256);
  CHECK(std::equal(pr.begin(), pr.end(), pp.begin(), pp.end()));
  check_bit_identical(coded, images, 256, "pruned lenet5, huffman-rle fc1");
}

TEST_CASE("runtime == engine bit for bit on ResNet-20 (B and A shortcuts), MobileNet-V1 and V2 (0.25)") {
  const std::vector<uint8_t> images = random_pixels(8 * 32 * 32 * 3, 12);
  check_bit_identical(zoo_model("resnet20", "B", 1.0), images, 8, "resnet20 B dorefa 4/4");
  check_bit_identical(zoo_model("resnet20", "A", 1.0), images, 8, "resnet20 A dorefa 4/4");
  check_bit_identical(zoo_model("mobilenet_v1", "cifar", 0.25), images, 8, "mobilenet_v1 cifar x0.25 dorefa 4/4");
  const Model v2 = zoo_model("mobilenet_v2", "cifar", 0.25);  // signed codes: its residual stream
  CHECK(model_version(v2) == 3);
  check_bit_identical(v2, images, 8, "mobilenet_v2 cifar x0.25 dorefa 4/4");
}

TEST_CASE("runtime: bad files are refused with an error naming the source and the defect") {
  const std::string good = serialize_model(graph_model(false));
  auto err = [&](const std::string& bytes, const std::string& source = "memory") {
    return message_of([&] { lowbit_runtime::Model::from_memory(bytes_of(bytes), bytes.size(), source); });
  };
  CHECK(err(good).empty());
  for (size_t n = 0; n < good.size(); ++n) {  // every truncation
    const std::string e = err(good.substr(0, n));
    CHECK_MESSAGE((contains(e, "memory: ") && contains(e, "truncated")), n, ": ", e);
  }
  CHECK(contains(err(good + "x"), "memory: trailing bytes"));
  std::string bad = good;
  bad[0] = 'X';
  CHECK(contains(err(bad, "net.lbq"), "net.lbq: bad magic"));
  bad = good;
  bad[8] = 1;
  CHECK(contains(err(bad), "unsupported version 1"));
  bad = good;
  bad[good.size() - 3] ^= 0x10;
  CHECK(contains(err(bad), "memory: checksum mismatch"));

  TempDir dir("lowbit_test_runtime");
  const std::string path = dir / "cut.lbq";
  std::ofstream(path, std::ios::binary) << good.substr(0, good.size() / 2);
  CHECK(contains(message_of([&] { lowbit_runtime::Model::load(path); }), path + ": truncated"));
  CHECK(contains(message_of([&] { lowbit_runtime::Model::load(dir / "none.lbq"); }), "none.lbq: cannot open"));

  // A graph defect behind a valid checksum: pw's residual (its i32 after the name, 11 u32 sizes, the
  // zero point and the padding codes flag) pointed at the stem, whose 9x8x6 output is not pw's 5x4x8.
  bad = good;
  const size_t name = bad.find(std::string("\x02\x00\x00\x00pw", 6));
  REQUIRE(name != std::string::npos);
  const int32_t stem = 1;
  std::memcpy(&bad[name + 6 + 44 + 5], &stem, 4);
  const uint32_t crc = lowbit_runtime::detail::crc32(bytes_of(bad) + 32, bad.size() - 32);
  std::memcpy(&bad[24], &crc, 4);
  CHECK(contains(err(bad), "memory: op 4 (conv 'pw'): residual op 1's output 9x8x6 is not the layer's 5x4x8"));
  CHECK(contains(message_of([&] { parse_model(bad, "memory"); }), "is not the layer's"));
}

TEST_CASE("runtime accepts exactly the files the library accepts (random corruptions behind a valid CRC)") {
  // Mutated payload bytes with the checksum recomputed: both readers (plus the engine's constant
  // derivation) accept or both refuse; when both accept, the logits still agree bit for bit.
  for (const bool sum_pool_head : {false, true}) {
    const std::string good = serialize_model(graph_model(sum_pool_head));
    // The structure's bytes: those another draw of the weights and scales leaves unchanged.
    const std::string other = serialize_model(graph_model(sum_pool_head, 99));
    REQUIRE(other.size() == good.size());
    std::vector<size_t> structure;
    for (size_t i = 32; i < good.size(); ++i)
      if (good[i] == other[i]) structure.push_back(i);
    const std::vector<uint8_t> px = random_pixels(4 * 9 * 8 * 3, 5);
    Generator gen(sum_pool_head ? 7 : 8);
    int64_t accepted = 0, refused = 0, ran = 0;
    for (int t = 0; t < 3000; ++t) {
      std::string f = good;
      const int edits = 1 + int(gen.next_u64() % 3);
      for (int e = 0; e < edits; ++e) {
        const size_t at = gen.next_u64() % 4 ? structure[gen.next_u64() % structure.size()]
                                             : 32 + size_t(gen.next_u64() % (f.size() - 32));
        if (gen.next_u64() % 2)
          f[at] = char(gen.next_u64());
        else
          f[at] = char(f[at] ^ (1 << (gen.next_u64() % 8)));
      }
      const uint32_t crc = lowbit_runtime::detail::crc32(bytes_of(f) + 32, f.size() - 32);
      std::memcpy(&f[24], &crc, 4);
      std::unique_ptr<Engine> engine;
      const std::string lib = message_of([&] { engine = std::make_unique<Engine>(parse_model(f, "memory")); });
      std::unique_ptr<lowbit_runtime::Model> rt;
      const std::string mine = message_of([&] {
        rt = std::make_unique<lowbit_runtime::Model>(lowbit_runtime::Model::from_memory(bytes_of(f), f.size()));
      });
      CHECK_MESSAGE(lib.empty() == mine.empty(), "library: '", lib, "', runtime: '", mine, "'");
      if (!lib.empty() || !mine.empty()) {
        refused += !lib.empty() && !mine.empty();
        if (!mine.empty()) CHECK_MESSAGE(contains(mine, "memory: "), mine);
        continue;
      }
      ++accepted;
      int64_t values = 0;
      for (const auto& op : rt->ops()) values += op.out.H * op.out.W * op.out.C;
      if (values > 100000 || engine->height() * engine->width() * engine->channels() != 9 * 8 * 3) continue;
      ++ran;
      const std::vector<float> a = rt->run(px.data(), 4);
      std::vector<float> b(a.size()), c(a.size());
      engine->run(px.data(), 4, b.data());
      engine->run(px.data(), 4, c.data(), Engine::Path::reference);
      CHECK(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
      CHECK(std::memcmp(a.data(), c.data(), a.size() * 4) == 0);
    }
    MESSAGE("corruptions: ", accepted, " accepted by both (", ran, " run, equal logits), ", refused,
            " refused by both, of 3000");
    CHECK(accepted > 100);
    CHECK(refused > 100);
  }
}

TEST_CASE("the C header holds the .lbq byte for byte and the layers' numbers") {
  const Model m = graph_model(false);
  const std::string file = serialize_model(m);
  const std::string h = c_header(m, "net");
  // Parse the byte array back.
  const size_t begin = h.find("static const unsigned char net_lbq[");
  REQUIRE(begin != std::string::npos);
  std::istringstream in(h.substr(h.find('{', begin) + 1, h.find("};", begin) - h.find('{', begin) - 1));
  std::string bytes, tok;
  while (std::getline(in, tok, ','))
    if (tok.find("0x") != std::string::npos) bytes += char(std::stoi(tok, nullptr, 16));
  CHECK(bytes == file);
  CHECK(contains(h, "static const size_t net_lbq_size = " + std::to_string(file.size()) + ";"));
  CHECK(contains(h, "static const int16_t net_stem_weights[162] = {"));  // 6 x 3x3 x 3, 16 bits
  CHECK(contains(h, "static const int8_t net_dw_weights[54] = {"));
  CHECK(contains(h, "static const double net_c3_residual_scale[8] = {"));
  CHECK(contains(h, "output signed codes 128 + (-7..7), plus op "));  // s2
  CHECK(contains(h, "#ifndef NET_LBQ_H"));
  CHECK(contains(message_of([&] { c_header(m, "9lives"); }), "not a C identifier"));
  CHECK(c_identifier("model-v2.h") == "model_v2_h");
  CHECK(c_identifier("3net") == "_3net");
  TempDir dir("lowbit_test_runtime_h");
  write_c_header(dir / "net.h", m, "net");
  std::ifstream f(dir / "net.h");
  CHECK(std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>()) == h);
}
