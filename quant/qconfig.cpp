#include "quant/qconfig.h"

#include <cmath>
#include <sstream>

#include "autograd/ops.h"
#include "core/math.h"
#include "layers/activation.h"
#include "layers/conv.h"
#include "layers/linear.h"
#include "quant/quantizers.h"
#include "quant/regularizers.h"

namespace lowbit::quant {
namespace {

struct Override {
  std::string pattern;
  int bits;
};

std::vector<Override> parse_overrides(const std::string& spec, const char* what) {
  std::vector<Override> out;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const auto eq = item.find('=');
    LOWBIT_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < item.size(), "quantization ", what, ": '", item,
                 "' is not PATTERN=BITS");
    char* end = nullptr;
    const long bits = std::strtol(item.c_str() + eq + 1, &end, 10);
    LOWBIT_CHECK(*end == 0 && bits >= 1, "quantization ", what, ": '", item, "': bits must be a positive integer");
    out.push_back({item.substr(0, eq), static_cast<int>(bits)});
  }
  return out;
}

int resolve_bits(int bits, const std::vector<Override>& overrides, const std::string& name, bool first, bool last) {
  for (const auto& o : overrides)
    if ((o.pattern == "first" && first) || (o.pattern == "last" && last) || name_matches(o.pattern, name))
      bits = o.bits;
  return bits;
}

VariableTransform weight_quantizer(Method m, std::shared_ptr<int> bits, Module& layer, const std::string& name,
                                   std::vector<std::string>& registered, bool scale_by_max) {
  switch (m) {
    case Method::none: return nullptr;
    case Method::dorefa:
    case Method::pact: return [bits](const Variable& w) { return *bits >= 32 ? w : dorefa_weight(w, *bits); };
    case Method::wrpn:
      if (scale_by_max)  // s * wrpn(w / s), s = max |w| held constant (STE: gradient 1 on [-s, s])
        return [bits](const Variable& w) { return *bits >= 32 ? w : wrpn_on_scale(w, *bits, WeightScale::max_abs); };
      return [bits](const Variable& w) { return *bits >= 32 ? w : wrpn_weight(w, *bits); };
    case Method::binary: return [bits](const Variable& w) { return *bits >= 32 ? w : binary_weight(w); };
    case Method::ternary: return [bits](const Variable& w) { return *bits >= 32 ? w : ternary_weight(w); };
    case Method::u3: {
      if (*bits >= 32) return nullptr;
      const Variable& w = layer.param("weight");
      if (!layer.has_param("w_qmax")) {
        const double qmax = std::max(math::amax(math::abs(w.data())).item(), 1e-8);
        layer.register_parameter("w_qmax", Tensor::full({}, qmax, w.dtype()));
        layer.register_parameter("w_d", Tensor::full({}, qmax / (std::ldexp(1.0, *bits - 1) - 1), w.dtype()));
      }
      registered.push_back(join_name(name, "w_d"));
      registered.push_back(join_name(name, "w_qmax"));
      Module* lp = &layer;
      return [bits, lp](const Variable& w) {
        return *bits >= 32 ? w : uniform_u3(w, lp->param("w_d"), lp->param("w_qmax"), true);
      };
    }
    case Method::lsq: {
      if (*bits >= 32) return nullptr;
      const Variable& w = layer.param("weight");
      if (!layer.has_param("w_step"))
        layer.register_parameter("w_step", Tensor::full({}, lsq_init_step(w.data(), *bits, true), w.dtype()));
      registered.push_back(join_name(name, "w_step"));
      Module* lp = &layer;
      return [bits, lp](const Variable& w) { return *bits >= 32 ? w : lsq(w, lp->param("w_step"), *bits, true); };
    }
  }
  return nullptr;
}

VariableTransform activation_quantizer(Method m, int bits, Module& act, const std::string& name, double alpha_init,
                                       std::vector<std::string>& registered) {
  if (bits >= 32 || m == Method::none) return nullptr;
  switch (m) {
    case Method::wrpn: return [bits](const Variable& a) { return wrpn_activation(a, bits); };
    case Method::pact: {
      if (!act.has_param("alpha")) act.register_parameter("alpha", Tensor::full({}, alpha_init));
      registered.push_back(join_name(name, "alpha"));
      Module* ap = &act;
      return [bits, ap](const Variable& a) { return pact(a, ap->param("alpha"), bits); };
    }
    case Method::lsq: {
      // The step is initialised from the first batch it sees (LSQ: 2 mean|a| / sqrt(Q_P)).
      if (!act.has_param("a_step")) act.register_parameter("a_step", Tensor::full({}, 0.0));
      registered.push_back(join_name(name, "a_step"));
      Module* ap = &act;
      return [bits, ap](const Variable& a) {
        Variable& s = ap->param("a_step");
        if (s.item() == 0.0) s.mutable_data().fill_(std::max(lsq_init_step(a.data(), bits, false), 1e-8));
        return lsq(a, s, bits, false);
      };
    }
    case Method::u3: {
      // Range from the first batch it sees: q_max = max a, d = q_max / (2^k - 1).
      if (!act.has_param("a_qmax")) {
        act.register_parameter("a_qmax", Tensor::full({}, 0.0));
        act.register_parameter("a_d", Tensor::full({}, 0.0));
      }
      registered.push_back(join_name(name, "a_d"));
      registered.push_back(join_name(name, "a_qmax"));
      Module* ap = &act;
      return [bits, ap](const Variable& a) {
        Variable &d = ap->param("a_d"), &qmax = ap->param("a_qmax");
        if (qmax.item() == 0.0) {
          const double m = std::max(math::amax(a.data()).item(), 1e-3);
          qmax.mutable_data().fill_(m);
          d.mutable_data().fill_(m / (std::ldexp(1.0, bits) - 1));
        }
        return uniform_u3(a, d, qmax, false);
      };
    }
    default: return [bits](const Variable& a) { return dorefa_activation(a, bits); };
  }
}

bool is_activation(const Module& m) {
  return dynamic_cast<const ReLU*>(&m) || dynamic_cast<const Hardtanh*>(&m);  // ReLU6 is a Hardtanh
}

}  // namespace

Method parse_method(const std::string& name) {
  for (Method m : {Method::none, Method::dorefa, Method::wrpn, Method::binary, Method::ternary, Method::lsq,
                   Method::pact, Method::u3})
    if (name == method_name(m)) return m;
  throw Error("quantization: unknown method '" + name + "' (none, dorefa, wrpn, binary, ternary, lsq, pact, u3)");
}

const char* method_name(Method m) {
  switch (m) {
    case Method::none: return "none";
    case Method::dorefa: return "dorefa";
    case Method::wrpn: return "wrpn";
    case Method::binary: return "binary";
    case Method::ternary: return "ternary";
    case Method::lsq: return "lsq";
    case Method::pact: return "pact";
    case Method::u3: return "u3";
  }
  return "?";
}

bool name_matches(const std::string& pattern, const std::string& name) {
  // Iterative glob with '*' only.
  size_t p = 0, n = 0, star = std::string::npos, mark = 0;
  while (n < name.size()) {
    if (p < pattern.size() && pattern[p] == name[n]) {
      ++p, ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++, mark = n;
    } else if (star != std::string::npos) {
      p = star + 1, n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

Variable& QuantizedLayer::weight() const { return module->param("weight"); }
int64_t QuantizedLayer::numel() const { return weight().numel(); }

void Quantization::set_weight_bits(const std::string& layer, int bits) {
  for (auto& l : layers)
    if (l.name == layer) {
      *l.weight_bits = bits;
      return;
    }
  throw Error("quantization: no weight layer named '" + layer + "'");
}

int Quantization::inferred_weight_bits(const QuantizedLayer& l) const {
  if (method == Method::u3 && *l.weight_bits < 32 && l.module->has_param("w_d"))
    return u3_bits(l.module->param("w_d").item(), l.module->param("w_qmax").item(), true);
  return *l.weight_bits;
}

std::vector<const QuantizedLayer*> Quantization::quantized_layers() const {
  std::vector<const QuantizedLayer*> out;
  for (const auto& l : layers)
    if (*l.weight_bits < 32) out.push_back(&l);
  return out;
}

Quantization attach_quantizers(Module& model, const QuantConfig& config) {
  Quantization q;
  q.method = config.method;
  const auto w_over = parse_overrides(config.weight_overrides, "weight overrides");
  const auto a_over = parse_overrides(config.activation_overrides, "activation overrides");
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> weight_layers, acts;
  for (auto& [name, m] : model.named_modules()) {
    if (dynamic_cast<Conv2d*>(m.get()) || dynamic_cast<Linear*>(m.get())) weight_layers.emplace_back(name, m);
    if (is_activation(*m)) acts.emplace_back(name, m);
  }
  for (size_t i = 0; i < weight_layers.size(); ++i) {
    auto& [name, m] = weight_layers[i];
    QuantizedLayer l;
    l.name = name;
    l.module = m;
    l.first = i == 0;
    l.last = i + 1 == weight_layers.size();
    int bits = config.method == Method::none ? 32 : config.weight_bits;
    if ((l.first || l.last) && !config.quantize_first_last) bits = 32;
    bits = resolve_bits(bits, w_over, name, l.first, l.last);
    l.weight_bits = std::make_shared<int>(bits);
    VariableTransform hook =
        weight_quantizer(config.method, l.weight_bits, *m, name, q.parameter_names, config.weight_scale_max);
    if (auto* c = dynamic_cast<Conv2d*>(m.get())) c->set_weight_hook(hook);
    if (auto* f = dynamic_cast<Linear*>(m.get())) f->set_weight_hook(hook);
    q.layers.push_back(std::move(l));
  }
  for (auto& [name, m] : acts) {
    const int bits = resolve_bits(config.activation_bits, a_over, name, false, false);
    VariableTransform hook =
        activation_quantizer(config.method, bits, *m, name, config.pact_alpha_init, q.parameter_names);
    m->set_output_hook(hook);
    if (hook) q.activations.push_back({name, m, bits});
  }
  return q;
}

}  // namespace lowbit::quant
