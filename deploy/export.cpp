#include "deploy/export.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "autograd/variable.h"
#include "core/error.h"
#include "layers/activation.h"
#include "layers/container.h"
#include "layers/conv.h"
#include "layers/dropout.h"
#include "layers/linear.h"
#include "layers/norm.h"
#include "layers/pooling.h"

namespace lowbit::deploy {
namespace {

struct Leaf {
  std::string name;
  Module* m;
};

void collect(Module& m, const std::string& name, std::vector<Leaf>& out) {
  const auto children = m.named_children();
  if (children.empty()) return out.push_back({name, &m});
  auto* seq = dynamic_cast<Sequential*>(&m);
  LOWBIT_CHECK(seq != nullptr, "export: ", name.empty() ? "the model" : name, " (", m.type_name(),
               ") is not a sequential container; only sequential models are exported yet");
  std::map<const Module*, std::string> local;
  for (const auto& [n, c] : children) local[c.get()] = n;
  for (const auto& c : *seq) {
    const std::string& n = local[c.get()];
    collect(*c, name.empty() ? n : name + "." + n, out);
  }
}

std::vector<double> values(const Tensor& t) {
  const Tensor c = t.to(DType::f64).contiguous();
  return std::vector<double>(c.data<double>(), c.data<double>() + c.numel());
}

// The codes of one layer's weights, [K][inner] in the engine's order, with a step per channel.
struct Codes {
  std::vector<int16_t> c;
  std::vector<double> step;  // [K]
  int bits = 8;
  WeightCoding coding = WeightCoding::twos_complement;
  bool exact = true;
};

// Uniform grid of the simulated weights, or nullopt-like (exact = false) when none fits int8.
Codes grid_codes(const std::vector<double>& w, int64_t K, int k) {
  Codes r;
  double amax = 0;
  for (double v : w) amax = std::max(amax, std::abs(v));
  if (amax == 0) {
    r.c.assign(w.size(), 0), r.step.assign(size_t(K), 1.0), r.bits = 2;
    return r;
  }
  const double n1 = std::ldexp(1.0, k) - 1, n2 = std::ldexp(1.0, k - 1) - 1;
  std::vector<double> steps = {1 / n1, amax / n1, amax};
  if (n2 >= 1) steps.insert(steps.begin() + 1, {1 / n2, amax / n2});
  for (double step : steps) {
    bool ok = true, odd = true;
    int64_t lo = 0, hi = 0;
    std::vector<int64_t> c(w.size());
    for (size_t i = 0; i < w.size() && ok; ++i) {
      const double x = w[i] / step, rx = std::nearbyint(x);
      ok = std::abs(x - rx) <= 1e-4 * std::max(1.0, std::abs(rx)) && std::abs(rx) <= n1;
      c[i] = int64_t(rx);
      odd = odd && (c[i] & 1);
      lo = std::min(lo, c[i]), hi = std::max(hi, c[i]);
    }
    if (!ok) continue;
    const int64_t m = std::max(-lo, hi);
    if (odd) {
      int b = 1;
      while ((int64_t(1) << b) - 1 < m) ++b;
      if (b > 15 || m > kMaxWideWeight) return r.exact = false, r;
      r.bits = b, r.coding = WeightCoding::odd;
    } else {
      int b = 2;
      while (lo < -(int64_t(1) << (b - 1)) || hi > (int64_t(1) << (b - 1)) - 1) ++b;
      if (b > 16 || hi > kMaxWideWeight) return r.exact = false, r;
      r.bits = b, r.coding = WeightCoding::twos_complement;
    }
    r.c.assign(c.begin(), c.end());
    r.step.assign(size_t(K), step);
    return r;
  }
  r.exact = false;
  return r;
}

// 16 bits per output channel: step_k = max|w_k| / 32512, codes round(w / step_k) in [-32512, 32512]
// (32512 = 127 * 256: the engine's two int8 halves).
Codes wide_per_channel(const std::vector<double>& w, int64_t K) {
  constexpr double kMax = 32512;
  Codes r;
  r.exact = false;
  r.bits = 16;
  const size_t inner = w.size() / size_t(K);
  r.c.resize(w.size());
  r.step.resize(size_t(K));
  for (size_t k = 0; k < size_t(K); ++k) {
    double amax = 0;
    for (size_t j = 0; j < inner; ++j) amax = std::max(amax, std::abs(w[k * inner + j]));
    const double step = amax > 0 ? amax / kMax : 1.0;
    r.step[k] = step;
    for (size_t j = 0; j < inner; ++j)
      r.c[k * inner + j] = int16_t(std::clamp(std::nearbyint(w[k * inner + j] / step), -kMax, kMax));
  }
  return r;
}

// What an activation module's quantizer does: codes round(clip(y / alpha, 0, 1) n).
struct ActQuant {
  int bits = 0;
  double alpha = 1;
};

}  // namespace

ExportResult export_model(Module& model, const quant::Quantization& q, const ExportOptions& o) {
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  struct RestoreMode {
    Module& m;
    bool training;
    ~RestoreMode() { training ? m.train() : m.eval(); }
  } restore{model, was_training};

  const std::string method = q.method ? q.method->name : "none";
  LOWBIT_CHECK(method == "dorefa" || method == "wrpn" || method == "pact" || method == "binary" || method == "ternary",
               "export: quantization method '", method,
               "' is not exportable (exportable: dorefa, wrpn, pact, binary, ternary; lsq and u3 learn steps the "
               "integer format does not carry yet, and a float model has no activation quantizers)");
  LOWBIT_CHECK(o.mean.size() == o.std.size() && (o.mean.empty() || int64_t(o.mean.size()) == o.channels),
               "export: mean/std must have one value per input channel (", o.channels, ") or none");

  std::vector<Leaf> leaves;
  collect(model, "", leaves);
  std::map<const Module*, const quant::QuantizedLayer*> wq;
  for (const auto& l : q.layers) wq[l.module.get()] = &l;
  std::map<const Module*, int> aq;
  for (const auto& a : q.activations) aq[a.module.get()] = a.bits;

  ExportResult res;
  Model& m = res.model;
  m.meta["format"] = std::string("lowbit integer model");
  m.meta["model"] = o.model_name;
  m.meta["method"] = method;
  if (!o.source.empty()) m.meta["source"] = o.source;
  {
    Op in;
    in.kind = OpKind::input;
    in.input.C = o.channels, in.input.H = o.height, in.input.W = o.width;
    in.input.scale = 1.0 / 255, in.input.zero_point = 0;
    in.input.mean = o.mean, in.input.std = o.std;
    m.ops.push_back(in);
  }

  ActShape cur{o.height, o.width, o.channels};
  bool flat = false;
  bool first = true;     // the next weight layer reads the image
  double in_scale = 1;   // real value of an input code (after the first layer)
  int64_t pending = -1;  // index of a weight op awaiting its activation (or the end)
  std::string pending_name;
  for (size_t li = 0; li < leaves.size(); ++li) {
    const std::string& name = leaves[li].name;
    Module* mod = leaves[li].m;
    auto* conv = dynamic_cast<Conv2d*>(mod);
    auto* lin = dynamic_cast<Linear*>(mod);
    if (conv || lin) {
      LOWBIT_CHECK(pending < 0, "export: ", name, " follows ", pending_name,
                   " without a quantized activation between them (the integer engine needs codes)");
      const quant::QuantizedLayer* ql = wq.count(mod) ? wq[mod] : nullptr;
      const int trained = ql ? *ql->weight_bits : 32;
      Op op;
      op.kind = conv ? OpKind::conv : OpKind::linear;
      WeightOp& L = op.layer;
      L.name = name;
      std::vector<double> w = values(conv ? conv->effective_weight().data() : lin->effective_weight().data());
      std::vector<double> bias;
      if (conv ? conv->has_bias() : lin->has_bias()) bias = values(conv ? conv->bias().data() : lin->bias().data());
      int64_t inner_c = 0;  // input channels of the image (first layer: for the folded normalization)
      if (conv) {
        LOWBIT_CHECK(conv->groups() == 1, "export: ", name, ": grouped/depthwise convolutions are not exported yet");
        LOWBIT_CHECK(!flat, "export: ", name, ": a convolution after flatten");
        const auto& opt = conv->options();
        L.K = conv->out_channels(), L.C = conv->in_channels();
        L.R = conv->kernel_size()[0], L.S = conv->kernel_size()[1];
        L.stride_h = opt.stride[0], L.stride_w = opt.stride[1], L.pad_h = opt.padding[0], L.pad_w = opt.padding[1];
        L.dil_h = opt.dilation[0], L.dil_w = opt.dilation[1];
        LOWBIT_CHECK(L.C == cur.C, "export: ", name, " takes ", L.C, " channels, the activation has ", cur.C);
        // [K][C][R][S] -> [K][R][S][C]
        std::vector<double> t(w.size());
        for (int64_t k = 0; k < L.K; ++k)
          for (int64_t c = 0; c < L.C; ++c)
            for (int64_t r = 0; r < L.R; ++r)
              for (int64_t s = 0; s < L.S; ++s)
                t[size_t(((k * L.R + r) * L.S + s) * L.C + c)] = w[size_t(((k * L.C + c) * L.R + r) * L.S + s)];
        w.swap(t);
        inner_c = L.C;
      } else {
        LOWBIT_CHECK(flat || (cur.H == 1 && cur.W == 1), "export: ", name,
                     ": a linear layer on an image needs a flatten");
        L.K = lin->out_features(), L.C = lin->in_features();
        LOWBIT_CHECK(L.C == cur.H * cur.W * cur.C, "export: ", name, " takes ", L.C,
                     " features, the flattened activation has ", cur.H * cur.W * cur.C);
        // PyTorch's flatten is NCHW (feature c H W + h W + w); the engine's activation is NHWC.
        std::vector<double> t(w.size());
        const int64_t HW = cur.H * cur.W;
        for (int64_t k = 0; k < L.K; ++k)
          for (int64_t c = 0; c < cur.C; ++c)
            for (int64_t p = 0; p < HW; ++p) t[size_t(k * L.C + p * cur.C + c)] = w[size_t(k * L.C + c * HW + p)];
        w.swap(t);
        inner_c = cur.C;
      }
      const size_t inner = w.size() / size_t(L.K);
      res.fp32_parameter_bytes += 4 * int64_t(w.size() + bias.size());

      // The first layer reads pixel bytes p: its real input is (p/255 - mean_c)/std_c = f_c (p - z_c)
      // with f_c = 1/(255 std_c), z_c = 255 mean_c. Fold f_c into the weights.
      std::vector<double> f(size_t(inner_c), 1.0), z(size_t(inner_c), 0.0);
      if (first)
        for (int64_t c = 0; c < inner_c; ++c) {
          const size_t ch = o.mean.empty() ? 0 : size_t(c);
          f[size_t(c)] = o.mean.empty() ? 1.0 / 255 : 1.0 / (255 * o.std[ch]);
          z[size_t(c)] = o.mean.empty() ? 0.0 : 255 * o.mean[ch];
        }
      const bool equal_f = std::all_of(f.begin(), f.end(), [&](double v) { return v == f[0]; });
      Codes codes;
      bool rounded = trained >= 32 || (first && !equal_f);
      if (!rounded) {
        codes = grid_codes(w, L.K, trained);
        rounded = !codes.exact;
      }
      if (rounded) {
        std::vector<double> wf = w;
        if (first)
          for (size_t j = 0; j < wf.size(); ++j) wf[j] *= f[j % size_t(inner_c)];
        codes = wide_per_channel(wf, L.K);  // steps include f
      } else if (first) {
        for (double& s : codes.step) s *= f[0];
      }
      L.bits = codes.bits, L.coding = codes.coding, L.weights = codes.c;
      L.scale.resize(size_t(L.K)), L.offset.resize(size_t(L.K));
      for (int64_t k = 0; k < L.K; ++k) {
        double corr = 0;  // sum of codes times the pixel value of the real 0 (first layer)
        if (first)
          for (size_t j = 0; j < inner; ++j) corr += double(L.weights[size_t(k) * inner + j]) * z[j % size_t(inner_c)];
        L.scale[size_t(k)] = codes.step[size_t(k)] * (first ? 1.0 : in_scale);
        L.offset[size_t(k)] = (bias.empty() ? 0.0 : bias[size_t(k)]) - L.scale[size_t(k)] * corr;
      }
      if (first && (L.pad_h > 0 || L.pad_w > 0)) {
        const double zp = std::nearbyint(z[0]);
        for (double v : z)
          LOWBIT_CHECK(std::nearbyint(v) == zp, "export: ", name,
                       ": padding of the first layer needs one pixel code for the normalized 0 in every channel "
                       "(255 mean rounds to different codes)");
        L.in_zero_point = int32_t(zp);
      }
      if (conv) {
        cur.H = (cur.H + 2 * L.pad_h - L.dil_h * (L.R - 1) - 1) / L.stride_h + 1;
        cur.W = (cur.W + 2 * L.pad_w - L.dil_w * (L.S - 1) - 1) / L.stride_w + 1;
        cur.C = L.K;
      } else {
        cur = {1, 1, L.K};
      }
      L.out_qmax = 0;
      ExportedLayer e;
      e.name = name, e.trained_bits = trained, e.stored_bits = L.bits, e.exact = codes.exact;
      e.weights = int64_t(w.size());
      res.layers.push_back(e);
      m.meta["bits." + name] = int64_t(L.bits);
      m.meta["trained_bits." + name] = int64_t(trained);
      m.ops.push_back(std::move(op));
      pending = int64_t(m.ops.size()) - 1, pending_name = name;
      first = false;
      continue;
    }
    if (auto* bn = dynamic_cast<BatchNorm2d*>(mod)) {
      LOWBIT_CHECK(pending >= 0 && m.ops[size_t(pending)].kind == OpKind::conv, "export: ", name,
                   ": a batch norm must directly follow a convolution");
      WeightOp& L = m.ops[size_t(pending)].layer;
      const double eps = bn->options().eps;
      const std::vector<double> mean = values(bn->buffer("running_mean")), var = values(bn->buffer("running_var"));
      std::vector<double> gamma(size_t(L.K), 1.0), beta(size_t(L.K), 0.0);
      if (bn->options().affine) gamma = values(bn->param("weight").data()), beta = values(bn->param("bias").data());
      for (size_t k = 0; k < size_t(L.K); ++k) {
        const double a = gamma[k] / std::sqrt(var[k] + eps);
        L.scale[k] *= a;
        L.offset[k] = a * (L.offset[k] - mean[k]) + beta[k];
      }
      res.fp32_parameter_bytes += 4 * 2 * L.K;
      continue;
    }
    if (dynamic_cast<ReLU*>(mod) || dynamic_cast<Hardtanh*>(mod)) {
      LOWBIT_CHECK(pending >= 0, "export: ", name, ": an activation that does not follow a weight layer");
      const int bits = aq.count(mod) ? aq[mod] : 32;
      LOWBIT_CHECK(bits <= 8, "export: ", name, ": activations at ", bits,
                   " bits (float or > 8 bits); the integer engine needs activation codes of <= 8 bits (--abits)");
      double alpha = 1;
      if (method == "pact") alpha = mod->param("alpha").item();
      LOWBIT_CHECK(alpha > 0 && std::isfinite(alpha), "export: ", name, ": PACT alpha ", alpha, " is not > 0");
      WeightOp& L = m.ops[size_t(pending)].layer;
      const double n = std::ldexp(1.0, bits) - 1;
      for (size_t k = 0; k < size_t(L.K); ++k) L.scale[k] /= alpha, L.offset[k] /= alpha;
      L.out_qmax = int32_t(n);
      in_scale = alpha / n;
      res.layers.back().out_bits = bits;
      m.meta["abits." + pending_name] = int64_t(bits);
      pending = -1;
      continue;
    }
    if (auto* mp = dynamic_cast<MaxPool2d*>(mod)) {
      LOWBIT_CHECK(pending < 0, "export: ", name, ": max pooling before ", pending_name,
                   "'s activation is not supported (pool after the activation)");
      LOWBIT_CHECK(!flat, "export: ", name, ": max pooling after flatten");
      const auto& p = mp->options();
      Op op;
      op.kind = OpKind::max_pool;
      op.pool.R = p.kernel[0], op.pool.S = p.kernel[1];
      op.pool.stride_h = p.stride[0] ? p.stride[0] : p.kernel[0];
      op.pool.stride_w = p.stride[1] ? p.stride[1] : p.kernel[1];
      op.pool.pad_h = p.padding[0], op.pool.pad_w = p.padding[1], op.pool.ceil_mode = p.ceil_mode;
      {
        auto size = [&](int64_t in, int64_t k, int64_t s, int64_t pad) {
          const int64_t span = in + 2 * pad - k;
          int64_t out = (p.ceil_mode ? (span + s - 1) / s : span / s) + 1;
          if (p.ceil_mode && (out - 1) * s >= in + pad) --out;
          return out;
        };
        cur.H = size(cur.H, op.pool.R, op.pool.stride_h, op.pool.pad_h);
        cur.W = size(cur.W, op.pool.S, op.pool.stride_w, op.pool.pad_w);
      }
      m.ops.push_back(op);
      continue;
    }
    if (dynamic_cast<Flatten*>(mod)) {
      LOWBIT_CHECK(pending < 0, "export: ", name, ": flatten before ", pending_name, "'s activation");
      Op op;
      op.kind = OpKind::flatten;
      m.ops.push_back(op);
      flat = true;
      continue;
    }
    if (dynamic_cast<Dropout*>(mod) || dynamic_cast<Identity*>(mod)) continue;  // identity at inference
    throw Error(detail::concat("export: ", name, " (", mod->type_name(),
                               ") is not exportable yet (conv, linear, batch norm after conv, ReLU/ReLU6/Hardtanh "
                               "with an activation quantizer, max pooling, flatten, dropout)"));
  }
  LOWBIT_CHECK(pending >= 0, "export: the model must end with a weight layer (its logits are dequantized)");
  {
    const WeightOp& L = m.ops[size_t(pending)].layer;
    Op op;
    op.kind = OpKind::dequantize;
    op.dequant.scale = L.scale, op.dequant.offset = L.offset;
    m.ops.push_back(op);
  }
  validate(m, "export");
  return res;
}

}  // namespace lowbit::deploy
