// The method registry (methods.h): one entry per quantizer, with its constructors.
#include "quant/methods.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "autograd/ops.h"
#include "core/math.h"
#include "quant/budget.h"
#include "quant/msqe.h"
#include "quant/qconfig.h"
#include "quant/quantizers.h"
#include "quant/ste.h"

namespace lowbit::quant {
namespace {

// A weight hook that quantizes with f(w, k) while the layer's bits are < 32.
template <class F>
VariableTransform by_bits(std::shared_ptr<int> bits, F f) {
  return [bits, f](const Variable& w) { return *bits >= 32 ? w : f(w, *bits); };
}

// A learnable scalar registered on the module once (kept when the method is attached again, so a
// resumed or re-targeted run keeps its learned value).
Variable& learnable(Module& m, const std::string& local, double init, DType dtype) {
  if (!m.has_param(local)) m.register_parameter(local, Tensor::full({}, init, dtype));
  return m.param(local);
}

std::optional<SinusoidMatch> dorefa_sinusoid(const QuantConfig&) {
  // DoReFa rounds tanh(w) / max|tanh w| on 2^k levels: the dorefa grid in that domain (§8.2, §1.4).
  return SinusoidMatch{Grid::dorefa, WeightScale::tanh_max};
}

VariableTransform dorefa_weights(const QuantSite& s) {
  return by_bits(s.bits, [](const Variable& w, int k) { return dorefa_weight(w, k); });
}

VariableTransform dorefa_activations(const QuantSite& s) {
  const int k = *s.bits;
  return [k](const Variable& a) { return dorefa_activation(a, k); };
}

// Activation bits 1..16; the default is the method's recipe: 4 (32 for weight-only methods).
constexpr double kPactAlphaMin = 1e-2;
constexpr double kMsqeDeltaMin = 1e-8;

BitRange activations(int default_bits = 4) { return BitRange{1, 16, default_bits}; }

// Uhlich et al.'s parametrizations with the bitwidth b a parameter (U1 [b, d], U2 [b, q_max],
// P1 [b, q_max], P2 [b, q_min]): b and the other parameter learned, initialised as U3 / P3 at the
// configured bits (§6.5), clipped after every step as train_resnet.py clip_quant_vals (b to
// [b_min, b_max] with 1e-5 margins; d to [2^-8, 1]; q_max to [2^-8, 127 | 255]; q_min to
// [2^-16 | 2^-14, 127 | 255]); the bits round(b) (u12_bits / p12_bits), and as a differentiable
// scalar b itself (round: an identity STE), for the memory budgets.
QuantMethod uhlich_with_bits(const std::string& name, const std::string& help, bool pow2, const char* other) {
  using Quantizer = Variable (*)(const Variable&, const Variable&, const Variable&, bool);
  static const std::map<std::string, Quantizer> quantizers = {
      {"u1", &uniform_u1}, {"u2", &uniform_u2}, {"p1", &pow2_p1}, {"p2", &pow2_p2}};
  const Quantizer f = quantizers.at(name);
  const int b_max = pow2 ? 8 : 16;
  QuantMethod m;
  m.name = name;
  m.help = help;
  m.weight_bits = BitRange{2, b_max, 4};
  m.activation_bits = BitRange{1, b_max, 4};
  const std::string o = other;
  m.weight_params = {"w_b", "w_" + o};
  m.activation_params = {"a_b", "a_" + o};
  // The initial value of the other parameter, from U3's or P3's initialisation at `bits`.
  auto init = [pow2, o](const Tensor* w, int bits) {
    if (pow2) {
      const P3Params p = w ? p3_init_weight(*w, bits) : p3_init_activation(bits);
      return o == "qmin" ? p.q_min : p.q_max;
    }
    const U3Params p = w ? u3_init_weight(*w, bits) : u3_init_activation(bits);
    return o == "d" ? p.d : p.q_max;
  };
  m.weight = [f, init, o](const QuantSite& s) -> VariableTransform {
    if (*s.bits >= 32) return nullptr;
    const Variable& w = s.module.param("weight");
    learnable(s.module, "w_b", *s.bits, w.dtype());
    learnable(s.module, "w_" + o, init(&w.data(), *s.bits), w.dtype());
    Module* mp = &s.module;
    return by_bits(s.bits,
                   [mp, f, o](const Variable& w, int) { return f(w, mp->param("w_b"), mp->param("w_" + o), true); });
  };
  m.activation = [f, init, o](const QuantSite& s) -> VariableTransform {
    learnable(s.module, "a_b", *s.bits, DType::f32);
    learnable(s.module, "a_" + o, init(nullptr, *s.bits), DType::f32);
    Module* mp = &s.module;
    return [mp, f, o](const Variable& a) { return f(a, mp->param("a_b"), mp->param("a_" + o), false); };
  };
  m.stored_bits = [pow2](Module& layer, int k) {
    if (k >= 32 || !layer.has_param("w_b")) return k;
    return pow2 ? p12_bits(layer.param("w_b").item(), true) : u12_bits(layer.param("w_b").item(), true);
  };
  m.bits_variable = [pow2](Module& mod, bool weight_side) {
    const Variable& b = mod.param(weight_side ? "w_b" : "a_b");
    const int bits = pow2 ? p12_bits(b.item(), weight_side) : u12_bits(b.item(), weight_side);
    return straight_through(sum(b), Tensor::scalar(bits, b.dtype()));
  };
  m.after_step = [b_max, o](Module& mod, bool weight_side) {
    const std::string pre = weight_side ? "w_" : "a_";
    if (!mod.has_param(pre + "b")) return;
    const double eps = 1e-5, top = weight_side ? 127.0 : 255.0;
    auto clip = [&](const std::string& n, double lo, double hi) {
      Variable& p = mod.param(n);
      p.mutable_data().fill_(std::clamp(p.item(), lo + eps, hi - eps));
    };
    clip(pre + "b", weight_side ? 2 : 1, b_max);
    if (o == "d") clip(pre + "d", std::ldexp(1.0, -8), 1.0);
    if (o == "qmax") clip(pre + "qmax", std::ldexp(1.0, -8), top);
    if (o == "qmin") clip(pre + "qmin", std::ldexp(1.0, weight_side ? -16 : -14), top);
  };
  return m;
}

std::vector<QuantMethod> build_registry() {
  std::vector<QuantMethod> r;
  {
    QuantMethod m;
    m.name = "none";
    m.help = "no quantizer (float training; with --reg, the weights are rounded on the grid at the end)";
    m.weight_bits = BitRange{1, 16, 32};
    m.activation_bits = BitRange{32, 32, 32};
    r.push_back(m);
  }
  {
    QuantMethod m;
    m.name = "dorefa";
    m.help =
        "DoReFa-Net: weights 2 q_k(tanh w / 2 max|tanh w| + 1/2) - 1 (k = 1: E sign w), activations q_k(clip(a, 0, 1))";
    m.weight_bits = BitRange{1, 16, 4};
    m.activation_bits = activations();
    m.weight = dorefa_weights;
    m.activation = dorefa_activations;
    m.sinusoid = dorefa_sinusoid;
    m.bits_follow_beta = true;
    r.push_back(m);
  }
  {
    QuantMethod m;
    m.name = "wrpn";
    m.help =
        "WRPN: weights round((2^(k-1) - 1) clip(w, -1, 1)) / (2^(k-1) - 1), on w / max|w| (--weight-scale none: raw w)";
    m.weight_bits = BitRange{2, 16, 4};
    m.activation_bits = activations();
    m.weight = [](const QuantSite& s) {
      const WeightScale scale = s.config.weight_scale;
      return by_bits(s.bits, [scale](const Variable& w, int k) {
        return scale == WeightScale::max_abs ? wrpn_on_scale(w, k, scale) : wrpn_weight(w, k);
      });
    };
    m.activation = [](const QuantSite& s) {
      const int k = *s.bits;
      return VariableTransform([k](const Variable& a) { return wrpn_activation(a, k); });
    };
    m.sinusoid = [](const QuantConfig& c) -> std::optional<SinusoidMatch> {
      if (c.weight_scale == WeightScale::tanh_max) return std::nullopt;
      return SinusoidMatch{Grid::wrpn, c.weight_scale};
    };
    m.bits_follow_beta = true;
    r.push_back(m);
  }
  {
    QuantMethod m;
    m.name = "binary";
    m.help = "BNN binary weights sign(w), hardtanh STE (1 bit); DoReFa activations (default 1 bit)";
    m.weight_bits = BitRange{1, 1, 1};
    m.activation_bits = activations(1);  // BNN binarizes the activations too
    m.weight = [](const QuantSite& s) {
      return by_bits(s.bits, [](const Variable& w, int) { return binary_weight(w); });
    };
    m.activation = dorefa_activations;
    r.push_back(m);
  }
  {
    QuantMethod m;
    m.name = "ternary";
    m.help = "TWN ternary weights alpha sign(w) 1[|w| > 0.7 mean|w|] (stored in 2 bits); float activations by default";
    m.weight_bits = BitRange{2, 2, 2};
    m.activation_bits = activations(32);  // TWN keeps float activations
    m.weight = [](const QuantSite& s) {
      return by_bits(s.bits, [](const Variable& w, int) { return ternary_weight(w); });
    };
    m.activation = dorefa_activations;
    r.push_back(m);
  }
  {
    QuantMethod m;
    m.name = "lsq";
    m.help = "LSQ: s round(clip(v / s, -Q_N, Q_P)) with a learned step s per layer (w_step) and activation (a_step)";
    m.weight_bits = BitRange{2, 16, 4};
    m.activation_bits = activations();
    m.weight_params = {"w_step"};
    m.activation_params = {"a_step"};
    m.weight = [](const QuantSite& s) -> VariableTransform {
      if (*s.bits >= 32) return nullptr;
      const Variable& w = s.module.param("weight");
      learnable(s.module, "w_step", lsq_init_step(w.data(), *s.bits, true), w.dtype());
      Module* mp = &s.module;
      return by_bits(s.bits, [mp](const Variable& w, int k) { return lsq(w, mp->param("w_step"), k, true); });
    };
    m.activation = [](const QuantSite& s) -> VariableTransform {
      // The step is initialised from the first batch it sees (LSQ: 2 mean|a| / sqrt(Q_P)); the
      // gradient scale counts the features of one sample, not the batch.
      learnable(s.module, "a_step", 0.0, DType::f32);
      Module* mp = &s.module;
      const int k = *s.bits;
      return [mp, k](const Variable& a) {
        Variable& step = mp->param("a_step");
        if (step.item() == 0.0) step.mutable_data().fill_(std::max(lsq_init_step(a.data(), k, false), 1e-8));
        return lsq(a, step, k, false, /*batched=*/true);
      };
    };
    r.push_back(m);
  }
  {
    QuantMethod m;
    m.name = "pact";
    m.help = "PACT: activations clipped at a learned alpha per ReLU (L2 penalty --pact-decay), DoReFa weights";
    m.weight_bits = BitRange{1, 16, 4};
    m.activation_bits = activations();
    m.activation_params = {"alpha"};
    m.weight = dorefa_weights;
    m.activation = [](const QuantSite& s) -> VariableTransform {
      learnable(s.module, "alpha", s.config.pact_alpha_init, DType::f32);
      Module* mp = &s.module;
      const int k = *s.bits;
      return [mp, k](const Variable& a) { return pact(a, mp->param("alpha"), k); };
    };
    m.sinusoid = dorefa_sinusoid;
    m.bits_follow_beta = true;
    // alpha is a clip value: kept positive (an alpha <= 0 clips every activation to nothing, and the
    // quantizer's step alpha / (2^k - 1) must be > 0). Its gradient sums over every clipped
    // activation, so a large early step can overshoot 0.
    m.after_step = [](Module& mod, bool weight_side) {
      if (weight_side || !mod.has_param("alpha")) return;
      Variable& a = mod.param("alpha");
      if (!(a.item() >= kPactAlphaMin)) a.mutable_data().fill_(kPactAlphaMin);
    };
    r.push_back(m);
  }
  {
    QuantMethod m;
    m.name = "u3";
    m.help = "Uhlich et al. U3: learned step d and range q_max (powers of two), the bitwidth inferred from them";
    m.weight_bits = BitRange{2, 16, 4};
    m.activation_bits = activations();
    m.weight_params = {"w_d", "w_qmax"};
    m.activation_params = {"a_d", "a_qmax"};
    m.weight = [](const QuantSite& s) -> VariableTransform {
      if (*s.bits >= 32) return nullptr;
      const Variable& w = s.module.param("weight");
      const U3Params p = u3_init_weight(w.data(), *s.bits);  // §6.5
      learnable(s.module, "w_d", p.d, w.dtype());
      learnable(s.module, "w_qmax", p.q_max, w.dtype());
      Module* mp = &s.module;
      return by_bits(
          s.bits, [mp](const Variable& w, int) { return uniform_u3(w, mp->param("w_d"), mp->param("w_qmax"), true); });
    };
    m.activation = [](const QuantSite& s) -> VariableTransform {
      const U3Params p = u3_init_activation(*s.bits);  // §6.5 [O]
      learnable(s.module, "a_d", p.d, DType::f32);
      learnable(s.module, "a_qmax", p.q_max, DType::f32);
      Module* mp = &s.module;
      return [mp](const Variable& a) { return uniform_u3(a, mp->param("a_d"), mp->param("a_qmax"), false); };
    };
    m.stored_bits = [](Module& layer, int k) {
      if (k >= 32 || !layer.has_param("w_d")) return k;
      return u3_bits(layer.param("w_d").item(), layer.param("w_qmax").item(), true);
    };
    m.bits_variable = [](Module& mod, bool weight_side) {
      return weight_side ? u3_bits_variable(mod.param("w_d"), mod.param("w_qmax"), true)
                         : u3_bits_variable(mod.param("a_d"), mod.param("a_qmax"), false);
    };
    m.after_step = [](Module& mod, bool weight_side) {
      if (weight_side && mod.has_param("w_d")) u3_clip_parameters(mod.param("w_d"), mod.param("w_qmax"), true);
      if (!weight_side && mod.has_param("a_d")) u3_clip_parameters(mod.param("a_d"), mod.param("a_qmax"), false);
    };
    r.push_back(m);
  }
  {
    QuantMethod m;
    m.name = "p3";
    m.help = "Uhlich et al. P3: powers of two between learned q_min and q_max, the bitwidth inferred from them";
    m.weight_bits = BitRange{2, 8, 4};
    m.activation_bits = BitRange{1, 8, 4};
    m.weight_params = {"w_qmin", "w_qmax"};
    m.activation_params = {"a_qmin", "a_qmax"};
    m.weight = [](const QuantSite& s) -> VariableTransform {
      if (*s.bits >= 32) return nullptr;
      const Variable& w = s.module.param("weight");
      const P3Params p = p3_init_weight(w.data(), *s.bits);  // §6.5 [O]
      learnable(s.module, "w_qmin", p.q_min, w.dtype());
      learnable(s.module, "w_qmax", p.q_max, w.dtype());
      Module* mp = &s.module;
      return by_bits(
          s.bits, [mp](const Variable& w, int) { return pow2_p3(w, mp->param("w_qmin"), mp->param("w_qmax"), true); });
    };
    m.activation = [](const QuantSite& s) -> VariableTransform {
      const P3Params p = p3_init_activation(*s.bits);  // §6.5 [O]
      learnable(s.module, "a_qmin", p.q_min, DType::f32);
      learnable(s.module, "a_qmax", p.q_max, DType::f32);
      Module* mp = &s.module;
      return [mp](const Variable& a) { return pow2_p3(a, mp->param("a_qmin"), mp->param("a_qmax"), false); };
    };
    m.stored_bits = [](Module& layer, int k) {
      if (k >= 32 || !layer.has_param("w_qmin")) return k;
      return p3_bits(layer.param("w_qmin").item(), layer.param("w_qmax").item(), true);
    };
    m.bits_variable = [](Module& mod, bool weight_side) {
      return weight_side ? p3_bits_variable(mod.param("w_qmin"), mod.param("w_qmax"), true)
                         : p3_bits_variable(mod.param("a_qmin"), mod.param("a_qmax"), false);
    };
    m.after_step = [](Module& mod, bool weight_side) {
      if (weight_side && mod.has_param("w_qmin")) p3_clip_parameters(mod.param("w_qmin"), mod.param("w_qmax"), true);
      if (!weight_side && mod.has_param("a_qmin")) p3_clip_parameters(mod.param("a_qmin"), mod.param("a_qmax"), false);
    };
    r.push_back(m);
  }
  r.push_back(
      uhlich_with_bits("u1", "Uhlich et al. U1: learned bitwidth b and step d (the range follows)", false, "d"));
  r.push_back(
      uhlich_with_bits("u2", "Uhlich et al. U2: learned bitwidth b and range q_max (the step follows)", false, "qmax"));
  r.push_back(uhlich_with_bits("p1", "Uhlich et al. P1: powers of two, learned bitwidth b and q_max", true, "qmax"));
  r.push_back(uhlich_with_bits("p2", "Uhlich et al. P2: powers of two, learned bitwidth b and q_min", true, "qmin"));
  {
    // Choi et al. §3.1: a learned cell size per layer (w_delta) and activation (a_delta), STE for round,
    // no gradient scaling. wbits 1: binary d sign(w); 2: ternary; >= 3: n-bit signed. d starts at the
    // MSQE-optimal cell size of the layer's current weights (msqe_init_delta, a 1-d Lloyd search),
    // Δ at that of the first batch it sees (0 marks it unset, as LSQ's a_step).
    QuantMethod m;
    m.name = "msqe";
    m.help =
        "Choi et al.: d clip(round(w / d), -2^(k-1), 2^(k-1) - 1) (k = 2: ternary, 1: d sign w) with a learned cell "
        "size d per layer (w_delta) and activation (a_delta); --reg msqe adds the MSQE penalty";
    m.weight_bits = BitRange{1, 16, 4};
    m.activation_bits = activations();
    m.weight_params = {"w_delta"};
    m.activation_params = {"a_delta"};
    m.weight = [](const QuantSite& s) -> VariableTransform {
      if (*s.bits >= 32) return nullptr;
      const Variable& w = s.module.param("weight");
      learnable(s.module, "w_delta", msqe_init_delta(w.data(), *s.bits, true), w.dtype());
      Module* mp = &s.module;
      return by_bits(s.bits,
                     [mp](const Variable& w, int k) { return msqe_quantize(w, mp->param("w_delta"), k, true); });
    };
    m.activation = [](const QuantSite& s) -> VariableTransform {
      learnable(s.module, "a_delta", 0.0, DType::f32);
      Module* mp = &s.module;
      const int k = *s.bits;
      return [mp, k](const Variable& a) {
        Variable& d = mp->param("a_delta");
        if (d.item() == 0.0) d.mutable_data().fill_(std::max(msqe_init_delta(a.data(), k, false), 1e-8));
        return msqe_quantize(a, d, k, false);
      };
    };
    // A cell size is kept positive (a step can overshoot 0).
    m.after_step = [](Module& mod, bool weight_side) {
      const char* n = weight_side ? "w_delta" : "a_delta";
      if (!mod.has_param(n)) return;
      Variable& d = mod.param(n);
      if (!(d.item() >= kMsqeDeltaMin)) d.mutable_data().fill_(kMsqeDeltaMin);
    };
    r.push_back(m);
  }
  return r;
}

}  // namespace

std::string BitRange::str() const {
  return min == max ? std::to_string(min) : std::to_string(min) + ".." + std::to_string(max);
}

const std::vector<QuantMethod>& quant_methods() {
  static const std::vector<QuantMethod> registry = build_registry();
  return registry;
}

const QuantMethod& find_method(const std::string& name) {
  for (const auto& m : quant_methods())
    if (m.name == name) return m;
  throw Error("quantization: unknown method '" + name + "' (" + method_names(", ") + ")");
}

std::string method_names(const std::string& separator) {
  std::string s;
  for (const auto& m : quant_methods()) s += (s.empty() ? "" : separator) + m.name;
  return s;
}

}  // namespace lowbit::quant
