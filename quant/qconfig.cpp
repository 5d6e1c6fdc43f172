#include "quant/qconfig.h"

#include <algorithm>
#include <sstream>

#include "core/math.h"
#include "layers/activation.h"
#include "layers/container.h"
#include "layers/conv.h"
#include "layers/linear.h"
#include "quant/quantizers.h"

namespace lowbit::quant {
namespace {

struct Override {
  std::string item;  // "conv2=3", for messages
  std::string pattern;
  int bits;
  bool used = false;
};

std::vector<Override> parse_overrides(const std::string& spec, const char* option, const BitRange& range,
                                      const std::string& method) {
  std::vector<Override> out;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const auto eq = item.find('=');
    LOWBIT_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < item.size(), option, " '", item,
                 "': expected PATTERN=BITS");
    char* end = nullptr;
    const long bits = std::strtol(item.c_str() + eq + 1, &end, 10);
    LOWBIT_CHECK(*end == 0 && bits >= 1, option, " '", item, "': bits must be a positive integer");
    LOWBIT_CHECK(range.contains(int(bits)), option, " '", item, "': ", method, " takes ", range.str(),
                 " bits (32: full precision)");
    out.push_back({item, item.substr(0, eq), static_cast<int>(bits)});
  }
  return out;
}

int resolve_bits(int bits, std::vector<Override>& overrides, const std::string& name, bool first, bool last) {
  for (auto& o : overrides)
    if ((o.pattern == "first" && first) || (o.pattern == "last" && last) || name_matches(o.pattern, name))
      bits = o.bits, o.used = true;
  return bits;
}

void check_all_used(const std::vector<Override>& overrides, const char* option, const char* what,
                    const std::vector<std::string>& names) {
  for (const auto& o : overrides) {
    if (o.used) continue;
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    throw Error(detail::concat(option, " '", o.item, "': '", o.pattern, "' matches no ", what,
                               " (there are: ", list.empty() ? std::string("none") : list, ")"));
  }
}

bool is_activation(const Module& m) {
  return dynamic_cast<const ReLU*>(&m) || dynamic_cast<const Hardtanh*>(&m);  // ReLU6 is a Hardtanh
}

int bits_or_default(int bits, const BitRange& r) { return bits == 0 ? r.default_bits : bits; }

// The floor of a signed site's alpha after each step, and of its initial value (PACT's, methods.cpp).
constexpr double kSignedAlphaMin = 1e-2;

// A StreamPoint's signed quantizer (qconfig.h): signed_pact at `bits` (>= 2); alpha registered once
// (kept when attached again), 0 until the first batch sets it to max|a|.
VariableTransform signed_site(Module& m, int bits) {
  if (!m.has_param("alpha")) m.register_parameter("alpha", Tensor::full({}, 0.0, DType::f32));
  Module* mp = &m;
  return [mp, bits](const Variable& a) {
    Variable& alpha = mp->param("alpha");
    if (alpha.item() == 0.0)
      alpha.mutable_data().fill_(std::max(math::amax(math::abs(a.data())).item(), kSignedAlphaMin));
    return signed_pact(a, alpha, bits);
  };
}

}  // namespace

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

VariableTransform weight_hook_of(Module& m) {
  if (auto* c = dynamic_cast<Conv2d*>(&m)) return c->weight_hook();
  if (auto* l = dynamic_cast<Linear*>(&m)) return l->weight_hook();
  return nullptr;
}

void set_weight_hook(Module& m, VariableTransform hook) {
  if (auto* c = dynamic_cast<Conv2d*>(&m)) c->set_weight_hook(std::move(hook));
  if (auto* l = dynamic_cast<Linear*>(&m)) l->set_weight_hook(std::move(hook));
}

std::optional<QuantConfig> quantizer_with_levels(Grid grid, WeightScale scale) {
  for (const auto& m : quant_methods()) {
    if (!m.sinusoid) continue;
    for (WeightScale s : {WeightScale::none, WeightScale::max_abs}) {
      QuantConfig c;
      c.method = m.name;
      c.weight_scale = s;
      const auto match = m.sinusoid(c);
      if (match && match->grid == grid && match->scale == scale) return c;
    }
  }
  return std::nullopt;
}

Variable& QuantizedLayer::weight() const { return module->param("weight"); }
int64_t QuantizedLayer::numel() const { return weight().numel(); }

void Quantization::set_weight_bits(const std::string& layer, int bits) {
  for (auto& l : layers)
    if (l.name == layer) {
      LOWBIT_CHECK(!method || method->weight_bits.contains(bits), "quantization: ", layer, " at ", bits,
                   " bits: ", method->name, " takes ", method->weight_bits.str(), " bits (32: full precision)");
      *l.weight_bits = bits;
      return;
    }
  throw Error("quantization: no weight layer named '" + layer + "'");
}

int Quantization::stored_weight_bits(const QuantizedLayer& l) const {
  if (method && method->stored_bits) return method->stored_bits(*l.module, *l.weight_bits);
  return *l.weight_bits;
}

std::vector<const QuantizedLayer*> Quantization::quantized_layers() const {
  std::vector<const QuantizedLayer*> out;
  for (const auto& l : layers)
    if (*l.weight_bits < 32) out.push_back(&l);
  return out;
}

void Quantization::after_step() const {
  for (const auto& a : signed_activations) {  // a clip value, kept positive (as PACT's)
    Variable& alpha = a.module->param("alpha");
    if (!(alpha.item() >= kSignedAlphaMin)) alpha.mutable_data().fill_(kSignedAlphaMin);
  }
  if (!method || !method->after_step) return;
  for (const auto& l : layers)
    if (*l.weight_bits < 32) method->after_step(*l.module, true);
  for (const auto& a : activations) method->after_step(*a.module, false);
}

Quantization attach_quantizers(Module& model, const QuantConfig& config) {
  return attach_quantizers(model, config, find_method(config.method));
}

Quantization attach_quantizers(Module& model, const QuantConfig& config, const QuantMethod& method) {
  Quantization q;
  q.method = &method;
  const int weight_bits = bits_or_default(config.weight_bits, method.weight_bits);
  const int activation_bits = bits_or_default(config.activation_bits, method.activation_bits);
  LOWBIT_CHECK(method.weight_bits.contains(weight_bits), "--wbits ", weight_bits, ": ", method.name, " takes ",
               method.weight_bits.str(), " bits (32: full precision)");
  LOWBIT_CHECK(method.activation_bits.contains(activation_bits), "--abits ", activation_bits, ": ", method.name,
               " takes ", method.activation_bits.str(), " bits (32: full precision)");
  auto w_over = parse_overrides(config.weight_overrides, "--wbits-overrides", method.weight_bits, method.name);
  auto a_over = parse_overrides(config.activation_overrides, "--abits-overrides", method.activation_bits, method.name);
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> weight_layers, acts, signed_sites;
  for (auto& [name, m] : model.named_modules()) {
    if (dynamic_cast<Conv2d*>(m.get()) || dynamic_cast<Linear*>(m.get())) weight_layers.emplace_back(name, m);
    if (is_activation(*m)) acts.emplace_back(name, m);
    if (dynamic_cast<StreamPoint*>(m.get())) signed_sites.emplace_back(name, m);
  }
  std::vector<std::string> layer_names, act_names;
  for (size_t i = 0; i < weight_layers.size(); ++i) {
    auto& [name, m] = weight_layers[i];
    layer_names.push_back(name);
    QuantizedLayer l;
    l.name = name;
    l.module = m;
    l.first = i == 0;
    l.last = i + 1 == weight_layers.size();
    int bits = weight_bits;
    if ((l.first || l.last) && !config.quantize_first_last) bits = 32;
    bits = resolve_bits(bits, w_over, name, l.first, l.last);
    l.weight_bits = std::make_shared<int>(bits);
    VariableTransform hook;
    if (method.weight) hook = method.weight(QuantSite{*m, name, l.weight_bits, config});
    if (bits < 32) {
      for (const auto& p : method.weight_params)
        if (m->has_param(p)) q.parameter_names.push_back(join_name(name, p));
    }
    set_weight_hook(*m, hook);
    q.layers.push_back(std::move(l));
  }
  for (auto& [name, m] : acts) {
    act_names.push_back(name);
    const int bits = resolve_bits(activation_bits, a_over, name, false, false);
    VariableTransform hook;
    if (bits < 32 && method.activation)
      hook = method.activation(QuantSite{*m, name, std::make_shared<int>(bits), config});
    auto features = std::make_shared<int64_t>(0);
    if (hook)
      hook = [hook, features](const Variable& a) {
        *features = a.dim() >= 1 && a.size(0) > 0 ? a.numel() / a.size(0) : a.numel();
        return hook(a);
      };
    m->set_output_hook(hook);
    if (hook) {
      q.activations.push_back({name, m, bits, features});
      for (const auto& p : method.activation_params)
        if (m->has_param(p)) q.parameter_names.push_back(join_name(name, p));
    }
  }
  for (auto& [name, m] : signed_sites) {  // signed: at least 2 bits, whatever the method's activation range
    act_names.push_back(name);
    const int bits = resolve_bits(activation_bits, a_over, name, false, false);
    const bool quantized = bits < 32 && method.activation != nullptr;
    m->set_output_hook(quantized ? signed_site(*m, std::max(bits, 2)) : nullptr);
    if (!quantized) continue;
    q.signed_activations.push_back({name, m, std::max(bits, 2)});
    q.parameter_names.push_back(join_name(name, "alpha"));
  }
  check_all_used(w_over, "--wbits-overrides", "weight layer", layer_names);
  check_all_used(a_over, "--abits-overrides", "activation", act_names);
  return q;
}

}  // namespace lowbit::quant
