#include "deploy/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
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
  g.groups = l.groups;
  return g;
}

// Padding values that differ between channels or are fractional: the engine pads a copy of the
// input with the nearest codes itself (and adds the fractional parts' contribution, below).
bool pads_per_channel(const WeightOp& l) {
  return std::any_of(l.pad_values.begin(), l.pad_values.end(),
                     [&](double v) { return v != l.pad_values[0] || v != std::nearbyint(v); });
}

uint8_t pad_code(const WeightOp& l) {
  return uint8_t(l.pad_values.empty() ? l.in_zero_point : int(std::nearbyint(l.pad_values[0])));
}

// Fractional padding values v_c = round(v_c) + e_c: the taps on padding add sum w[k][r][s][c] e_c
// to acc[p][q][k], fixed per position. It joins the requantization as an int32 residual in units of
// 2^-kFractionBits accumulator units (|error| <= 2^-(kFractionBits+1) units, ~1e-9 of a code here),
// or, for a layer whose residual is int32 accumulators with residual_scale = scale 2^-F (the first
// layer's low-order weight pass, deploy/export.h), is added to that residual in its units, 2^-F.
constexpr int kFractionBits = 11;

// tap(at, w0) for every output (p, q) and channel k, at = (p Q + q) K + k, and each of its taps (r, s)
// that falls on the padding, w0 = ((k R + r) S + s) C its first weight; in that order.
template <class Tap>
void padded_taps(const WeightOp& l, const ActShape& in, const ActShape& out, Tap&& tap) {
  for (int64_t p = 0; p < out.H; ++p)
    for (int64_t q = 0; q < out.W; ++q)
      for (int64_t k = 0; k < l.K; ++k)
        for (int64_t r = 0; r < l.R; ++r)
          for (int64_t s = 0; s < l.S; ++s) {
            const int64_t h = p * l.stride_h - l.pad_h + r * l.dil_h, w = q * l.stride_w - l.pad_w + s * l.dil_w;
            if (h < 0 || h >= in.H || w < 0 || w >= in.W)
              tap(size_t((p * out.W + q) * l.K + k), size_t(((k * l.R + r) * l.S + s) * l.C));
          }
}

std::vector<int32_t> padding_correction(const WeightOp& l, const ActShape& in, const ActShape& out, int fraction_bits) {
  std::vector<double> sum(size_t(out.H * out.W * l.K), 0.0);
  padded_taps(l, in, out, [&](size_t at, size_t w0) {
    for (int64_t c = 0; c < l.C; ++c) {
      const double v = l.pad_values[size_t(c)];
      sum[at] = std::fma(double(l.weights[w0 + size_t(c)]), v - std::nearbyint(v), sum[at]);
    }
  });
  std::vector<int32_t> corr(sum.size());
  for (size_t at = 0; at < sum.size(); ++at) {
    const double fixed = std::nearbyint(std::ldexp(sum[at], fraction_bits));
    LOWBIT_CHECK(std::abs(fixed) < 0x1p31, "Engine: ", l.name, ": the fractional padding's contribution ", sum[at],
                 " is beyond its fixed-point range");
    corr[at] = int32_t(fixed);
  }
  return corr;
}

// The engine's own loops over rows (padding copies, combining halves): parallel on the fast path,
// serial on the reference path (integer and exact either way).
template <class Fn>
void rows_in_parallel(bool ref, int64_t rows, Fn&& fn) {
  ref ? fn(int64_t(0), rows) : parallel_for(0, rows, std::max<int64_t>(1, rows / 16), fn);
}

size_t element_bytes(ValueType t) { return t == ValueType::u8 ? 1 : t == ValueType::s32 ? 4 : 8; }

// The largest code op i can output (uint8 outputs): what bounds the accumulators of its readers.
int64_t max_code(const Model& m, size_t i) {
  const Op& op = m.ops[i];
  switch (op.kind) {
    case OpKind::input: return 255;
    case OpKind::conv:
    case OpKind::linear:
      return op.layer.out_qmax <= 0 ? 0 : op.layer.out_signed ? 128 + op.layer.out_qmax : op.layer.out_qmax;
    case OpKind::shortcut: return std::max<int64_t>(max_code(m, size_t(source_of(m, i))), op.shortcut.zero_point);
    default: return max_code(m, size_t(source_of(m, i)));  // max_pool, flatten
  }
}

// max over the K rows of `w` (weights, K rows of equal length) of sum |w| times x_max: a bound of
// |acc| for inputs in [0, x_max].
template <class T>
int64_t accumulator_bound(const T* w, size_t count, int64_t K, int64_t x_max) {
  const size_t per = count / size_t(K);
  int64_t most = 0;
  for (size_t k = 0; k < size_t(K); ++k) {
    int64_t sum = 0;
    for (size_t j = 0; j < per; ++j) sum += std::abs(int64_t(w[k * per + j]));
    most = std::max(most, sum);
  }
  return std::max<int64_t>(1, most * x_max);
}

// The largest code weight op i multiplies: its input's, or a padding code (in_zero_point or the
// rounded pad_values, which may exceed the input's codes).
int64_t input_max_code(const Model& m, size_t i) {
  const WeightOp& l = m.ops[i].layer;
  int64_t x_max = max_code(m, size_t(source_of(m, i)));
  if (l.pad_h > 0 || l.pad_w > 0) {
    x_max = std::max<int64_t>(x_max, l.in_zero_point);
    for (double v : l.pad_values) x_max = std::max<int64_t>(x_max, int64_t(std::nearbyint(v)));
  }
  return x_max;
}

// ... of weight op i's (combined) accumulators.
int64_t accumulator_bound(const Model& m, size_t i) {
  const WeightOp& l = m.ops[i].layer;
  return accumulator_bound(l.weights.data(), l.weights.size(), l.K, input_max_code(m, i));
}

}  // namespace

Engine::Engine(Model model, const std::string& name, EngineOptions options) : model_(std::move(model)) {
  shapes_ = validate(model_, name);
  in_ = model_.ops.front().input;
  classes_ = model_.classes();
  const size_t nops = model_.ops.size();
  layers_.resize(nops);
  last_use_.assign(nops, 0);
  std::vector<bool> residual_source(nops, false);
  std::vector<int> readers(nops, 0);  // ops reading each op's output (as input or residual)
  for (size_t i = 1; i < nops; ++i) {
    const size_t src = size_t(source_of(model_, i));
    last_use_[src] = std::max(last_use_[src], i);
    ++readers[src];
    const Op& op = model_.ops[i];
    if ((op.kind == OpKind::conv || op.kind == OpKind::linear) && op.layer.residual >= 0) {
      const size_t r = size_t(op.layer.residual);
      residual_source[r] = true;
      last_use_[r] = std::max(last_use_[r], i);
      ++readers[r];
    }
  }
  for (size_t i = nops; i-- > 1;)  // flatten aliases its source's buffer: keep it while flatten's readers run
    if (model_.ops[i].kind == OpKind::flatten) {
      const size_t src = size_t(source_of(model_, i));
      last_use_[src] = std::max(last_use_[src], last_use_[i]);
    }
  for (size_t i = 1; i < nops; ++i) {
    const Op& op = model_.ops[i];
    if (op.kind != OpKind::conv && op.kind != OpKind::linear) continue;
    const WeightOp& l = op.layer;
    const ActShape& in = shapes_[size_t(source_of(model_, i))];
    if (op.kind == OpKind::linear && in.type == ValueType::s32) continue;  // after sum_pool: int64 loops
    Layer& L = layers_[i];
    const bool dw = l.groups > 1;
    L.wide = l.wide();
    if (std::any_of(l.pad_values.begin(), l.pad_values.end(), [](double v) { return v != std::nearbyint(v); })) {
      int bits = kFractionBits;
      if (l.residual >= 0) {  // into the int32 residual: scale / residual_scale must be one power of two 2^F
        LOWBIT_CHECK(l.scale[0] != 0 && l.residual_scale[0] != 0, "Engine: ", l.name,
                     ": fractional padding with a residual needs nonzero scales");
        const int F = int(std::lround(std::log2(std::abs(l.scale[0] / l.residual_scale[0]))));
        for (int64_t k = 0; k < l.K; ++k)
          LOWBIT_CHECK(F >= 0 && F <= 24 && l.scale[size_t(k)] == std::ldexp(l.residual_scale[size_t(k)], F),
                       "Engine: ", l.name,
                       ": fractional padding with a residual needs residual_scale = scale 2^-F (0 <= F <= 24)");
        bits = F;
      }
      L.correction = padding_correction(l, in, shapes_[i], bits);
      L.correction_into_residual = l.residual >= 0;
    }
    L.combine = L.wide && (residual_source[i] || l.residual >= 0 || (dw && l.out_qmax == 0) || !L.correction.empty());
    L.split_out = L.wide && !L.combine && l.out_qmax == 0;
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
    const int64_t K2 = L.wide ? 2 * l.K : l.K;
    if (op.kind == OpKind::conv && !dw) {
      kernels::Conv2dGeometry g = geometry(l, in, 1);
      g.K = K2;
      if (pads_per_channel(l)) g.H += 2 * g.pad_h, g.W += 2 * g.pad_w, g.pad_h = g.pad_w = 0;
      L.packed = kernels::pack_conv_weights_s8(g, L.w.data());
      // Exact Winograd where the geometry, the input codes and the weights qualify, and C >= 8: on fewer
      // channels its transforms cost more than the multiplies they save (bench_int8 --table, conv1 at C = 3).
      kernels::WinogradPackedS8 wp;
      if (options.winograd && !L.wide && g.C >= 8 &&
          kernels::pack_conv_weights_winograd_s8(g, L.w.data(), input_max_code(model_, i), wp))
        L.wino = std::move(wp);
    } else if (op.kind == OpKind::linear) {
      L.packed = kernels::pack_b_s8(l.C, K2, L.w.data(), l.C, /*trans_b=*/true);
    }
    if (l.out_qmax == 0) continue;
    if (L.wide && !L.combine) {  // acc_hi * (256 s) + acc_lo * s: the lo accumulators as the int32 residual
      std::vector<double> hi_scale(l.scale);
      for (double& v : hi_scale) v *= 256;
      L.requant = kernels::requantization_from_double(l.K, hi_scale.data(), l.offset.data(), l.out_qmax,
                                                      kernels::RequantResidual::s32, l.scale.data(), l.out_signed);
      const int64_t x_max = input_max_code(model_, i), half = int64_t(l.weights.size());
      kernels::bound_accumulators(L.requant, accumulator_bound(L.w.data(), size_t(half), l.K, x_max),
                                  accumulator_bound(L.w.data() + half, size_t(half), l.K, x_max));
      continue;
    }
    kernels::RequantResidual r = kernels::RequantResidual::none;
    std::vector<double> residual_scale = l.residual_scale;
    if (l.residual >= 0)
      r = shapes_[size_t(l.residual)].type == ValueType::u8 ? kernels::RequantResidual::u8
                                                            : kernels::RequantResidual::s32;
    if (!L.correction.empty() && !L.correction_into_residual) {  // the correction is the residual
      r = kernels::RequantResidual::s32;
      for (double s : l.scale) residual_scale.push_back(std::ldexp(s, -kFractionBits));
    }
    L.requant =
        kernels::requantization_from_double(l.K, l.scale.data(), l.offset.data(), l.out_qmax, r,
                                            residual_scale.empty() ? nullptr : residual_scale.data(), l.out_signed);
    // Bounds for the exact double-precision requantization (kernels::bound_accumulators).
    int64_t res = 1;
    if (l.residual >= 0 && shapes_[size_t(l.residual)].type == ValueType::u8)
      res = std::max<int64_t>(1, max_code(model_, size_t(l.residual)));
    else if (l.residual >= 0)
      res = accumulator_bound(model_, size_t(l.residual));
    if (!L.correction.empty()) {
      int64_t most = 0;
      for (int32_t v : L.correction) most = std::max<int64_t>(most, std::abs(int64_t(v)));
      res = L.correction_into_residual ? res + most : std::max<int64_t>(most, 1);
      LOWBIT_CHECK(res < (int64_t(1) << 31), "Engine: ", l.name,
                   ": its residual plus the fractional padding's contribution may overflow int32");
    }
    kernels::bound_accumulators(L.requant, accumulator_bound(model_, i), res);
  }
  for (size_t i = 1; i < nops; ++i) fold_low_pass(i, readers);
  chunk_images_ = std::max<int64_t>(1, kChunkBytes / bytes_per_image());
  for (size_t i = 1; i < model_.ops.size(); ++i) {  // multiply-accumulates per image (convolutions, linear)
    const Op& op = model_.ops[i];
    if (op.kind == OpKind::conv)
      macs_per_image_ += geometry(op.layer, shapes_[size_t(source_of(model_, i))], 1).macs();
    else if (op.kind == OpKind::linear)
      macs_per_image_ += op.layer.C * op.layer.K;
  }
}

void Engine::fold_low_pass(size_t i, const std::vector<int>& readers) {
  const Op& op = model_.ops[i];
  const WeightOp& l = op.layer;
  Layer& L = layers_[i];
  if (op.kind != OpKind::conv || !L.wide || !L.combine || l.groups != 1 || l.out_qmax == 0 || l.residual < 0 ||
      L.requant.residual != kernels::RequantResidual::s32 || (!L.correction.empty() && !L.correction_into_residual))
    return;
  const size_t j = size_t(l.residual);
  const Op& low_op = model_.ops[j];
  const WeightOp& b = low_op.layer;
  if (low_op.kind != OpKind::conv || layers_[j].wide || b.out_qmax != 0 || readers[j] != 1 ||
      source_of(model_, j) != source_of(model_, i) || !layers_[j].correction.empty() || b.groups != 1 || b.C != l.C ||
      b.K != l.K || b.R != l.R || b.S != l.S || b.stride_h != l.stride_h || b.stride_w != l.stride_w ||
      b.pad_h != l.pad_h || b.pad_w != l.pad_w || b.dil_h != l.dil_h || b.dil_w != l.dil_w ||
      std::any_of(b.weights.begin(), b.weights.end(), [](int16_t w) { return w < -128 || w > 127; }))
    return;
  const ActShape& in = shapes_[size_t(source_of(model_, i))];
  const ActShape& out = shapes_[i];
  // The layer pads with its codes, the pass with its own: take sum_{padded taps} w_low (code_layer -
  // code_pass) off the correction, per output position.
  auto code = [](const WeightOp& o, int64_t c) {  // the code o pads channel c with
    return pads_per_channel(o) ? int64_t(std::nearbyint(o.pad_values[size_t(c)])) : int64_t(pad_code(o));
  };
  std::vector<int64_t> pad_diff(size_t(l.C));
  for (int64_t c = 0; c < l.C; ++c) pad_diff[size_t(c)] = code(l, c) - code(b, c);
  std::vector<int64_t> extra(size_t(out.H * out.W * l.K), 0);
  padded_taps(l, in, out, [&](size_t at, size_t w0) {
    for (int64_t c = 0; c < l.C; ++c) extra[at] += int64_t(b.weights[w0 + size_t(c)]) * pad_diff[size_t(c)];
  });
  std::vector<int32_t> corr(extra.size());
  int64_t most = 0;
  for (size_t at = 0; at < corr.size(); ++at) {
    const int64_t v = (L.correction.empty() ? 0 : int64_t(L.correction[at])) - extra[at];
    most = std::max(most, std::abs(v));
    corr[at] = int32_t(std::clamp<int64_t>(v, INT32_MIN, INT32_MAX));
  }
  const int64_t x_max = std::max(input_max_code(model_, i), input_max_code(model_, j));
  if (accumulator_bound(b.weights.data(), b.weights.size(), b.K, x_max) + most >= (int64_t(1) << 31)) return;
  std::vector<int8_t> w3(L.w);  // [hi; lo] then the pass's rows
  for (int16_t w : b.weights) w3.push_back(int8_t(w));
  kernels::Conv2dGeometry g = geometry(l, in, 1);
  g.K = 3 * l.K;
  if (pads_per_channel(l)) g.H += 2 * g.pad_h, g.W += 2 * g.pad_w, g.pad_h = g.pad_w = 0;
  L.packed = kernels::pack_conv_weights_s8(g, w3.data());
  L.low_fused = true;
  L.fused_correction = std::move(corr);
  layers_[j].folded = true;
}

void Engine::run_weight_op(Workspace& ws, size_t i, int64_t n, bool ref) {
  const Op& op = model_.ops[i];
  const WeightOp& l = op.layer;
  const Layer& L = layers_[i];
  const size_t src = size_t(source_of(model_, i));
  const ActShape& si = shapes_[src];
  const ActShape& so = shapes_[i];
  const int64_t rows = n * so.H * so.W, K = l.K;
  if (op.kind == OpKind::linear && si.type == ValueType::s32) {  // after sum_pool: int64 sums of int32 inputs
    const int32_t* x = static_cast<const int32_t*>(ws.out[src]);
    int64_t* y = static_cast<int64_t*>(ws.out[i]);
    const int16_t* w = l.weights.data();
    auto body = [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t k = 0; k < K; ++k) {
          int64_t sum = 0;
          for (int64_t f = 0; f < l.C; ++f) sum += int64_t(x[r * l.C + f]) * w[k * l.C + f];
          y[r * K + k] = sum;
        }
    };
    ref ? body(0, n) : parallel_for(0, n, 1, body);
    return;
  }
  const bool conv = op.kind == OpKind::conv, dw = conv && l.groups > 1;
  const uint8_t* x = static_cast<const uint8_t*>(ws.out[src]);
  kernels::Conv2dGeometry g = geometry(l, si, n);
  if (conv && pads_per_channel(l)) {  // pad a copy of the input with each channel's code
    const int64_t Hp = si.H + 2 * l.pad_h, Wp = si.W + 2 * l.pad_w, C = l.C, row = Wp * C;
    ws.padded.resize(size_t(n * Hp * row));
    std::vector<uint8_t> border(static_cast<size_t>(row));  // a row of padding codes
    for (int64_t w = 0; w < Wp; ++w)
      for (int64_t c = 0; c < C; ++c) border[size_t(w * C + c)] = uint8_t(std::nearbyint(l.pad_values[size_t(c)]));
    rows_in_parallel(ref, n, [&](int64_t i0, int64_t i1) {
      for (int64_t img = i0; img < i1; ++img)
        for (int64_t h = 0; h < Hp; ++h) {
          uint8_t* d = ws.padded.data() + (img * Hp + h) * row;
          std::memcpy(d, border.data(), size_t(row));
          const int64_t ih = h - l.pad_h;
          if (ih >= 0 && ih < si.H) std::memcpy(d + l.pad_w * C, x + (img * si.H + ih) * si.W * C, size_t(si.W * C));
        }
    });
    x = ws.padded.data();
    g.H = Hp, g.W = Wp, g.pad_h = g.pad_w = 0;
  }
  const uint8_t zp = pad_code(l);
  const int32_t* res32 = nullptr;
  const uint8_t* res8 = nullptr;
  if (l.residual >= 0) {
    const void* r = ws.out[size_t(l.residual)];
    shapes_[size_t(l.residual)].type == ValueType::u8 ? (void)(res8 = static_cast<const uint8_t*>(r))
                                                      : (void)(res32 = static_cast<const int32_t*>(r));
  }
  uint8_t* out8 = static_cast<uint8_t*>(ws.out[i]);
  if (conv && !dw && L.wide && l.out_qmax > 0) {  // the halves combined and requantized block by block
    run_wide_conv(ws, i, g, x, zp, res32, res8, out8, ref);
    return;
  }
  if (!L.correction.empty() && L.correction_into_residual) {  // residual + the fractional padding's part
    const size_t per = L.correction.size();
    ws.correction.resize(std::max(ws.correction.size(), per * size_t(n)));
    ws.correction_of = SIZE_MAX;
    rows_in_parallel(ref, n, [&](int64_t i0, int64_t i1) {
      for (int64_t img = i0; img < i1; ++img) {
        const int32_t* r = res32 + size_t(img) * per;
        int32_t* d = ws.correction.data() + size_t(img) * per;
        for (size_t j = 0; j < per; ++j) d[j] = r[j] + L.correction[j];
      }
    });
    res32 = ws.correction.data();
  } else if (!L.correction.empty()) {  // the fractional padding's contribution, the same for every image
    const size_t per = L.correction.size();
    if (ws.correction_of != i || ws.correction.size() < per * size_t(n)) {
      ws.correction_of = i;
      ws.correction.resize(std::max(ws.correction.size(), per * size_t(n)));
      for (int64_t img = 0; img < n; ++img)
        std::copy(L.correction.begin(), L.correction.end(), ws.correction.begin() + img * per);
    }
    res32 = ws.correction.data();
  }
  if (l.out_qmax > 0 && !L.wide && conv) {  // fused requantization
    if (dw)
      ref ? kernels::depthwise_conv2d_u8s8u8_ref(g, x, zp, L.w.data(), L.requant, res32, res8, out8)
          : kernels::depthwise_conv2d_u8s8u8(g, x, zp, L.w.data(), L.requant, res32, res8, out8);
    else if (L.wino && !ref)
      kernels::conv2d_winograd_u8s8u8(g, x, zp, *L.wino, L.requant, res32, res8, out8);
    else
      ref ? kernels::conv2d_u8s8u8_ref(g, x, zp, L.w.data(), L.requant, res32, res8, out8)
          : kernels::conv2d_u8s8u8(g, x, zp, L.packed, L.requant, res32, res8, out8);
    return;
  }
  // Accumulators: straight into the output (int32 out, not wide) or into scratch.
  const int64_t K2 = L.wide ? 2 * K : K;
  const bool direct = l.out_qmax == 0 && (!L.wide || L.split_out);
  if (!direct && int64_t(ws.acc.size()) < rows * (K2 + K)) ws.acc.resize(size_t(rows * (K2 + K)));
  int32_t* acc = direct ? static_cast<int32_t*>(ws.out[i]) : ws.acc.data();
  // hi/lo halves of a wide layer: [rows][2K] rows (conv, linear) or [rows][K] hi then [rows][K] lo (depthwise).
  const int32_t* hi = acc;
  const int32_t* lo = dw ? acc + rows * K : acc + K;
  const int64_t ld = dw ? K : K2;
  if (dw) {
    g.K = K;
    for (int half = 0; half < (L.wide ? 2 : 1); ++half) {
      const int8_t* w = L.w.data() + half * K * l.R * l.S;
      ref ? kernels::depthwise_conv2d_u8s8s32_ref(g, x, zp, w, acc + half * rows * K)
          : kernels::depthwise_conv2d_u8s8s32(g, x, zp, w, acc + half * rows * K);
    }
  } else if (conv) {
    g.K = K2;
    if (ref)
      kernels::conv2d_u8s8s32_ref(g, x, zp, L.w.data(), acc);
    else if (L.wino)
      kernels::conv2d_winograd_u8s8s32(g, x, zp, *L.wino, acc);
    else
      kernels::conv2d_u8s8s32(g, x, zp, L.packed, acc);
  } else if (ref) {
    kernels::gemm_u8s8s32_ref(n, K2, l.C, x, l.C, L.w.data(), l.C, true, acc, K2, false);
  } else {
    kernels::gemm_u8s8s32({.M = n, .A = x, .lda = l.C, .B = &L.packed, .C = acc, .ldc = K2});
  }
  if (direct) return;
  const int32_t* y32 = acc;  // the int32 accumulators to requantize, [rows][K]
  if (L.combine) {           // 256 hi + lo, int32 by validate's bound
    int32_t* c = l.out_qmax == 0 ? static_cast<int32_t*>(ws.out[i]) : ws.acc.data() + rows * K2;
    rows_in_parallel(ref, rows, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t k = 0; k < K; ++k) c[r * K + k] = 256 * hi[r * ld + k] + lo[r * ld + k];
    });
    if (l.out_qmax == 0) return;
    y32 = c;
  }
  kernels::RequantArgs a{.rows = rows, .acc = y32, .ld_acc = K, .out = out8, .ld_out = K};
  if (L.wide && !L.combine) {
    a.acc = hi, a.ld_acc = ld, a.residual_s32 = lo, a.ld_residual = ld;
  } else if (res32 || res8) {
    a.residual_s32 = res32, a.residual_u8 = res8, a.ld_residual = K;
  }
  ref ? kernels::requantize_u8_ref(L.requant, a) : kernels::requantize_u8(L.requant, a);
}

void Engine::run_wide_conv(Workspace& ws, size_t i, const kernels::Conv2dGeometry& g_in, const uint8_t* x, uint8_t zp,
                           const int32_t* res32, const uint8_t* res8, uint8_t* out8, bool ref) {
  const WeightOp& l = model_.ops[i].layer;
  const Layer& L = layers_[i];
  const int64_t K = l.K, pixels = g_in.P() * g_in.Q();
  const bool fused = L.low_fused && !ref;  // [hi; lo; the low-order pass], the pass's output not computed
  const int64_t ld = fused ? 3 * K : 2 * K;
  kernels::Conv2dGeometry g = g_in;
  g.K = ld;
  // Rows [r0, r0 + rows) of the output from acc [rows][2K] (hi then lo per row): requantized with the
  // lo accumulators as the residual, or (combine) 256 hi + lo with the layer's residual plus the
  // fractional padding's contribution.
  auto epilogue = [&](int64_t r0, int64_t rows, const int32_t* acc) {
    kernels::RequantArgs a{.rows = rows, .acc = acc, .ld_acc = 2 * K, .out = out8 + r0 * K, .ld_out = K};
    if (!L.combine) {
      a.residual_s32 = acc + K, a.ld_residual = 2 * K;
    } else if (!ref && L.requant.residual == kernels::RequantResidual::s32) {
      // One pass: 256 hi + lo and the residual plus the correction formed in the registers, by runs of
      // rows within one image (the correction is per output position).
      const std::vector<int32_t>& corr = fused ? L.fused_correction : L.correction;
      const bool summed = !corr.empty();
      for (int64_t r = 0; r < rows;) {
        const int64_t p = (r0 + r) % pixels, n = summed ? std::min(rows - r, pixels - p) : rows - r;
        kernels::WideRequantArgs w{.rows = n, .hi = acc + r * ld, .lo = acc + r * ld + K, .ld_acc = ld};
        if (fused)
          w.residual_a = acc + r * ld + 2 * K, w.ld_a = ld;
        else if (res32)
          w.residual_a = res32 + (r0 + r) * K, w.ld_a = K;
        if (summed) w.residual_b = corr.data() + p * K, w.ld_b = K;
        w.out = out8 + (r0 + r) * K, w.ld_out = K;
        kernels::requantize_wide_u8(L.requant, w);
        r += n;
      }
      return;
    } else {
      thread_local std::vector<int32_t> scratch;
      const bool summed = !L.correction.empty();
      if (int64_t(scratch.size()) < rows * K * (summed ? 2 : 1)) scratch.resize(size_t(rows * K * (summed ? 2 : 1)));
      int32_t* c = scratch.data();
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < K; ++k) c[r * K + k] = 256 * acc[r * 2 * K + k] + acc[r * 2 * K + K + k];
      a.acc = c, a.ld_acc = K, a.ld_residual = K;
      if (summed) {  // the residual (if any) plus the correction of each row's pixel
        int32_t* sum = c + rows * K;
        for (int64_t r = 0; r < rows; ++r) {
          const int32_t* corr = L.correction.data() + (r0 + r) % pixels * K;
          const int32_t* res = res32 ? res32 + (r0 + r) * K : nullptr;
          for (int64_t k = 0; k < K; ++k) sum[r * K + k] = (res ? res[k] : 0) + corr[k];
        }
        a.residual_s32 = sum;
      } else if (res32 || res8) {
        a.residual_s32 = res32 ? res32 + r0 * K : nullptr, a.residual_u8 = res8 ? res8 + r0 * K : nullptr;
      }
    }
    ref ? kernels::requantize_u8_ref(L.requant, a) : kernels::detail::requantize_u8_rows(L.requant, a);
  };
  if (!ref) {
    kernels::conv2d_u8s8s32_blocks(g, x, zp, L.packed, epilogue);
    return;
  }
  const int64_t rows = g.N * pixels;
  if (int64_t(ws.acc.size()) < rows * 2 * K) ws.acc.resize(size_t(rows * 2 * K));
  kernels::conv2d_u8s8s32_ref(g, x, zp, L.w.data(), ws.acc.data());
  epilogue(0, rows, ws.acc.data());
}

bool Engine::runs_layer_by_layer(int64_t n) const {
  return chunk_override_ > 0 ? n <= chunk_override_ : n == 1 && macs_per_image_ >= kLayerParallelMacs;
}

void Engine::set_chunk_images(int64_t c) {
  LOWBIT_CHECK(c >= 0, "Engine::set_chunk_images: need c >= 0, got ", c);
  chunk_override_ = c;
}

int64_t Engine::bytes_per_image() const {
  const size_t nops = model_.ops.size();
  std::vector<int64_t> bytes(nops, 0);  // each op's output per image (flatten: none, it aliases its source)
  for (size_t i = 0; i < nops; ++i) {
    const ActShape& s = shapes_[i];
    const OpKind k = model_.ops[i].kind;
    if (k == OpKind::flatten || k == OpKind::dequantize) continue;
    bytes[i] = s.H * s.W * s.C * int64_t(element_bytes(s.type)) * (layers_[i].split_out ? 2 : 1);
  }
  int64_t most = 0;
  for (size_t i = 1; i < nops; ++i) {
    int64_t live = 0;  // the outputs alive while op i runs (its own included)
    for (size_t j = 0; j <= i; ++j)
      if (j == i || last_use_[j] >= i) live += bytes[j];
    const Op& op = model_.ops[i];
    if (op.kind == OpKind::conv || op.kind == OpKind::linear) {  // scratch: padded copies, accumulators
      const WeightOp& l = op.layer;
      const ActShape& si = shapes_[size_t(source_of(model_, i))];
      const ActShape& so = shapes_[i];
      const Layer& L = layers_[i];
      if (L.wino)  // the Winograd kernels' padded copy (whole tiles)
        live += kernels::conv_winograd_padded_bytes_per_image(geometry(l, si, 1));
      else if (l.pad_h > 0 || l.pad_w > 0)
        live += (si.H + 2 * l.pad_h) * (si.W + 2 * l.pad_w) * ((l.C + 3) / 4 * 4) * (pads_per_channel(l) ? 2 : 1);
      const bool blockwise = op.kind == OpKind::conv && l.out_qmax > 0 && (!L.wide || l.groups == 1);
      const bool direct = l.out_qmax == 0 && (!L.wide || L.split_out);
      if (!blockwise && !direct) live += so.H * so.W * l.K * (L.wide ? 3 : 1) * 4;         // run_weight_op's acc
      if (!L.correction.empty() && !(blockwise && L.wide)) live += so.H * so.W * l.K * 4;  // ws.correction
    }
    most = std::max(most, live);
  }
  return std::max<int64_t>(most, 1);
}

void Engine::run(const uint8_t* images, int64_t n, float* logits, Path path) {
  LOWBIT_CHECK(n >= 1, "Engine::run: batch must be >= 1, got ", n);
  const bool ref = path == Path::reference;
  const size_t nops = model_.ops.size();
  auto prepare = [&](Workspace& ws) {
    ws.out.assign(nops, nullptr);
    ws.buffer_of.assign(nops, -1);
    ws.profile.resize(profile_.empty() ? 0 : nops, 0.0);  // collect_profile zeroes it
  };
  auto collect_profile = [&](double divisor) {
    if (profile_.empty()) return;
    for (auto& ws : workspaces_)
      for (size_t i = 0; i < ws->profile.size(); ++i) profile_[i] += ws->profile[i] / divisor, ws->profile[i] = 0;
  };
  if (workspaces_.empty()) workspaces_.push_back(std::make_unique<Workspace>());
  const int64_t chunk = chunk_images();
  // Layer by layer over the whole batch, each layer's kernels parallel: the reference path; batches
  // up to an explicit chunk size; one image of a large model. Otherwise image-parallel, small
  // batches too (one chunk per thread): on a small model the layers' fork and join cost more than
  // their work shares (measured, 2 threads, batch 1: ResNet-20 6,750 img/s serial against 6,050
  // layer-parallel, MobileNet v1 (CIFAR) 2,900 against 2,470; batch 2-11 ResNet-20 layer-parallel
  // ran no faster than one thread; VGG-11 (CIFAR, 153 M MACs) at batch 1 gains from it, 1,720 against 1,380).
  if (ref || runs_layer_by_layer(n)) {
    prepare(*workspaces_[0]);
    run_ops(*workspaces_[0], images, n, logits, ref);
    collect_profile(1.0);
    return;
  }
  // Image-parallel: chunks of at most `chunk` images, a whole number per thread (sizes within one of
  // each other), each run start to end by one thread with its kernels serial and a workspace of its own.
  const int64_t threads = num_threads();
  int64_t chunks = (n + chunk - 1) / chunk;
  chunks = std::min(n, (chunks + threads - 1) / threads * threads);
  const int64_t image = in_.H * in_.W * in_.C;
  auto acquire = [&]() {  // a free workspace (at most one per thread in flight: the chunks' kernels do not nest)
    std::lock_guard<std::mutex> lock(mu_);
    auto free = std::find_if(workspaces_.begin(), workspaces_.end(), [](const auto& ws) { return !ws->busy; });
    if (free == workspaces_.end()) free = workspaces_.insert(workspaces_.end(), std::make_unique<Workspace>());
    (*free)->busy = true;
    return free->get();
  };
  struct Release {
    std::mutex& mu;
    Workspace* ws;
    ~Release() {
      std::lock_guard<std::mutex> lock(mu);
      ws->busy = false;
    }
  };
  parallel_for(0, chunks, 1, [&](int64_t lo, int64_t hi) {
    SerialScope serial;
    for (int64_t c = lo; c < hi; ++c) {
      const int64_t i0 = n * c / chunks, i1 = n * (c + 1) / chunks;
      Workspace* ws = acquire();
      Release release{mu_, ws};
      prepare(*ws);
      run_ops(*ws, images + i0 * image, i1 - i0, logits + i0 * classes_, false);
    }
  });
  collect_profile(double(std::min(threads, chunks)));
}

void Engine::run_ops(Workspace& ws, const uint8_t* images, int64_t n, float* logits, bool ref) {
  const size_t nops = model_.ops.size();
  std::vector<Buffer>& pool = ws.pool;
  std::vector<void*>& out = ws.out;
  for (Buffer& b : pool) b.busy = false;
  out[0] = const_cast<uint8_t*>(images);
  for (size_t i = 1; i < nops; ++i) {
    const Op& op = model_.ops[i];
    const size_t src = size_t(source_of(model_, i));
    const ActShape& s_in = shapes_[src];
    const ActShape& s_out = shapes_[i];
    if (op.kind == OpKind::flatten) {
      out[i] = out[src];
      continue;
    }
    if (layers_[i].folded && !ref) continue;  // computed by the layer that reads it (fold_low_pass)
    if (op.kind == OpKind::dequantize) {
      const int64_t F = s_out.C;
      const double* sc = op.dequant.scale.data();
      const double* of = op.dequant.offset.data();
      const bool split = layers_[src].split_out;
      for (int64_t r = 0; r < n; ++r)
        for (int64_t f = 0; f < F; ++f) {
          double acc;
          if (s_in.type == ValueType::s64) {
            acc = double(static_cast<const int64_t*>(out[src])[r * F + f]);
          } else {
            const int32_t* a = static_cast<const int32_t*>(out[src]);
            acc = split ? 256.0 * double(a[r * 2 * F + f]) + double(a[r * 2 * F + F + f]) : double(a[r * F + f]);
          }
          logits[r * F + f] = float(std::fma(sc[f], acc, of[f]));  // fused: as the runtime, whatever the ISA
        }
      break;
    }
    // The output buffer: the smallest free one that holds it, else the largest free one (grown), else a new one.
    const size_t bytes =
        size_t(n * s_out.H * s_out.W * s_out.C) * element_bytes(s_out.type) * (layers_[i].split_out ? 2 : 1);
    int64_t fit = -1, largest = -1;
    for (size_t b = 0; b < pool.size(); ++b) {
      if (pool[b].busy) continue;
      const size_t have = pool[b].bytes.size();
      if (have >= bytes && (fit < 0 || have < pool[size_t(fit)].bytes.size())) fit = int64_t(b);
      if (largest < 0 || have > pool[size_t(largest)].bytes.size()) largest = int64_t(b);
    }
    int64_t pick = fit >= 0 ? fit : largest;
    if (pick < 0) pool.emplace_back(), pick = int64_t(pool.size()) - 1;
    Buffer& buf = pool[size_t(pick)];
    if (buf.bytes.size() < bytes) buf.bytes.resize(bytes);
    buf.busy = true;
    ws.buffer_of[i] = pick;
    out[i] = buf.bytes.data();
    const uint8_t* x = static_cast<const uint8_t*>(out[src]);
    uint8_t* y = static_cast<uint8_t*>(out[i]);
    const auto t0 = std::chrono::steady_clock::now();
    switch (op.kind) {
      case OpKind::conv:
      case OpKind::linear: run_weight_op(ws, i, n, ref); break;
      case OpKind::max_pool: {
        kernels::Pool2dGeometry g;
        g.N = n, g.C = s_in.C, g.H = s_in.H, g.W = s_in.W;
        g.R = op.pool.R, g.S = op.pool.S, g.stride_h = op.pool.stride_h, g.stride_w = op.pool.stride_w;
        g.pad_h = op.pool.pad_h, g.pad_w = op.pool.pad_w, g.ceil_mode = op.pool.ceil_mode;
        ref ? kernels::max_pool2d_u8_ref(g, x, y) : kernels::max_pool2d_u8(g, x, y);
        break;
      }
      case OpKind::sum_pool: {
        const int64_t HW = s_in.H * s_in.W, C = s_in.C;
        int32_t* sums = static_cast<int32_t*>(out[i]);
        for (int64_t r = 0; r < n; ++r) {
          int32_t* d = sums + r * C;
          std::fill(d, d + C, 0);
          for (int64_t p = 0; p < HW; ++p)
            for (int64_t c = 0; c < C; ++c) d[c] += x[(r * HW + p) * C + c];
        }
        break;
      }
      case OpKind::shortcut: {
        const ShortcutOp& sc = op.shortcut;
        const kernels::ShortcutGeometry g{.N = n,
                                          .H = s_in.H,
                                          .W = s_in.W,
                                          .C = s_in.C,
                                          .stride_h = sc.stride_h,
                                          .stride_w = sc.stride_w,
                                          .pad_lo = sc.pad_lo,
                                          .pad_hi = sc.pad_hi};
        const uint8_t zp = uint8_t(sc.zero_point);
        ref ? kernels::shortcut_pad_u8_ref(g, zp, x, y) : kernels::shortcut_pad_u8(g, zp, x, y);
        break;
      }
      default: break;
    }
    if (!ws.profile.empty())
      ws.profile[i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (size_t j = 0; j < i; ++j)  // free the buffers whose last reader was op i
      if (last_use_[j] == i && ws.buffer_of[j] >= 0) pool[size_t(ws.buffer_of[j])].busy = false;
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
