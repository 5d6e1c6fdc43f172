// Range-based linear post-training quantization (ptq.h): Distiller range-linear, spec §8.7.
#include "quant/ptq.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/math.h"
#include "core/parallel.h"
#include "layers/activation.h"
#include "layers/conv.h"
#include "layers/norm.h"
#include "quant/ste.h"

namespace lowbit::quant {
namespace {

constexpr int64_t kGrain = 1 << 15;

void check_bits(int bits, int least, const char* what) {
  LOWBIT_CHECK(bits >= least && bits <= 16, what, ": ", bits, " bits; range-linear quantization takes ", least,
               "..16 bits");
}

// The setting's bits, checked: 2..16 or 32 (float).
void check_setting_bits(int bits, const char* what) {
  LOWBIT_CHECK(bits == 32 || (bits >= 2 && bits <= 16), "post-training quantization: ", what, " ", bits,
               " bits: must be 2..16, or 32 (float)");
}

template <class T>
void min_max_of(const T* p, int64_t n, double& lo, double& hi) {
  T a = p[0], b = p[0];
  for (int64_t i = 1; i < n; ++i) a = std::min(a, p[i]), b = std::max(b, p[i]);
  lo = double(a), hi = double(b);
}

}  // namespace

// Distiller linear_quantize_clamp: round(scale x − zero_point) clamped (round half to even, as
// torch.round), spec §8.7.
double LinearQuant::code(double x) const {
  return std::clamp(std::nearbyint(scale * x - zero_point), code_min, code_max);
}

// Distiller asymmetric_linear_quantization_params (unsigned, integral zero point), spec §8.7:
// q_x = (2^n − 1)/(max − min), zp_x = round(min q_x), with 0 inside the range.
LinearQuant asymmetric_linear(double min, double max, int bits) {
  check_bits(bits, 1, "asymmetric_linear");
  LOWBIT_CHECK(min <= max, "asymmetric_linear: min ", min, " > max ", max);
  const double n = std::ldexp(1.0, bits) - 1;
  min = std::min(min, 0.0), max = std::max(max, 0.0);
  const double diff = max - min;
  LinearQuant q;
  q.scale = diff > 0 ? n / diff : 1.0;  // an all-zero range: scale 1, as Distiller
  q.zero_point = std::nearbyint(q.scale * min);
  q.code_min = 0, q.code_max = n;
  return q;
}

// Distiller symmetric_linear_quantization_params, spec §8.7: q_x = (2^(n−1) − 1)/max|x|, codes
// clamped to get_quantized_range(n, signed) = [−2^(n−1), 2^(n−1) − 1].
LinearQuant symmetric_linear(double max_abs, int bits) {
  check_bits(bits, 2, "symmetric_linear");
  LOWBIT_CHECK(max_abs >= 0, "symmetric_linear: max_abs ", max_abs, " < 0");
  const double n = std::ldexp(1.0, bits - 1) - 1;
  LinearQuant q;
  q.scale = max_abs > 0 ? n / max_abs : 1.0;
  q.zero_point = 0;
  q.code_min = -(n + 1), q.code_max = n;
  return q;
}

const char* range_mode_name(RangeMode mode) { return mode == RangeMode::symmetric ? "symmetric" : "asymmetric"; }

LinearQuant linear_quant(RangeMode mode, double min, double max, int bits) {
  if (mode == RangeMode::symmetric) return symmetric_linear(std::max(std::abs(min), std::abs(max)), bits);
  return asymmetric_linear(min, max, bits);
}

Tensor fake_quantize(const Tensor& x_in, const LinearQuant& q) {
  const Tensor x = x_in.is_dense() ? x_in : x_in.contiguous();
  Tensor out = Tensor::empty_like(x);
  const int64_t n = x.numel();
  LOWBIT_DISPATCH_FLOAT(x.dtype(), "fake_quantize", [&] {
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
    parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) po[i] = scalar_t(q(double(px[i])));
    });
  });
  return out;
}

Tensor fake_quantize_per_channel(const Tensor& x_in, const std::vector<LinearQuant>& q) {
  LOWBIT_CHECK(x_in.dim() >= 1 && int64_t(q.size()) == x_in.size(0), "fake_quantize_per_channel: ", q.size(),
               " quantizers for shape ", shape_str(x_in.shape()));
  const Tensor x = x_in.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  const int64_t rows = x.size(0), per = rows ? x.numel() / rows : 0;
  LOWBIT_DISPATCH_FLOAT(x.dtype(), "fake_quantize_per_channel", [&] {
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
    parallel_for(0, rows, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r)
        for (int64_t i = r * per; i < (r + 1) * per; ++i) po[i] = scalar_t(q[size_t(r)](double(px[i])));
    });
  });
  return out;
}

std::pair<double, double> tensor_min_max(const Tensor& x_in) {
  LOWBIT_CHECK(x_in.numel() > 0, "tensor_min_max: empty tensor");
  const Tensor x = x_in.is_dense() ? x_in : x_in.contiguous();
  double lo = 0, hi = 0;
  LOWBIT_DISPATCH_FLOAT(x.dtype(), "tensor_min_max", [&] { min_max_of(x.data<scalar_t>(), x.numel(), lo, hi); });
  return {lo, hi};
}

std::vector<std::pair<double, double>> channel_min_max(const Tensor& x_in) {
  LOWBIT_CHECK(x_in.dim() >= 1 && x_in.numel() > 0, "channel_min_max: empty tensor ", shape_str(x_in.shape()));
  const Tensor x = x_in.contiguous();
  const int64_t rows = x.size(0), per = x.numel() / rows;
  std::vector<std::pair<double, double>> out(static_cast<size_t>(rows));
  LOWBIT_DISPATCH_FLOAT(x.dtype(), "channel_min_max", [&] {
    for (int64_t r = 0; r < rows; ++r)
      min_max_of(x.data<scalar_t>() + r * per, per, out[size_t(r)].first, out[size_t(r)].second);
  });
  return out;
}

// Weights quantized offline from their own range (spec §8.7), per tensor or per output channel.
Tensor range_linear_weight(const Tensor& w, int bits, RangeMode mode, bool per_channel) {
  if (!per_channel) {
    const auto [lo, hi] = tensor_min_max(w);
    return fake_quantize(w, linear_quant(mode, lo, hi, bits));
  }
  std::vector<LinearQuant> q;
  for (const auto& [lo, hi] : channel_min_max(w)) q.push_back(linear_quant(mode, lo, hi, bits));
  return fake_quantize_per_channel(w, q);
}

namespace {

// w [K, ...] times s_k per output channel (inverse: divided; s_k = 0 leaves the channel as it is).
Tensor scale_channels(const Tensor& w_in, const std::vector<double>& s, bool inverse) {
  const Tensor w = w_in.contiguous();
  Tensor out = Tensor::empty(w.shape(), w.dtype());
  const int64_t rows = w.size(0), per = rows ? w.numel() / rows : 0;
  LOWBIT_DISPATCH_FLOAT(w.dtype(), "scale_channels", [&] {
    const scalar_t* pw = w.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
    for (int64_t r = 0; r < rows; ++r) {
      const double f = s[size_t(r)] == 0 ? 1.0 : inverse ? 1.0 / s[size_t(r)] : s[size_t(r)];
      for (int64_t i = r * per; i < (r + 1) * per; ++i) po[i] = scalar_t(double(pw[i]) * f);
    }
  });
  return out;
}

}  // namespace

// ---- the hooks ----

struct PostTrainingQuantizer::Activation {
  std::string name;
  double min = std::numeric_limits<double>::infinity(), max = -std::numeric_limits<double>::infinity();
  int64_t passes = 0;
  int bits = 32;
};

struct PostTrainingQuantizer::State {
  enum class Mode { float_, calibrate, quantize } mode = Mode::float_;
  PtqConfig config;
  std::vector<std::shared_ptr<Activation>> activations;  // in the order attach_quantizers visits them
  std::map<const Module*, BatchNorm2d*> bn_after;        // a Conv2d -> the BatchNorm2d right after it
};

PostTrainingQuantizer::PostTrainingQuantizer(Module& model) : state_(std::make_shared<State>()) {
  for (auto& [name, m] : model.named_modules()) {
    saved_output_hooks_.emplace_back(m.get(), m->output_hook());
    if (VariableTransform h = weight_hook_of(*m)) saved_weight_hooks_.emplace_back(m.get(), h);
  }
  method_.name = "range-linear";
  method_.help = "Distiller range-linear post-training quantization (spec §8.7), calibrated ranges";
  method_.weight_bits = BitRange{2, 16, 8};
  method_.activation_bits = BitRange{2, 16, 32};
  std::shared_ptr<State> st = state_;
  // Weights: rounded from their own range at the layer's bits (its shared bit cell), spec §8.7.
  // Conv2d -> BatchNorm2d pairs: consecutive children of a container (Sequential, ResNet's blocks).
  for (auto& [name, m] : model.named_modules()) {
    const auto children = m->named_children();
    for (size_t i = 0; i + 1 < children.size(); ++i)
      if (auto* bn = dynamic_cast<BatchNorm2d*>(children[i + 1].second.get());
          bn && dynamic_cast<Conv2d*>(children[i].second.get()))
        state_->bn_after[children[i].second.get()] = bn;
  }
  method_.weight = [st](const QuantSite& site) -> VariableTransform {
    std::shared_ptr<int> bits = site.bits;
    const Module* mod = &site.module;
    return [st, bits, mod](const Variable& w) {
      if (st->mode != State::Mode::quantize || *bits >= 32) return w;
      const PtqConfig& c = st->config;
      const auto bn = c.fold_bn ? st->bn_after.find(mod) : st->bn_after.end();
      if (bn == st->bn_after.end())
        return straight_through(w, range_linear_weight(w.data(), *bits, c.weight_mode, c.per_channel));
      const std::vector<double> s = bn->second->eval_scale();  // fold_bn: round w s, divide back
      return straight_through(w, scale_channels(range_linear_weight(scale_channels(w.data(), s, false), *bits,
                                                                    c.weight_mode, c.per_channel),
                                                s, true));
    };
  };
  // The weight side through attach_quantizers (every Conv2d/Linear, first/last, the bit cells).
  // Its activation side is left off (activation bits 32: it installs and registers nothing there);
  // the activation hooks below go on the modules attach_quantizers quantizes (ReLU, ReLU6, Hardtanh)
  // and carry the calibration state.
  QuantConfig config;
  config.method = method_.name;
  config.weight_bits = 8, config.activation_bits = 32;  // weights: quantize() sets each layer's bits
  config.quantize_first_last = true;
  quantization_ = attach_quantizers(model, config, method_);
  for (auto& [name, m] : model.named_modules()) {
    if (!dynamic_cast<ReLU*>(m.get()) && !dynamic_cast<Hardtanh*>(m.get())) continue;  // ReLU6 is a Hardtanh
    auto a = std::make_shared<Activation>();
    a->name = name;
    st->activations.push_back(a);
    // Activations: record the range while calibrating; quantize from it afterwards, spec §8.7.
    m->set_output_hook([st, a](const Variable& x) {
      if (st->mode == State::Mode::calibrate) {
        if (x.numel() == 0) return x;
        const auto [lo, hi] = tensor_min_max(x.data());
        a->min = std::min(a->min, lo), a->max = std::max(a->max, hi);
        ++a->passes;
        return x;
      }
      if (st->mode != State::Mode::quantize || a->bits >= 32) return x;
      return straight_through(
          x, fake_quantize(x.data(), linear_quant(st->config.activation_mode, a->min, a->max, a->bits)));
    });
  }
}

PostTrainingQuantizer::~PostTrainingQuantizer() {
  for (const auto& l : quantization_.layers) set_weight_hook(*l.module, nullptr);
  for (auto& [m, hook] : saved_weight_hooks_) set_weight_hook(*m, hook);
  for (auto& [m, hook] : saved_output_hooks_) m->set_output_hook(hook);
}

void PostTrainingQuantizer::calibrate() {
  for (auto& a : state_->activations) {
    a->min = std::numeric_limits<double>::infinity(), a->max = -std::numeric_limits<double>::infinity();
    a->passes = 0;
  }
  state_->mode = State::Mode::calibrate;
}

void PostTrainingQuantizer::use_float() { state_->mode = State::Mode::float_; }

void PostTrainingQuantizer::quantize(const PtqConfig& config) {
  check_setting_bits(config.weight_bits, "weights");
  check_setting_bits(config.activation_bits, "activations");
  if (config.first_last_bits != 0) check_setting_bits(config.first_last_bits, "first and last layers");
  // The last activation module's output is the last layer's input.
  auto& acts = state_->activations;
  auto act_bits = [&](size_t i) {
    return config.first_last_bits && i + 1 == acts.size() ? config.first_last_bits : config.activation_bits;
  };
  for (size_t i = 0; i < acts.size(); ++i)
    LOWBIT_CHECK(act_bits(i) >= 32 || acts[i]->passes > 0, "post-training quantization: activation '", acts[i]->name,
                 "' has no calibrated range (no calibration pass reached it)");
  for (size_t i = 0; i < acts.size(); ++i) acts[i]->bits = act_bits(i);
  for (auto& l : quantization_.layers)
    *l.weight_bits = config.first_last_bits && (l.first || l.last) ? config.first_last_bits : config.weight_bits;
  state_->config = config;
  state_->mode = State::Mode::quantize;
}

std::vector<ObservedRange> PostTrainingQuantizer::activation_ranges() const {
  std::vector<ObservedRange> out;
  for (const auto& a : state_->activations) out.push_back({a->name, false, a->min, a->max, a->passes});
  return out;
}

std::vector<ObservedRange> PostTrainingQuantizer::weight_ranges() const {
  std::vector<ObservedRange> out;
  for (const auto& l : quantization_.layers) {
    const auto [lo, hi] = tensor_min_max(l.weight().data());
    out.push_back({l.name, true, lo, hi, 0});
  }
  return out;
}

}  // namespace lowbit::quant
