#include "deploy/export.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "autograd/variable.h"
#include "core/error.h"
#include "deploy/entropy.h"
#include "layers/activation.h"
#include "layers/container.h"
#include "layers/conv.h"
#include "layers/dropout.h"
#include "layers/linear.h"
#include "layers/norm.h"
#include "layers/pooling.h"
#include "models/mobilenet.h"
#include "quant/quantizers.h"

namespace lowbit::deploy {
namespace {

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
Codes grid_codes(const std::vector<double>& w, int64_t K, int k, double learned_step = 0) {
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
  if (learned_step > 0) steps.insert(steps.begin(), learned_step);  // LSQ's w_step
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

// The first layer's second, low-order pass: the remainder of its 16-bit rounding at 2^-7 of the step
// (codes within +-64: one int8 pass; the weights then hold to 2^-8 of a step, ~1e-7 of the largest).
constexpr int kLowPassBits = 7;

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

// The value the next op reads: an op's output and the real value of one of its integer units.
struct Cursor {
  int32_t op = 0;
  ActShape shape;
  double scale = 1;  // real value of one unit: a code (alpha / n) or, after sum_pool, a sum (alpha / n / (H W))
  double zero = 0;   // the value standing for real 0: 0, 128 for signed codes, times H W after sum_pool
};

// What a residual adds before the activation: real value scale_k * res + offset_k.
struct Residual {
  int32_t op = -1;
  std::vector<double> scale, offset;  // [K]
};

class Exporter {
 public:
  Exporter(const quant::Quantization& q, const ExportOptions& o, ExportResult& res)
      : o_(o), res_(res), m_(res.model), method_(q.method ? q.method->name : "none") {
    for (const auto& l : q.layers) wq_[l.module.get()] = &l, wbits_[l.module.get()] = q.stored_weight_bits(l);
    for (const auto& a : q.activations) aq_[a.module.get()] = a.bits;
    for (const auto& a : q.signed_activations) sq_[a.module.get()] = a.bits;
  }

  const std::string& method() const { return method_; }

  void begin() {
    m_.meta["format"] = std::string("lowbit integer model");
    m_.meta["model"] = o_.model_name;
    m_.meta["method"] = method_;
    if (!o_.source.empty()) m_.meta["source"] = o_.source;
    Op in;
    in.kind = OpKind::input;
    in.input.C = o_.channels, in.input.H = o_.height, in.input.W = o_.width;
    in.input.scale = 1.0 / 255, in.input.zero_point = 0;
    in.input.mean = o_.mean, in.input.std = o_.std;
    m_.ops.push_back(in);
    cur_.op = 0;
    cur_.shape = {o_.height, o_.width, o_.channels, ValueType::u8, false};
  }

  void visit(Module& mod, const std::string& name) {
    const auto children = mod.named_children();
    if (children.empty()) return leaf(mod, name);
    if (mod.type_name() == "BasicBlock") return basic_block(mod, name);
    if (auto* ir = dynamic_cast<models::InvertedResidual*>(&mod)) return inverted_residual(*ir, name);
    auto* seq = dynamic_cast<Sequential*>(&mod);
    LOWBIT_CHECK(seq != nullptr, "export: ", name.empty() ? "the model" : name, " (", mod.type_name(),
                 ") is not exportable: the graphs exported are Sequential containers, ResNet BasicBlocks and "
                 "MobileNet v2 InvertedResiduals");
    std::map<const Module*, std::string> local;
    for (const auto& [n, c] : children) local[c.get()] = n;
    for (const auto& c : *seq) visit(*c, join(name, local[c.get()]));
  }

  void end() {
    LOWBIT_CHECK(pending_ >= 0, "export: the model must end with a weight layer (its logits are dequantized)");
    const WeightOp& L = m_.ops[size_t(pending_)].layer;
    Op op;
    op.kind = OpKind::dequantize;
    op.src = pending_;
    op.dequant.scale = L.scale, op.dequant.offset = L.offset;
    m_.ops.push_back(op);
  }

 private:
  static std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }

  int32_t push(Op op) {
    if (op.src < 0) op.src = cur_.op;
    m_.ops.push_back(std::move(op));
    return int32_t(m_.ops.size()) - 1;
  }

  void require_codes(const std::string& name, const char* what) {
    LOWBIT_CHECK(pending_ < 0, "export: ", name, ": ", what, " follows ", pending_name_,
                 " without a quantized activation between them (the integer engine needs codes)");
  }

  // ResNet's BasicBlock (models/resnet.h): relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x)), the
  // shortcut a projection (child "downsample": conv 1x1 + BN), a zero-pad ("shortcut") or x itself.
  // The shortcut's ops come first (a residual must be an earlier op).
  void basic_block(Module& block, const std::string& name) {
    std::map<std::string, Module*> c;
    for (const auto& [n, m] : block.named_children()) c[n] = m.get();
    for (const char* n : {"conv1", "bn1", "relu1", "conv2", "bn2", "relu2"})
      LOWBIT_CHECK(c.count(n), "export: ", name, ": a BasicBlock without ", n);
    require_codes(name, "a residual block");
    const Cursor x = cur_;
    Residual r;
    r.op = x.op;
    const int64_t K = dynamic_cast<Conv2d&>(*c["conv2"]).out_channels();
    r.scale.assign(size_t(K), x.scale), r.offset.assign(size_t(K), -x.scale * x.zero);
    if (c.count("downsample")) {
      visit(*c["downsample"], join(name, "downsample"));
      LOWBIT_CHECK(pending_ >= 0, "export: ", name, ".downsample must end with a weight layer (and its batch norm)");
      const WeightOp& P = m_.ops[size_t(pending_)].layer;
      r.op = pending_, r.scale = P.scale, r.offset = P.offset;
      res_.layers.back().out_bits = 0;
      pending_ = -1;
    } else if (c.count("shortcut")) {
      const auto& conv1 = dynamic_cast<Conv2d&>(*c["conv1"]);
      Op op;
      op.kind = OpKind::shortcut;
      op.shortcut.stride_h = conv1.options().stride[0], op.shortcut.stride_w = conv1.options().stride[1];
      op.shortcut.pad_lo = op.shortcut.pad_hi = (K - x.shape.C) / 2;
      op.shortcut.zero_point = int32_t(x.zero);  // the added channels are real 0
      LOWBIT_CHECK(K >= x.shape.C && (K - x.shape.C) % 2 == 0, "export: ", name, ": zero-pad shortcut from ", x.shape.C,
                   " to ", K, " channels");
      r.op = push(op);
    }
    cur_ = x;
    for (const char* n : {"conv1", "bn1", "relu1", "conv2", "bn2"}) visit(*c[n], join(name, n));
    residual_ = std::move(r);
    visit(*c["relu2"], join(name, "relu2"));
  }

  // MobileNet v2's InvertedResidual (models/mobilenet.h): out(x + conv(x)) or out(conv(x)), conv
  // ending with the projection (1x1 conv + BN, no activation), out a StreamPoint with a signed
  // quantizer. The projection is requantized to signed codes by (1) with x's codes as its residual
  // (residual_scale = a_scale(x) / alpha, x's zero point folded into the offset).
  void inverted_residual(models::InvertedResidual& block, const std::string& name) {
    std::map<std::string, Module*> c;
    for (const auto& [n, m] : block.named_children()) c[n] = m.get();
    LOWBIT_CHECK(c.count("conv") && c.count("out"), "export: ", name, ": an InvertedResidual without conv or out");
    require_codes(name, "an inverted residual block");
    const Cursor x = cur_;
    visit(*c["conv"], join(name, "conv"));
    LOWBIT_CHECK(pending_ >= 0, "export: ", name,
                 ".conv must end with its projection (a weight layer and its batch norm, no activation)");
    if (block.uses_residual()) {
      const size_t K = size_t(m_.ops[size_t(pending_)].layer.K);
      Residual r;
      r.op = x.op;
      r.scale.assign(K, x.scale), r.offset.assign(K, -x.scale * x.zero);
      residual_ = std::move(r);
    }
    visit(*c["out"], join(name, "out"));
  }

  void leaf(Module& mod, const std::string& name) {
    if (auto* conv = dynamic_cast<Conv2d*>(&mod)) return weight_layer(conv, nullptr, name);
    if (auto* lin = dynamic_cast<Linear*>(&mod)) return weight_layer(nullptr, lin, name);
    if (auto* bn = dynamic_cast<BatchNorm2d*>(&mod)) return batch_norm(*bn, name);
    if (dynamic_cast<ReLU*>(&mod) || dynamic_cast<Hardtanh*>(&mod)) return activation(mod, name);
    if (dynamic_cast<StreamPoint*>(&mod)) return stream_point(mod, name);
    if (auto* mp = dynamic_cast<MaxPool2d*>(&mod)) return max_pool(*mp, name);
    if (dynamic_cast<GlobalAvgPool2d*>(&mod)) {
      require_codes(name, "average pooling");
      LOWBIT_CHECK(!cur_.shape.flat, "export: ", name, ": average pooling after flatten");
      Op op;
      op.kind = OpKind::sum_pool;
      const double hw = double(cur_.shape.H * cur_.shape.W);
      cur_ = {push(op), {1, 1, cur_.shape.C, ValueType::s32, true}, cur_.scale / hw, cur_.zero * hw};
      return;
    }
    if (dynamic_cast<Flatten*>(&mod)) {
      require_codes(name, "flatten");
      if (cur_.shape.flat) return;  // after sum_pool
      Op op;
      op.kind = OpKind::flatten;
      flattened_ = cur_.shape;
      cur_ = {push(op), {1, 1, cur_.shape.H * cur_.shape.W * cur_.shape.C, ValueType::u8, true}, cur_.scale, cur_.zero};
      return;
    }
    if (dynamic_cast<Dropout*>(&mod) || dynamic_cast<Identity*>(&mod)) return;  // identity at inference
    throw Error(
        detail::concat("export: ", name, " (", mod.type_name(),
                       ") is not exportable yet (conv, depthwise conv, linear, batch norm after conv, "
                       "ReLU/ReLU6/Hardtanh with an activation quantizer, a StreamPoint with a signed one, "
                       "max pooling, global average pooling, flatten, dropout, ResNet BasicBlocks, MobileNet v2 "
                       "InvertedResiduals)"));
  }

  void weight_layer(Conv2d* conv, Linear* lin, const std::string& name) {
    require_codes(name, "a weight layer");
    Module* mod = conv ? static_cast<Module*>(conv) : lin;
    const quant::QuantizedLayer* ql = wq_.count(mod) ? wq_[mod] : nullptr;
    // The bits the weights are stored at: the configured k, or inferred from learned parameters (U3).
    const int trained = ql && *ql->weight_bits < 32 ? wbits_[mod] : 32;
    const bool first = cur_.op == 0;  // reads the image
    const ActShape in = cur_.shape;
    Op op;
    op.kind = conv ? OpKind::conv : OpKind::linear;
    WeightOp& L = op.layer;
    L.name = name;
    std::vector<double> w = values(conv ? conv->effective_weight().data() : lin->effective_weight().data());
    std::vector<double> bias;
    if (conv ? conv->has_bias() : lin->has_bias()) bias = values(conv ? conv->bias().data() : lin->bias().data());
    int64_t inner_c = 0;  // input channels per weight row (first layer: for the folded normalization)
    ActShape out;
    if (conv) {
      LOWBIT_CHECK(!in.flat, "export: ", name, ": a convolution after flatten");
      const auto& opt = conv->options();
      L.K = conv->out_channels(), L.C = conv->in_channels(), L.groups = conv->groups();
      LOWBIT_CHECK(L.groups == 1 || (L.groups == L.C && L.C == L.K), "export: ", name, ": grouped convolution (",
                   L.groups, " groups of ", L.C,
                   " channels): only depthwise (groups = C = K) and groups 1 are exported");
      L.R = conv->kernel_size()[0], L.S = conv->kernel_size()[1];
      L.stride_h = opt.stride[0], L.stride_w = opt.stride[1], L.pad_h = opt.padding[0], L.pad_w = opt.padding[1];
      L.dil_h = opt.dilation[0], L.dil_w = opt.dilation[1];
      LOWBIT_CHECK(L.C == in.C, "export: ", name, " takes ", L.C, " channels, the activation has ", in.C);
      const int64_t Cg = L.C / L.groups;
      // [K][Cg][R][S] -> [K][R][S][Cg]
      std::vector<double> t(w.size());
      for (int64_t k = 0; k < L.K; ++k)
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t r = 0; r < L.R; ++r)
            for (int64_t s = 0; s < L.S; ++s)
              t[size_t(((k * L.R + r) * L.S + s) * Cg + c)] = w[size_t(((k * Cg + c) * L.R + r) * L.S + s)];
      w.swap(t);
      inner_c = Cg;
      out.H = (in.H + 2 * L.pad_h - L.dil_h * (L.R - 1) - 1) / L.stride_h + 1;
      out.W = (in.W + 2 * L.pad_w - L.dil_w * (L.S - 1) - 1) / L.stride_w + 1;
      out.C = L.K;
    } else {
      LOWBIT_CHECK(in.flat || (in.H == 1 && in.W == 1), "export: ", name,
                   ": a linear layer on an image needs a flatten");
      L.K = lin->out_features(), L.C = lin->in_features();
      LOWBIT_CHECK(L.C == in.H * in.W * in.C, "export: ", name, " takes ", L.C,
                   " features, the flattened activation has ", in.H * in.W * in.C);
      const bool after_flatten = m_.ops[size_t(cur_.op)].kind == OpKind::flatten;
      const ActShape image = after_flatten ? flattened_ : ActShape{1, 1, in.C};
      if (after_flatten) {
        // PyTorch's flatten is NCHW (feature c H W + h W + w); the engine's activation is NHWC.
        std::vector<double> t(w.size());
        const int64_t HW = image.H * image.W, C = image.C;
        for (int64_t k = 0; k < L.K; ++k)
          for (int64_t c = 0; c < C; ++c)
            for (int64_t p = 0; p < HW; ++p) t[size_t(k * L.C + p * C + c)] = w[size_t(k * L.C + c * HW + p)];
        w.swap(t);
      }
      inner_c = image.C;
      out = {1, 1, L.K, ValueType::u8, true};
    }
    const size_t inner = w.size() / size_t(L.K);
    res_.fp32_parameter_bytes += 4 * int64_t(w.size() + bias.size());

    // The first layer reads pixel bytes p: its real input is (p/255 - mean_c)/std_c = f_c (p - z_c)
    // with f_c = 1/(255 std_c), z_c = 255 mean_c. Fold f_c into the weights. Another layer's input
    // is a_scale (x - z), z its codes' zero point (128 for signed codes): sum w z joins the offset.
    std::vector<double> f(size_t(inner_c), 1.0), z(size_t(inner_c), first ? 0.0 : cur_.zero);
    if (first)
      for (int64_t c = 0; c < inner_c; ++c) {
        const size_t ch = o_.mean.empty() ? 0 : size_t(c);
        f[size_t(c)] = o_.mean.empty() ? 1.0 / 255 : 1.0 / (255 * o_.std[ch]);
        z[size_t(c)] = o_.mean.empty() ? 0.0 : 255 * o_.mean[ch];
      }
    const bool equal_f = std::all_of(f.begin(), f.end(), [&](double v) { return v == f[0]; });
    Codes codes;
    bool rounded = trained >= 32 || (first && !equal_f);
    if (!rounded) {
      // Learned steps: LSQ's w_step, MSQE's w_delta, U3's d rounded to a power of two (u3_effective).
      const double learned = mod->has_param("w_step")    ? std::abs(mod->param("w_step").item())
                             : mod->has_param("w_delta") ? std::abs(mod->param("w_delta").item())
                             : mod->has_param("w_d")
                                 ? quant::u3_effective(mod->param("w_d").item(), mod->param("w_qmax").item()).d
                                 : 0.0;
      codes = grid_codes(w, L.K, trained, learned);
      rounded = !codes.exact;
    }
    std::vector<double> wf;  // the weights the rounded codes stand for (first layer: times f)
    if (rounded) {
      wf = w;
      if (first)
        for (size_t j = 0; j < wf.size(); ++j) wf[j] *= f[j % size_t(inner_c)];
      codes = wide_per_channel(wf, L.K);  // steps include f
    } else if (first) {
      for (double& s : codes.step) s *= f[0];
    }
    L.bits = codes.bits, L.coding = codes.coding, L.weights = codes.c;
    L.scale.resize(size_t(L.K)), L.offset.resize(size_t(L.K));
    for (int64_t k = 0; k < L.K; ++k) {
      double corr = 0;  // sum of codes times the code of the real 0 (the pixel value in the first layer)
      for (size_t j = 0; j < inner; ++j) corr += double(L.weights[size_t(k) * inner + j]) * z[j % size_t(inner_c)];
      L.scale[size_t(k)] = codes.step[size_t(k)] * (first ? 1.0 : cur_.scale);
      L.offset[size_t(k)] = (bias.empty() ? 0.0 : bias[size_t(k)]) - L.scale[size_t(k)] * corr;
    }
    if (first && conv && (L.pad_h > 0 || L.pad_w > 0)) {
      // The normalized image's 0 is pixel value z_c (fractional in general): the padding value.
      if (std::all_of(z.begin(), z.end(), [&](double v) { return v == z[0] && v == std::nearbyint(v); }))
        L.in_zero_point = int32_t(z[0]);
      else
        L.pad_values = z;
    } else if (conv && (L.pad_h > 0 || L.pad_w > 0)) {  // pads with the code of real 0
      LOWBIT_CHECK(cur_.zero >= 0 && cur_.zero <= 255 && cur_.zero == std::nearbyint(cur_.zero), "export: ", name,
                   ": input zero point ", cur_.zero, " is not a code");
      L.in_zero_point = int32_t(cur_.zero);
    }
    int low_bits = 0;
    if (rounded && first && conv) {
      // The first layer's 16-bit rounding moved ~4e-5 of its output codes, and each such flip spreads
      // through the net (docs/format.md): a second pass with the rounding's remainder at 2^-7 of the
      // step, w = step (c + c_low 2^-7), its int32 accumulators the first pass's residual.
      Op lo;
      lo.kind = OpKind::conv;
      WeightOp& B = lo.layer;
      B = L;
      B.name = name + ".low", B.pad_values.clear(), B.in_zero_point = 0;
      const double unit = std::ldexp(1.0, -kLowPassBits);
      for (size_t j = 0; j < wf.size(); ++j) {
        const double step = codes.step[j / inner];
        B.weights[j] = int16_t(std::nearbyint((wf[j] - step * L.weights[j]) / (step * unit)));
      }
      B.bits = kLowPassBits + 1, B.coding = WeightCoding::twos_complement, B.out_qmax = 0;
      for (int64_t k = 0; k < L.K; ++k) {
        double corr = 0;
        for (size_t j = 0; j < inner; ++j) corr += double(B.weights[size_t(k) * inner + j]) * z[j % size_t(inner_c)];
        B.scale[size_t(k)] = std::ldexp(L.scale[size_t(k)], -kLowPassBits);
        B.offset[size_t(k)] = 0;
        L.offset[size_t(k)] -= B.scale[size_t(k)] * corr;
      }
      if (L.pad_h > 0 || L.pad_w > 0) {  // pads at the nearest codes: an error <= 0.5 sum |c_low| 2^-7 steps
        std::vector<double> codes_z;
        for (double v : z) codes_z.push_back(std::nearbyint(v));
        if (std::all_of(codes_z.begin(), codes_z.end(), [&](double v) { return v == codes_z[0]; }))
          B.in_zero_point = int32_t(codes_z[0]);
        else
          B.pad_values = codes_z;
      }
      L.residual_scale = B.scale;
      m_.meta["bits." + B.name] = int64_t(B.bits);
      L.residual = push(std::move(lo));
      low_bits = kLowPassBits + 1;
    }
    L.out_qmax = 0;
    ExportedLayer e;
    e.name = name, e.trained_bits = trained, e.stored_bits = L.bits, e.exact = codes.exact, e.low_bits = low_bits;
    e.weights = int64_t(w.size());
    res_.layers.push_back(e);
    m_.meta["bits." + name] = int64_t(L.bits);
    m_.meta["trained_bits." + name] = int64_t(trained);
    out.type = ValueType::s32;
    if (!conv && in.type == ValueType::s32) out.type = ValueType::s64;
    pending_ = push(std::move(op)), pending_name_ = name;
    cur_ = {pending_, out, 1.0, 0.0};
  }

  void batch_norm(BatchNorm2d& bn, const std::string& name) {
    LOWBIT_CHECK(pending_ >= 0 && m_.ops[size_t(pending_)].kind == OpKind::conv, "export: ", name,
                 ": a batch norm must directly follow a convolution");
    WeightOp& L = m_.ops[size_t(pending_)].layer;
    const std::vector<double> mean = values(bn.buffer("running_mean")), scale = bn.eval_scale();
    std::vector<double> beta(size_t(L.K), 0.0);
    if (bn.options().affine) beta = values(bn.param("bias").data());
    for (size_t k = 0; k < size_t(L.K); ++k) {
      const double a = scale[k];
      L.scale[k] *= a;
      if (L.residual >= 0) L.residual_scale[k] *= a;  // the first layer's low-order pass
      L.offset[k] = a * (L.offset[k] - mean[k]) + beta[k];
    }
    res_.fp32_parameter_bytes += 4 * 2 * L.K;
  }

  void activation(Module& mod, const std::string& name) {
    LOWBIT_CHECK(pending_ >= 0, "export: ", name, ": an activation that does not follow a weight layer");
    int bits = aq_.count(&mod) ? aq_[&mod] : 32;
    double alpha = 1;                               // the clip: codes round(clip(y / alpha, 0, 1) n)
    double n = std::ldexp(1.0, bits) - 1;           // levels - 1
    if (method_ == "u3" && mod.has_param("a_d")) {  // n = q'/d' steps of d' up to q' (u3_effective)
      const quant::U3Params e = quant::u3_effective(mod.param("a_d").item(), mod.param("a_qmax").item());
      alpha = e.q_max, n = std::round(e.q_max / e.d);
      bits = quant::u3_bits(e.d, e.q_max, false);
    }
    LOWBIT_CHECK(bits <= 8, "export: ", name, ": activations at ", bits,
                 " bits (float or > 8 bits); the integer engine needs activation codes of <= 8 bits (--abits)");
    if (method_ == "pact") alpha = mod.param("alpha").item();
    if (method_ == "lsq") alpha = std::abs(mod.param("a_step").item()) * n;    // s Q_P
    if (method_ == "msqe") alpha = std::abs(mod.param("a_delta").item()) * n;  // Delta (2^m - 1), Choi §3.1
    // A Hardtanh (ReLU6) clipping below alpha caps the codes at top = round(max n / alpha) < n: the
    // requantization keeps the step alpha / n and clamps at top (out_qmax = top, y scaled by n / (alpha top)).
    double top = n;
    if (const auto* ht = dynamic_cast<const Hardtanh*>(&mod)) {
      LOWBIT_CHECK(ht->min_val() <= 0 && ht->max_val() > 0, "export: ", name, ": a Hardtanh clipping to [",
                   ht->min_val(), ", ", ht->max_val(), "] is exported only with min <= 0 < max");
      if (ht->max_val() < alpha) top = std::nearbyint(ht->max_val() * (n / alpha));  // as the quantizer rounds it
      LOWBIT_CHECK(top >= 1, "export: ", name, ": its clip at ", ht->max_val(), " is below half a step (", alpha / n,
                   ") of its quantizer: every code is 0");
    }
    requantize_pending(name, alpha, n, bits, false, top);
  }

  // A StreamPoint's signed quantizer (quant/qconfig.h, signed_pact): codes round(clip(y / alpha, -1, 1) n),
  // n = 2^(k-1) - 1, stored as 128 + code (docs/format.md, out_signed).
  void stream_point(Module& mod, const std::string& name) {
    LOWBIT_CHECK(pending_ >= 0, "export: ", name,
                 ": a signed activation (StreamPoint) that does not follow a weight layer and its batch norm");
    const int bits = sq_.count(&mod) ? sq_[&mod] : 32;
    LOWBIT_CHECK(bits <= 8, "export: ", name, ": the residual stream's activations at ", bits,
                 " bits (float or > 8 bits); the integer engine needs signed codes of <= 8 bits (--abits)");
    const double alpha = mod.param("alpha").item();
    LOWBIT_CHECK(alpha != 0, "export: ", name,
                 ": its signed clip alpha is unset (the first batch through the model sets it: run the model once)");
    requantize_pending(name, alpha, std::ldexp(1.0, bits - 1) - 1, bits, true);
  }

  // The pending weight layer requantized to codes round(clip(y / alpha, 0 | -1, 1) n), clamped at
  // `top` <= n (0 <= codes <= top = out_qmax: (1) with y n / (alpha top)): (1) with its residual
  // (BasicBlock, InvertedResidual) joined.
  void requantize_pending(const std::string& name, double alpha, double n, int bits, bool signed_codes,
                          double top = 0) {
    if (top <= 0) top = n;
    LOWBIT_CHECK(alpha > 0 && std::isfinite(alpha), "export: ", name, ": activation clip ", alpha, " is not > 0");
    WeightOp& L = m_.ops[size_t(pending_)].layer;
    LOWBIT_CHECK(m_.ops[size_t(pending_)].src == cur_.op || cur_.op == pending_, "export: ", name,
                 ": internal: the activation does not follow its layer");
    const double unit = top == n ? alpha : alpha * top / n;  // y / unit, clipped to [0 | -1, 1], times top
    if (L.residual >= 0)                                     // the first layer's low-order pass: scaled alike
      for (double& s : L.residual_scale) s /= unit;
    if (residual_.op >= 0) {  // y = layer + residual: the residual's real value joins the layer's
      L.residual = residual_.op;
      L.residual_scale.resize(size_t(L.K));
      for (size_t k = 0; k < size_t(L.K); ++k) {
        L.offset[k] += residual_.offset[k];
        L.residual_scale[k] = residual_.scale[k] / unit;
      }
      residual_ = Residual{};
    }
    for (size_t k = 0; k < size_t(L.K); ++k) L.scale[k] /= unit, L.offset[k] /= unit;
    L.out_qmax = int32_t(top);
    L.out_signed = signed_codes;
    res_.layers.back().out_bits = bits;
    m_.meta["abits." + pending_name_] = int64_t(bits);
    cur_.shape.type = ValueType::u8;
    cur_.scale = alpha / n;
    cur_.zero = signed_codes ? 128 : 0;
    pending_ = -1;
  }

  void max_pool(MaxPool2d& mp, const std::string& name) {
    require_codes(name, "max pooling");
    LOWBIT_CHECK(!cur_.shape.flat, "export: ", name, ": max pooling after flatten");
    const auto& p = mp.options();
    Op op;
    op.kind = OpKind::max_pool;
    op.pool.R = p.kernel[0], op.pool.S = p.kernel[1];
    op.pool.stride_h = p.stride[0] ? p.stride[0] : p.kernel[0];
    op.pool.stride_w = p.stride[1] ? p.stride[1] : p.kernel[1];
    op.pool.pad_h = p.padding[0], op.pool.pad_w = p.padding[1], op.pool.ceil_mode = p.ceil_mode;
    auto size = [&](int64_t in, int64_t k, int64_t s, int64_t pad) {
      const int64_t span = in + 2 * pad - k;
      int64_t out = (p.ceil_mode ? (span + s - 1) / s : span / s) + 1;
      if (p.ceil_mode && (out - 1) * s >= in + pad) --out;
      return out;
    };
    ActShape out = cur_.shape;
    out.H = size(cur_.shape.H, op.pool.R, op.pool.stride_h, op.pool.pad_h);
    out.W = size(cur_.shape.W, op.pool.S, op.pool.stride_w, op.pool.pad_w);
    cur_ = {push(op), out, cur_.scale, cur_.zero};
  }

  const ExportOptions& o_;
  ExportResult& res_;
  Model& m_;
  std::string method_;
  std::map<const Module*, const quant::QuantizedLayer*> wq_;
  std::map<const Module*, int> wbits_;  // Quantization::stored_weight_bits
  std::map<const Module*, int> aq_;
  std::map<const Module*, int> sq_;  // signed activations (StreamPoints)
  Cursor cur_;
  ActShape flattened_;    // the shape the last flatten flattened (a linear's NCHW -> NHWC permutation)
  int32_t pending_ = -1;  // a weight op awaiting its batch norm / activation (or the end)
  std::string pending_name_;
  Residual residual_;  // what the next activation adds (BasicBlock)
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

  ExportResult res;
  Exporter ex(q, o, res);
  const std::string& method = ex.method();
  LOWBIT_CHECK(method == "dorefa" || method == "wrpn" || method == "pact" || method == "binary" ||
                   method == "ternary" || method == "lsq" || method == "u3" || method == "msqe",
               "export: quantization method '", method,
               "' is not exportable (exportable: dorefa, wrpn, pact, binary, ternary, lsq, u3, msqe; p3's levels are "
               "powers of two, not a uniform grid of integer codes, and a float model has no activation quantizers)");
  LOWBIT_CHECK(o.mean.size() == o.std.size() && (o.mean.empty() || int64_t(o.mean.size()) == o.channels),
               "export: mean/std must have one value per input channel (", o.channels, ") or none");
  ex.begin();
  ex.visit(model, "");
  ex.end();
  validate(res.model, "export");
  return res;
}

int64_t CodedLayer::stored_bytes() const {
  return storage == WeightStorage::huffman_rle ? rle_bytes
         : storage == WeightStorage::huffman   ? huffman_bytes
                                               : packed_bytes;
}

double CodedLayer::stored_bits_per_weight() const {
  const int64_t b = storage == WeightStorage::huffman_rle ? rle_stream_bits
                    : storage == WeightStorage::huffman   ? stream_bits
                                                          : weights * bits;
  return double(b) / double(weights);
}

EntropyAccount entropy_code(Model& m) {
  EntropyAccount a;
  for (Op& op : m.ops) {
    if (op.kind != OpKind::conv && op.kind != OpKind::linear) continue;
    WeightOp& l = op.layer;
    const std::vector<uint32_t> fields = weight_fields(l);
    const HuffmanSize h = huffman_size(fields, l.bits);
    CodedLayer c;
    c.name = l.name, c.weights = l.numel(), c.bits = l.bits;
    c.zeros = std::count(l.weights.begin(), l.weights.end(), int16_t(0));
    c.symbols = h.symbols, c.stream_bits = h.stream_bits, c.huffman_bytes = h.body_bytes;
    c.packed_bytes = (l.numel() * l.bits + 7) / 8;
    c.low_pass = l.name.size() > 4 && l.name.compare(l.name.size() - 4, 4, ".low") == 0;
    // The smallest body (docs/format.md "Compression ratios"); ties keep the simpler storage.
    l.storage = WeightStorage::packed;
    c.formula_bits = c.weights * l.bits + 32;
    if (c.huffman_bytes < c.packed_bytes)
      l.storage = WeightStorage::huffman, c.formula_bits = h.stream_bits + h.table_bits() + 32;
    const int64_t zero = zero_field(l.bits, l.coding);
    if (zero >= 0) {
      const HuffmanSize r = rle_size(fields, l.bits, uint32_t(zero));
      c.rle_symbols = r.symbols, c.rle_stream_bits = r.stream_bits, c.rle_bytes = r.body_bytes;
      if (r.body_bytes < std::min(c.packed_bytes, c.huffman_bytes))
        l.storage = WeightStorage::huffman_rle, c.formula_bits = r.stream_bits + r.table_bits() + 32;
    }
    c.storage = l.storage;
    if (!c.low_pass) a.formula_weights += c.weights;
    a.formula_bits += c.formula_bits;
    a.layers.push_back(c);
  }
  return a;
}

}  // namespace lowbit::deploy
