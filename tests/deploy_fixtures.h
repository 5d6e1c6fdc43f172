// Fixtures of the integer-deployment tests (tests/test_deploy.cpp, tests/test_runtime.cpp) and of
// the fuzz seeds (tests/fuzz/make_corpus.cpp): one definition each.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/random.h"
#include "data/dataset.h"
#include "deploy/model_file.h"

namespace lowbit::fixtures {

// Four classes of 28x28 grey images: class c has a bright quadrant c on a noisy background.
inline data::ImageDataset quadrants28(int64_t n, uint64_t seed) {
  Generator gen(seed);
  std::vector<uint8_t> px(static_cast<size_t>(n * 784));
  std::vector<int32_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int c = int(i % 4);
    labels[size_t(i)] = c;
    for (int y = 0; y < 28; ++y)
      for (int x = 0; x < 28; ++x) {
        const bool bright = (y / 14) == c / 2 && (x / 14) == c % 2;
        px[size_t(i * 784 + y * 28 + x)] = uint8_t((bright ? 120 : 30) + 120 * gen.uniform());
      }
  }
  data::ImageDataset d;
  d.images = Tensor::from_vector(px, {n, 28, 28, 1});
  d.labels = Tensor::from_vector(labels, {n});
  d.num_classes = 4;
  d.source = "quadrants";
  return d;
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
inline deploy::Model graph_model() {
  using namespace deploy;
  Generator gen(17);
  auto weights = [&](WeightOp& l, int bits, WeightCoding coding) {
    l.bits = bits, l.coding = coding;
    const int top = coding == WeightCoding::odd ? (1 << bits) - 1 : (1 << (bits - 1)) - 1;
    for (int64_t i = 0; i < l.numel(); ++i) {
      int v = int(gen.next_u64() % uint64_t(2 * top + 1)) - top;
      if (coding == WeightCoding::odd && !(v & 1)) v += v < top ? 1 : -1;
      l.weights.push_back(int16_t(v));
    }
  };
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
  auto conv = [&](const char* name, int32_t src, int64_t K, int64_t C, int64_t R, int64_t stride, int64_t pad,
                  int64_t groups) {
    Op o;
    o.kind = OpKind::conv;
    o.src = src;
    WeightOp& l = o.layer;
    l.name = name, l.K = K, l.C = C, l.R = l.S = R, l.stride_h = l.stride_w = stride, l.pad_h = l.pad_w = pad;
    l.groups = groups;
    return o;
  };
  Op a = conv("a", 0, 4, 2, 3, 1, 1, 1);  // op 1: [6][5][4]
  a.layer.pad_values = {3.25, 200.6};     // fractional: the engine's fixed-point correction
  weights(a.layer, 4, WeightCoding::twos_complement);
  constants(a.layer, 255 * 7 * 18 * 0.3), a.layer.out_qmax = 15;
  m.ops.push_back(a);
  Op dw = conv("dw", 1, 4, 4, 3, 1, 1, 4);  // op 2: depthwise, 9-bit odd (wide), residual = op 1's codes
  weights(dw.layer, 9, WeightCoding::odd);
  constants(dw.layer, 15 * 511 * 9 * 0.3), dw.layer.out_qmax = 7;
  dw.layer.residual = 1, dw.layer.residual_scale = {0.02, -0.03, 0.05, 0.01};
  m.ops.push_back(dw);
  Op proj = conv("proj", 1, 6, 4, 1, 2, 0, 1);  // op 3: 12-bit (wide) 1x1/2 -> int32 [3][3][6]
  weights(proj.layer, 12, WeightCoding::twos_complement);
  constants(proj.layer, 15 * 2047 * 4 * 0.3), proj.layer.out_qmax = 0;
  m.ops.push_back(proj);
  Op sc;
  sc.kind = OpKind::shortcut;  // op 4: op 2's codes subsampled, 4 -> 6 channels
  sc.src = 2, sc.shortcut.stride_h = sc.shortcut.stride_w = 2, sc.shortcut.pad_lo = sc.shortcut.pad_hi = 1;
  m.ops.push_back(sc);
  Op b = conv("b", 4, 6, 6, 3, 1, 1, 1);  // op 5: residual = the projection's accumulators
  weights(b.layer, 3, WeightCoding::odd);
  constants(b.layer, 7 * 7 * 54 * 0.3), b.layer.out_qmax = 255;
  b.layer.residual = 3;
  for (int k = 0; k < 6; ++k) b.layer.residual_scale.push_back(0.4 / (15 * 2047 * 4 * 0.3) * (k % 2 ? 1 : -1));
  m.ops.push_back(b);
  Op c = conv("c", 5, 6, 6, 3, 1, 1, 1);  // op 6: residual = the shortcut's codes
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

}  // namespace lowbit::fixtures
