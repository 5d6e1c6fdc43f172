// Fixtures of the tests (synthetic image sets; the integer-deployment tests' models, also the fuzz
// seeds' in tests/fuzz/make_corpus.cpp): one definition each.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/random.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "deploy/model_file.h"

namespace lowbit::fixtures {

// Four classes of side x side grey images, class i % 4 for image i: pixel = background + noise * u
// (+ bright in quadrant c of class c), u uniform in [0, 1) drawn per pixel in row order.
inline data::ImageDataset quadrant_images(int64_t n, uint64_t seed, int64_t side, double background, double bright,
                                          double noise, const std::string& source = "quadrants") {
  Generator gen(seed);
  std::vector<uint8_t> px(static_cast<size_t>(n * side * side));
  std::vector<int32_t> labels(static_cast<size_t>(n));
  const int64_t half = side / 2;
  for (int64_t i = 0; i < n; ++i) {
    const int c = int(i % 4);
    labels[size_t(i)] = c;
    for (int64_t y = 0; y < side; ++y)
      for (int64_t x = 0; x < side; ++x) {
        const bool lit = (y / half) == c / 2 && (x / half) == c % 2;
        px[size_t((i * side + y) * side + x)] =
            uint8_t((lit ? background + bright : background) + noise * gen.uniform());
      }
  }
  data::ImageDataset d;
  d.images = Tensor::from_vector(px, {n, side, side, 1});
  d.labels = Tensor::from_vector(labels, {n});
  d.num_classes = 4;
  d.source = source;
  return d;
}

// 28x28, the deployment and budget tests' set.
inline data::ImageDataset quadrants28(int64_t n, uint64_t seed) { return quadrant_images(n, seed, 28, 30, 90, 120); }

// The training tests' loaders: shuffled training batches (seed 3), the test set in order (test_batch,
// 0: batch), the transforms given (e.g. "normalize:0.4:0.3"), no prefetch.
struct Loaders {
  std::unique_ptr<data::DataLoader> train, test;
  Loaders(const data::ImageDataset& train_set, const data::ImageDataset& test_set, int64_t batch,
          const std::string& transforms, int64_t test_batch = 0) {
    data::LoaderOptions o;
    o.batch_size = batch;
    o.seed = 3;
    o.prefetch = 0;
    o.transforms = data::parse_transforms(transforms);
    train = std::make_unique<data::DataLoader>(train_set, o);
    o.shuffle = false;
    o.batch_size = test_batch > 0 ? test_batch : batch;
    test = std::make_unique<data::DataLoader>(test_set, o);
  }
};

// l's weights: random codes at `bits` (odd codes, or two's complement symmetric), l.numel() of them.
inline void random_codes(deploy::WeightOp& l, int bits, deploy::WeightCoding coding, Generator& gen) {
  using deploy::WeightCoding;
  l.bits = bits, l.coding = coding;
  const int top = coding == WeightCoding::odd ? (1 << bits) - 1 : (1 << (bits - 1)) - 1;
  for (int64_t i = 0; i < l.numel(); ++i) {
    int v = int(gen.next_u64() % uint64_t(2 * top + 1)) - top;
    if (coding == WeightCoding::odd && !(v & 1)) v += v < top ? 1 : -1;
    l.weights.push_back(int16_t(v));
  }
}

// A chain: input with normalization, conv (3-bit odd), max pool (ceil), flatten, wide linear, dequantize.
inline deploy::Model chain_model() {
  using namespace deploy;
  Model m;
  m.meta["model"] = std::string("tiny");
  m.meta["bits.c"] = int64_t(3);
  m.meta["scale"] = 0.5;
  Op in;
  in.kind = OpKind::input;
  in.input.C = 2, in.input.H = 6, in.input.W = 5;
  in.input.mean = {0.5, 0.4}, in.input.std = {0.2, 0.3};
  m.ops.push_back(in);
  Op c;
  c.kind = OpKind::conv;
  c.layer.name = "c";
  c.layer.K = 3, c.layer.C = 2, c.layer.R = 3, c.layer.S = 2, c.layer.pad_h = 1;
  c.layer.bits = 3, c.layer.coding = WeightCoding::odd, c.layer.out_qmax = 15;
  c.layer.scale = {0.01, 0.02, -0.015}, c.layer.offset = {0.1, 0.2, 0.3};
  for (int64_t i = 0; i < c.layer.numel(); ++i) c.layer.weights.push_back(int16_t(2 * (i % 8) - 7));
  m.ops.push_back(c);
  Op p;
  p.kind = OpKind::max_pool;
  p.pool.R = p.pool.S = 2, p.pool.stride_h = p.pool.stride_w = 2, p.pool.ceil_mode = true;
  m.ops.push_back(p);
  Op f;
  f.kind = OpKind::flatten;
  m.ops.push_back(f);
  Op l;
  l.kind = OpKind::linear;
  l.layer.name = "fc";
  l.layer.K = 4, l.layer.C = 3 * 3 * 2;  // 6x5 -> conv 6x4 -> pool (ceil) 3x2
  l.layer.bits = 12, l.layer.coding = WeightCoding::twos_complement, l.layer.out_qmax = 0;  // wide
  l.layer.scale = {1e-3, 2e-3, 3e-3, 4e-3}, l.layer.offset = {0, -1, 1, 0.5};
  for (int64_t i = 0; i < l.layer.numel(); ++i) l.layer.weights.push_back(int16_t(i * 97 % 4096 - 2048));
  m.ops.push_back(l);
  Op d;
  d.kind = OpKind::dequantize;
  d.dequant.scale = l.layer.scale, d.dequant.offset = l.layer.offset;
  m.ops.push_back(d);
  return m;
}

// A graph model by hand (test_deploy's graph tests, the fuzz seeds): per-channel padding codes, a wide depthwise conv
// with an identity residual, a wide 1x1 projection kept as int32 accumulators and used as a residual, a zero-pad
// shortcut used as a residual, global sum pooling and a 16-bit linear on the sums.
// A convolution op reading op `src`: K x C x R x R weights (none set), stride, padding, groups.
inline deploy::Op conv_op(const char* name, int32_t src, int64_t K, int64_t C, int64_t R, int64_t stride, int64_t pad,
                          int64_t groups) {
  deploy::Op o;
  o.kind = deploy::OpKind::conv;
  o.src = src;
  deploy::WeightOp& l = o.layer;
  l.name = name, l.K = K, l.C = C, l.R = l.S = R, l.stride_h = l.stride_w = stride, l.pad_h = l.pad_w = pad;
  l.groups = groups;
  return o;
}

inline deploy::Model graph_model() {
  using namespace deploy;
  Generator gen(17);
  auto weights = [&](WeightOp& l, int bits, WeightCoding coding) { random_codes(l, bits, coding, gen); };
  // scale ~ 1 / (the accumulator's typical swing), offset ~ 0.3: codes spread over the range.
  auto constants = [&](WeightOp& l, double swing) {
    for (int64_t k = 0; k < l.K; ++k) {
      l.scale.push_back((0.5 + gen.uniform()) / swing * (k % 3 == 2 ? -1 : 1));
      l.offset.push_back(0.2 + 0.3 * gen.uniform());
    }
  };
  Model m;
  Op in;
  in.kind = OpKind::input;
  in.input.C = 2, in.input.H = 6, in.input.W = 5;
  m.ops.push_back(in);
  Op a = conv_op("a", 0, 4, 2, 3, 1, 1, 1);  // op 1: [6][5][4]
  a.layer.pad_values = {3.25, 200.6};        // fractional: the engine's fixed-point correction
  weights(a.layer, 4, WeightCoding::twos_complement);
  constants(a.layer, 255 * 7 * 18 * 0.3), a.layer.out_qmax = 15;
  m.ops.push_back(a);
  Op dw = conv_op("dw", 1, 4, 4, 3, 1, 1, 4);  // op 2: depthwise, 9-bit odd (wide), residual = op 1's codes
  weights(dw.layer, 9, WeightCoding::odd);
  constants(dw.layer, 15 * 511 * 9 * 0.3), dw.layer.out_qmax = 7;
  dw.layer.residual = 1, dw.layer.residual_scale = {0.02, -0.03, 0.05, 0.01};
  m.ops.push_back(dw);
  Op proj = conv_op("proj", 1, 6, 4, 1, 2, 0, 1);  // op 3: 12-bit (wide) 1x1/2 -> int32 [3][3][6]
  weights(proj.layer, 12, WeightCoding::twos_complement);
  constants(proj.layer, 15 * 2047 * 4 * 0.3), proj.layer.out_qmax = 0;
  m.ops.push_back(proj);
  Op sc;
  sc.kind = OpKind::shortcut;  // op 4: op 2's codes subsampled, 4 -> 6 channels
  sc.src = 2, sc.shortcut.stride_h = sc.shortcut.stride_w = 2, sc.shortcut.pad_lo = sc.shortcut.pad_hi = 1;
  m.ops.push_back(sc);
  Op b = conv_op("b", 4, 6, 6, 3, 1, 1, 1);  // op 5: residual = the projection's accumulators
  weights(b.layer, 3, WeightCoding::odd);
  constants(b.layer, 7 * 7 * 54 * 0.3), b.layer.out_qmax = 255;
  b.layer.residual = 3;
  for (int k = 0; k < 6; ++k) b.layer.residual_scale.push_back(0.4 / (15 * 2047 * 4 * 0.3) * (k % 2 ? 1 : -1));
  m.ops.push_back(b);
  Op c = conv_op("c", 5, 6, 6, 3, 1, 1, 1);  // op 6: residual = the shortcut's codes
  weights(c.layer, 5, WeightCoding::twos_complement);
  constants(c.layer, 255 * 15 * 54 * 0.3), c.layer.out_qmax = 7;
  c.layer.residual = 4, c.layer.residual_scale = {0.01, 0.02, 0.03, -0.02, 0.04, 0.05};
  m.ops.push_back(c);
  Op sum;
  sum.kind = OpKind::sum_pool;  // op 7: [6] int32 sums of 9 positions
  m.ops.push_back(sum);
  Op fc;
  fc.kind = OpKind::linear;  // op 8: 16-bit on the sums -> int64
  fc.layer.name = "fc", fc.layer.K = 3, fc.layer.C = 6;
  weights(fc.layer, 16, WeightCoding::twos_complement);
  for (auto& w : fc.layer.weights) w = int16_t(std::clamp<int>(w, -32768, deploy::kMaxWideWeight));
  constants(fc.layer, 1), fc.layer.out_qmax = 0;
  m.ops.push_back(fc);
  Op d;
  d.kind = OpKind::dequantize;
  d.dequant.scale = {1e-6, 2e-6, -1e-6}, d.dequant.offset = {0.5, 0, -0.5};
  m.ops.push_back(d);
  return m;
}

// Signed codes (format version 3, out_signed: 128 + round(clip(y, -1, 1) qmax)), as MobileNet v2's
// residual stream exports: a 1x1 conv to signed codes, a wide depthwise conv on them (padding code
// 128) with them as its uint8 residual, a wide 1x1 conv to signed codes at qmax 127 (its int8 halves:
// acc_hi m + acc_lo m'), a strided conv back to unsigned codes; every reader's offset holds the zero
// point (-scale 128 sum w). Then sum pooling and a linear on the sums.
inline deploy::Model signed_model() {
  using namespace deploy;
  Generator gen(23);
  auto weights = [&](WeightOp& l, int bits, WeightCoding coding) { random_codes(l, bits, coding, gen); };
  // scale ~ 1 / swing; the offset centres the output (signed) or puts it at ~0.3 (unsigned), after
  // removing the input's zero point z: -scale z sum w.
  auto constants = [&](WeightOp& l, double swing, double z, bool signed_out) {
    const size_t per = size_t(l.numel() / l.K);
    for (int64_t k = 0; k < l.K; ++k) {
      const double s = (0.5 + gen.uniform()) / swing * (k % 3 == 2 ? -1 : 1);
      double sum = 0;
      for (size_t j = 0; j < per; ++j) sum += l.weights[size_t(k) * per + j];
      l.scale.push_back(s);
      l.offset.push_back((signed_out ? 0.4 * gen.uniform() - 0.2 : 0.2 + 0.3 * gen.uniform()) - s * z * sum);
    }
  };
  Model m;
  m.meta["model"] = std::string("signed");
  Op in;
  in.kind = OpKind::input;
  in.input.C = 2, in.input.H = 6, in.input.W = 5;
  m.ops.push_back(in);
  Op a = conv_op("a", 0, 4, 2, 3, 1, 1, 1);  // op 1: unsigned codes [6][5][4]
  weights(a.layer, 4, WeightCoding::twos_complement);
  constants(a.layer, 255 * 7 * 18 * 0.3, 0, false), a.layer.out_qmax = 15;
  m.ops.push_back(a);
  Op p = conv_op("p", 1, 6, 4, 1, 1, 0, 1);  // op 2: signed codes 128 -+ 7
  weights(p.layer, 4, WeightCoding::twos_complement);
  constants(p.layer, 15 * 7 * 4 * 0.3, 0, true), p.layer.out_qmax = 7, p.layer.out_signed = true;
  m.ops.push_back(p);
  Op dw = conv_op("dw", 2, 6, 6, 3, 1, 1, 6);  // op 3: depthwise, wide (9-bit odd), pads 128, + op 2's codes
  dw.layer.in_zero_point = 128;
  weights(dw.layer, 9, WeightCoding::odd);
  constants(dw.layer, 7 * 511 * 9 * 0.3, 128, true), dw.layer.out_qmax = 7, dw.layer.out_signed = true;
  dw.layer.residual = 2;
  for (int k = 0; k < 6; ++k) {
    dw.layer.residual_scale.push_back(0.05 * (k % 2 ? 1 : -1));
    dw.layer.offset[size_t(k)] -= dw.layer.residual_scale.back() * 128;  // the residual's zero point
  }
  m.ops.push_back(dw);
  Op e = conv_op("e", 3, 5, 6, 1, 1, 0, 1);  // op 4: wide (12 bits) to signed codes 128 -+ 127
  e.layer.in_zero_point = 128;
  weights(e.layer, 12, WeightCoding::twos_complement);
  constants(e.layer, 7 * 2047 * 6 * 0.3, 128, true), e.layer.out_qmax = 127, e.layer.out_signed = true;
  m.ops.push_back(e);
  Op c = conv_op("c", 4, 4, 5, 3, 2, 1, 1);  // op 5: strided, pads 128, back to unsigned codes
  c.layer.in_zero_point = 128;
  weights(c.layer, 3, WeightCoding::odd);
  constants(c.layer, 127 * 7 * 45 * 0.3, 128, false), c.layer.out_qmax = 255;
  m.ops.push_back(c);
  Op sum;
  sum.kind = OpKind::sum_pool;  // op 6: [4] sums of 3 x 3 positions
  m.ops.push_back(sum);
  Op fc;
  fc.kind = OpKind::linear;  // op 7: on the sums -> int64
  fc.layer.name = "fc", fc.layer.K = 3, fc.layer.C = 4;
  weights(fc.layer, 8, WeightCoding::twos_complement);
  constants(fc.layer, 1, 0, false), fc.layer.out_qmax = 0;
  m.ops.push_back(fc);
  Op d;
  d.kind = OpKind::dequantize;
  d.dequant.scale = {1e-3, 2e-3, -1e-3}, d.dequant.offset = {0.5, 0, -0.5};
  m.ops.push_back(d);
  return m;
}

}  // namespace lowbit::fixtures
