// Fixtures of the integer-deployment tests (tests/test_deploy.cpp, tests/test_runtime.cpp) and of
// the fuzz seeds (tests/fuzz/make_corpus.cpp): one definition each.
#pragma once

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

}  // namespace lowbit::fixtures
