#include "deploy/engine.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/kernels/conv_int8.h"
#include "core/kernels/pool_int8.h"
#include "core/parallel.h"

namespace lowbit::deploy {
namespace {

kernels::Conv2dGeometry geometry(const WeightOp& l, const ActShape& in, int64_t n) {
  kernels::Conv2dGeometry g;
  g.N = n, g.C = l.C, g.H = in.H, g.W = in.W;
  g.K = l.K, g.R = l.R, g.S = l.S;
  g.stride_h = l.stride_h, g.stride_w = l.stride_w, g.pad_h = l.pad_h, g.pad_w = l.pad_w;
  g.dil_h = l.dil_h, g.dil_w = l.dil_w;
  return g;
}

}  // namespace

Engine::Engine(Model model, const std::string& name) : model_(std::move(model)) {
  shapes_ = validate(model_, name);
  in_ = model_.ops.front().input;
  classes_ = model_.classes();
  for (size_t i = 0; i < model_.ops.size(); ++i) {
    const Op& op = model_.ops[i];
    if (op.kind != OpKind::conv && op.kind != OpKind::linear) continue;
    const WeightOp& l = op.layer;
    Layer L;
    L.op = i;
    L.wide = l.wide();
    const size_t per = size_t(l.numel() / l.K);
    L.w.resize(l.weights.size() * (L.wide ? 2 : 1));
    for (size_t j = 0; j < l.weights.size(); ++j) {
      const int w = l.weights[j];
      if (!L.wide) {
        L.w[j] = int8_t(w);
        continue;
      }
      const int lo = ((w + 128) & 255) - 128;   // w = 256 hi + lo, both int8 for w in [-32768, 32639]
      L.w[j] = int8_t((w - lo) / 256);          // row k: hi
      L.w[j + size_t(l.K) * per] = int8_t(lo);  // row K + k: lo
    }
    const int64_t K = L.wide ? 2 * l.K : l.K;
    if (op.kind == OpKind::conv) {
      kernels::Conv2dGeometry g = geometry(l, shapes_[i - 1], 1);
      g.K = K;
      L.packed = kernels::pack_conv_weights_s8(g, L.w.data());
    } else {
      L.packed = kernels::pack_b_s8(l.C, K, L.w.data(), l.C, /*trans_b=*/true);
    }
    if (l.out_qmax > 0 && !L.wide)
      L.requant = kernels::requantization_from_double(l.K, l.scale.data(), l.offset.data(), l.out_qmax);
    if (l.out_qmax > 0 && L.wide) {
      std::vector<double> hi_scale(l.scale);
      for (double& v : hi_scale) v *= 256;
      L.requant = kernels::requantization_from_double(l.K, hi_scale.data(), l.offset.data(), l.out_qmax,
                                                      kernels::RequantResidual::s32, l.scale.data());
    }
    layers_.push_back(std::move(L));
  }
}

void Engine::run(const uint8_t* images, int64_t n, float* logits, Path path) {
  LOWBIT_CHECK(n >= 1, "Engine::run: batch must be >= 1, got ", n);
  const bool ref = path == Path::reference;
  int64_t most = 0;
  for (const ActShape& s : shapes_) most = std::max(most, s.H * s.W * s.C);
  if (int64_t(a_.size()) < n * most) a_.resize(size_t(n * most)), b_.resize(size_t(n * most));
  if (int64_t(acc_.size()) < 2 * n * most) acc_.resize(size_t(2 * n * most));
  bool wide_out = false;      // the last weight layer was wide ([rows][2K]: hi, lo)
  const uint8_t* x = images;  // the current uint8 activation
  uint8_t* out = a_.data();
  size_t layer = 0;
  for (size_t i = 1; i < model_.ops.size(); ++i) {
    const Op& op = model_.ops[i];
    const ActShape& s_in = shapes_[i - 1];
    const ActShape& s_out = shapes_[i];
    switch (op.kind) {
      case OpKind::conv:
      case OpKind::linear: {
        const WeightOp& l = op.layer;
        const Layer& L = layers_[layer++];
        const int64_t rows = n * s_out.H * s_out.W;
        const bool requant = l.out_qmax > 0;
        const uint8_t zp = uint8_t(l.in_zero_point);
        const int64_t K = L.wide ? 2 * l.K : l.K;  // outputs of the int8 layer
        wide_out = L.wide;
        if (op.kind == OpKind::conv) {
          kernels::Conv2dGeometry g = geometry(l, s_in, n);
          g.K = K;
          if (requant && !L.wide && !ref)
            kernels::conv2d_u8s8u8(g, x, zp, L.packed, L.requant, nullptr, nullptr, out);
          else if (requant && !L.wide)
            kernels::conv2d_u8s8u8_ref(g, x, zp, L.w.data(), L.requant, nullptr, nullptr, out);
          else if (!ref)
            kernels::conv2d_u8s8s32(g, x, zp, L.packed, acc_.data());
          else
            kernels::conv2d_u8s8s32_ref(g, x, zp, L.w.data(), acc_.data());
        } else if (ref) {
          kernels::gemm_u8s8s32_ref(n, K, l.C, x, l.C, L.w.data(), l.C, true, acc_.data(), K, false);
        } else {
          kernels::gemm_u8s8s32({.M = n, .A = x, .lda = l.C, .B = &L.packed, .C = acc_.data(), .ldc = K});
        }
        if (requant && (L.wide || op.kind == OpKind::linear)) {
          kernels::RequantArgs a{.rows = rows,
                                 .acc = acc_.data(),
                                 .ld_acc = K,
                                 .residual_s32 = L.wide ? acc_.data() + l.K : nullptr,
                                 .ld_residual = L.wide ? K : 0,
                                 .out = out,
                                 .ld_out = l.K};
          ref ? kernels::requantize_u8_ref(L.requant, a) : kernels::requantize_u8(L.requant, a);
        }
        if (requant) x = out, out = out == a_.data() ? b_.data() : a_.data();
        break;
      }
      case OpKind::max_pool: {
        kernels::Pool2dGeometry g;
        g.N = n, g.C = s_in.C, g.H = s_in.H, g.W = s_in.W;
        g.R = op.pool.R, g.S = op.pool.S, g.stride_h = op.pool.stride_h, g.stride_w = op.pool.stride_w;
        g.pad_h = op.pool.pad_h, g.pad_w = op.pool.pad_w, g.ceil_mode = op.pool.ceil_mode;
        ref ? kernels::max_pool2d_u8_ref(g, x, out) : kernels::max_pool2d_u8(g, x, out);
        x = out, out = out == a_.data() ? b_.data() : a_.data();
        break;
      }
      case OpKind::flatten: break;  // NHWC is already the flattened order
      case OpKind::dequantize: {
        const int64_t F = s_out.C;
        const double* sc = op.dequant.scale.data();
        const double* of = op.dequant.offset.data();
        for (int64_t r = 0; r < n; ++r)
          for (int64_t f = 0; f < F; ++f) {
            const double acc =
                wide_out ? 256.0 * double(acc_[size_t(r * 2 * F + f)]) + double(acc_[size_t(r * 2 * F + F + f)])
                         : double(acc_[size_t(r * F + f)]);
            logits[r * F + f] = float(sc[f] * acc + of[f]);
          }
        break;
      }
      case OpKind::input: break;
    }
  }
}

std::vector<int32_t> Engine::predict(const uint8_t* images, int64_t n, Path path) {
  std::vector<float> logits(size_t(n * classes_));
  run(images, n, logits.data(), path);
  std::vector<int32_t> pred(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    const float* l = logits.data() + r * classes_;
    pred[size_t(r)] = int32_t(std::max_element(l, l + classes_) - l);
  }
  return pred;
}

}  // namespace lowbit::deploy
