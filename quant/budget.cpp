// Memory budgets (contract: quant/budget.h; spec methods.md §6.4).
#include "quant/budget.h"

#include <algorithm>
#include <cmath>

#include "autograd/ops.h"
#include "core/error.h"
#include "quant/methods.h"
#include "quant/quantizers.h"
#include "quant/ste.h"

namespace lowbit::quant {
namespace {

constexpr double kBitsPerKB = 8.0 * 1024.0;  // kB = b #params / 8 / 1024 (§6.4 [O])

Variable log2_of(const Variable& x) { return mul(log(x), 1.0 / std::log(2.0)); }
Variable exp2_of(const Variable& x) { return exp(mul(x, std::log(2.0))); }
Variable scalar_like(double v, const Variable& like) { return Variable(Tensor::scalar(v, like.dtype())); }

// Parameters a layer's size counts: weight and bias (the official network_size_weights).
int64_t parameter_count(const QuantizedLayer& l) {
  int64_t n = l.numel();
  if (l.module->has_param("bias")) n += l.module->param("bias").numel();
  return n;
}

}  // namespace

ActivationBudget parse_activation_budget(const std::string& s) {
  if (s == "max") return ActivationBudget::max;
  if (s == "sum") return ActivationBudget::sum;
  throw Error("--act-budget '" + s + "': expected max (the largest feature map, (8c)) or sum (all of them, (8b))");
}

Variable u3_bits_variable(const Variable& d, const Variable& q_max, bool signed_) {
  // The composition of train_resnet.py network_size_*, STEs for round and ceil (§6.3 [O]) ...
  const Variable step = exp2_of(round_ste(log2_of(sum(d))));
  const Variable range = mul(round_ste(div(sum(q_max), step)), step);
  Variable b = ceil_ste(log2_of(add(div(range, step), 1.0)));
  if (signed_) b = add(b, 1.0);
  b = maximum(b, scalar_like(signed_ ? 2 : 1, b));
  // ... carries the gradient; the value is u3_bits's, exact (float log2 of 2^k may land past k).
  return straight_through(b, Tensor::scalar(u3_bits(d.item(), q_max.item(), signed_), b.dtype()));
}

Variable p3_bits_variable(const Variable& q_min, const Variable& q_max, bool signed_) {
  const Variable lo = exp2_of(round_ste(log2_of(sum(q_min))));
  const Variable hi = exp2_of(round_ste(log2_of(sum(q_max))));
  Variable b = ceil_ste(add(log2_of(add(log2_of(div(hi, lo)), 1.0)), 1.0));
  b = maximum(b, scalar_like(signed_ ? 2 : 1, b));
  return straight_through(b, Tensor::scalar(p3_bits(q_min.item(), q_max.item(), signed_), b.dtype()));
}

MemoryBudget::MemoryBudget(const Quantization& q, const BudgetOptions& options) : q_(q), opt_(options) {
  LOWBIT_CHECK(opt_.lambda_w >= 0 && opt_.lambda_a >= 0,
               "the budgets' lambdas (--budget-lambda, --act-budget-lambda) must be >= 0");
  const QuantMethod* m = q_.method;
  const bool learned = m && m->bits_variable;
  if (opt_.weight_kb > 0) {
    bool any = false;
    double smallest = 0;  // every learned layer at 2 bits (U3's least), the others at their fixed bits
    for (const auto& l : q_.layers) {
      const bool moves = learned && *l.weight_bits < 32;
      any = any || moves;
      smallest += (moves ? 2 : *l.weight_bits) * double(parameter_count(l)) / kBitsPerKB;
    }
    LOWBIT_CHECK(any,
                 "--weight-budget-kb needs weight bits that are learned (--quant u3, p3, u1, u2, p1, p2), got --quant ",
                 m ? m->name : std::string("none"));
    LOWBIT_CHECK(opt_.weight_kb >= smallest, "--weight-budget-kb ", opt_.weight_kb,
                 " is below the least these weights can take, ", smallest,
                 " kB (the learned layers at 2 bits, the others at their fixed bits)");
  }
  if (opt_.act_kb > 0)
    LOWBIT_CHECK(learned && !q_.activations.empty(),
                 "--act-budget-kb needs quantized activations whose bits are learned (--quant u3, p3, u1, u2, p1, p2; "
                 "--abits < 32), "
                 "got --quant ",
                 m ? m->name : std::string("none"));
}

Variable MemoryBudget::bits_of_layer(size_t i) const {
  const QuantizedLayer& l = q_.layers[i];
  const int fixed = *l.weight_bits;
  if (fixed < 32 && q_.method && q_.method->bits_variable) return q_.method->bits_variable(*l.module, true);
  return Variable(Tensor::scalar(fixed, l.weight().dtype()));
}

Variable MemoryBudget::bits_of_activation(size_t i) const {
  const QuantizedActivation& a = q_.activations[i];
  if (q_.method && q_.method->bits_variable) return q_.method->bits_variable(*a.module, false);
  return Variable(Tensor::scalar(a.bits, DType::f32));
}

Variable MemoryBudget::loss(const optim::ParamGroup&, int64_t) {
  Variable total;
  auto hinge = [&](const Variable& size_kb, double target, double lambda) {  // lambda max(0, S - S0)^2
    const Variable over = relu(add(size_kb, -target));
    const Variable term = mul(mul(over, over), lambda);
    total = total.defined() ? add(total, term) : term;
  };
  if (opt_.weight_kb > 0) {
    Variable kb;
    for (size_t i = 0; i < q_.layers.size(); ++i) {
      const Variable t = mul(bits_of_layer(i), double(parameter_count(q_.layers[i])) / kBitsPerKB);
      kb = kb.defined() ? add(kb, t) : t;
    }
    hinge(kb, opt_.weight_kb, opt_.lambda_w);
  }
  if (opt_.act_kb > 0) {
    std::vector<Variable> kbs;
    for (size_t i = 0; i < q_.activations.size(); ++i) {
      const int64_t features = *q_.activations[i].features;
      if (features == 0) continue;  // not run yet (the fit loop runs the forward pass first)
      kbs.push_back(reshape(mul(bits_of_activation(i), double(features) / kBitsPerKB), {1}));
    }
    if (!kbs.empty()) {
      const Variable all = cat(kbs, 0);
      hinge(opt_.act == ActivationBudget::max ? amax(all) : sum(all), opt_.act_kb, opt_.lambda_a);
    }
  }
  return total;
}

MemorySizes MemoryBudget::sizes() const {
  MemorySizes s;
  for (size_t i = 0; i < q_.layers.size(); ++i) {
    const int64_t n = parameter_count(q_.layers[i]);
    s.weights += n;
    s.weight_kb += bits_of_layer(i).item() * double(n) / kBitsPerKB;
  }
  s.act_known = true;
  for (size_t i = 0; i < q_.activations.size(); ++i) {
    const int64_t features = *q_.activations[i].features;
    s.act_known = s.act_known && features > 0;
    const double kb = bits_of_activation(i).item() * double(features) / kBitsPerKB;
    s.act_kb = opt_.act == ActivationBudget::max ? std::max(s.act_kb, kb) : s.act_kb + kb;
  }
  return s;
}

}  // namespace lowbit::quant
