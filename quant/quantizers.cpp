// Quantizers composed from straight-through primitives (quant/ste.h) and ordinary ops; the three
// with learned range parameters (U3, PACT) state their published surrogate gradients explicitly.
#include "quant/quantizers.h"

#include <cmath>

#include "autograd/ops.h"
#include "core/math.h"
#include "quant/ste.h"

namespace lowbit::quant {
namespace {

double levels_minus_one(int k) { return std::ldexp(1.0, k) - 1; }  // 2^k - 1

void check_bits(int k, int lo, const char* op) {
  LOWBIT_CHECK(k >= lo && k <= 16, op, ": bitwidth must be in [", lo, ", 16], got ", k);
}

void check_scalar(const Variable& p, const char* op, const char* what) {
  LOWBIT_CHECK(p.defined() && p.numel() == 1, op, ": ", what, " must be a one-element Variable");
}

}  // namespace

Variable quantize_unit(const Variable& r, int k) {
  check_bits(k, 1, "quantize_unit");
  const double n = levels_minus_one(k);
  return mul(round_ste(mul(r, n)), 1.0 / n);
}

Variable dorefa_weight(const Variable& w, int k, bool scaled) {
  check_bits(k, 1, "dorefa_weight");
  if (k == 1) {
    if (!scaled) return sign_ste(w);
    // E = mean|w| as a constant: w_q = E sign(w / E), identity gradient.
    const Variable e(math::mean(math::abs(w.data())));
    return mul(sign_ste(div(w, e)), e);
  }
  const Variable t = tanh(w);
  const Variable r = add(div(t, mul(amax(abs(t)), 2.0)), 0.5);
  return sub(mul(quantize_unit(r, k), 2.0), Variable(Tensor::ones({}, w.dtype())));
}

// quantize_unit(clamp(a, 0, 1), k), fused (clip_quantize is that composition, pinned by tests).
Variable dorefa_activation(const Variable& a, int k) {
  check_bits(k, 1, "dorefa_activation");
  return clip_quantize(a, 0.0, 1.0, levels_minus_one(k));
}

Variable dorefa_gradient(const Variable& x, int k_g, Generator& gen) {
  check_bits(k_g, 1, "dorefa_gradient");
  LOWBIT_CHECK(x.dim() >= 1, "dorefa_gradient: expected a batch axis, got shape ", shape_str(x.shape()));
  Generator* g_ptr = &gen;
  return make_result(x.data(), "dorefa_gradient", {x}, [k_g, g_ptr](const Variable& g, const Variable&) {
    const double n = levels_minus_one(k_g);
    const Tensor dr = g.data();
    std::vector<int64_t> non_batch;
    for (int64_t d = 1; d < dr.dim(); ++d) non_batch.push_back(d);
    Tensor maxx = non_batch.empty() ? math::abs(dr) : math::amax(math::abs(dr), non_batch, true);
    maxx = math::maximum(maxx, Tensor::full({}, 1e-30, dr.dtype()));                     // all-zero samples stay zero
    const Tensor noise = math::add(Tensor::rand(dr.shape(), *g_ptr, dr.dtype()), -0.5);  // U(-1/2, 1/2)
    Tensor u = math::add(math::add(math::mul(math::div(dr, maxx), 0.5), 0.5), math::mul(noise, 1.0 / n));
    u = math::clamp(u, 0, 1);
    const Tensor q = math::mul(math::round(math::mul(u, n)), 1.0 / n);
    return std::vector<Variable>{Variable(math::mul(math::mul(math::add(q, -0.5), 2.0), maxx))};
  });
}

Variable wrpn_weight(const Variable& w, int k) {
  check_bits(k, 2, "wrpn_weight");
  const double n = levels_minus_one(k - 1);
  return mul(round_ste(mul(clamp(w, -1.0, 1.0), n)), 1.0 / n);
}

Variable wrpn_activation(const Variable& a, int k) {
  check_bits(k, 1, "wrpn_activation");
  return clip_quantize(a, 0.0, 1.0, levels_minus_one(k));
}

Variable binary_weight(const Variable& w) { return sign_ste_clipped(w); }

Variable ternary_weight(const Variable& w) {
  const Tensor a = math::abs(w.data());
  const double delta = 0.7 * math::mean(a).item();
  const Tensor mask = math::gt(a, delta);
  const double kept = math::sum(mask).item();
  const double alpha = kept > 0 ? math::sum(math::mul(a, mask)).item() / kept : 0.0;
  return straight_through(w, math::mul(math::mul(math::sign(w.data()), mask), alpha));
}

Variable uniform_u3(const Variable& x_in, const Variable& d, const Variable& q_max, bool signed_) {
  check_scalar(d, "uniform_u3", "step size d");
  check_scalar(q_max, "uniform_u3", "range q_max");
  const Variable x = signed_ ? x_in : relu(x_in);
  const double dv = d.item(), qv = q_max.item();
  LOWBIT_CHECK(dv > 0 && qv > 0, "uniform_u3: need d > 0 and q_max > 0, got d=", dv, " q_max=", qv);
  const Tensor& xt = x.data();
  const Tensor sgn = math::sign(xt), ax = math::abs(xt);
  const Tensor inside = math::le(ax, qv), outside = math::gt(ax, qv);
  const Tensor q_inside = math::mul(math::mul(sgn, math::floor(math::add(math::mul(ax, 1.0 / dv), 0.5))), dv);
  const Tensor q = math::add(math::mul(q_inside, inside), math::mul(math::mul(sgn, outside), qv));
  // Surrogate-gradient factors (§6.2), constants of the forward pass.
  const Tensor dq_dd = math::mul(math::mul(math::sub(q, xt), 1.0 / dv), inside);
  const Tensor dq_dqmax = math::mul(sgn, outside);
  return make_result(q, "uniform_u3", {x, d, q_max},
                     [inside, dq_dd, dq_dqmax, d, q_max](const Variable& g, const Variable&) {
                       return std::vector<Variable>{mul_mask(g, inside), reshape(sum(mul_mask(g, dq_dd)), d.shape()),
                                                    reshape(sum(mul_mask(g, dq_dqmax)), q_max.shape())};
                     });
}

int u3_bits(double d, double q_max, bool signed_) {
  LOWBIT_CHECK(d > 0 && q_max > 0, "u3_bits: need d > 0 and q_max > 0");
  const double b = std::log2(q_max / d + 1) + (signed_ ? 1 : 0);
  return std::max(static_cast<int>(std::ceil(b - 1e-9)), signed_ ? 2 : 1);
}

Variable lsq(const Variable& v, const Variable& s, int b, bool signed_) {
  check_bits(b, signed_ ? 2 : 1, "lsq");
  check_scalar(s, "lsq", "step size s");
  const double qn = signed_ ? std::ldexp(1.0, b - 1) : 0.0;
  const double qp = signed_ ? std::ldexp(1.0, b - 1) - 1 : std::ldexp(1.0, b) - 1;
  const Variable s_scaled = grad_scale(s, 1.0 / std::sqrt(double(v.numel()) * qp));
  return mul(round_ste(clamp(div(v, s_scaled), -qn, qp)), s_scaled);
}

double lsq_init_step(const Tensor& v, int b, bool signed_) {
  const double qp = signed_ ? std::ldexp(1.0, b - 1) - 1 : std::ldexp(1.0, b) - 1;
  return 2 * math::mean(math::abs(v)).item() / std::sqrt(qp);
}

Variable pact(const Variable& x, const Variable& alpha, int k) {
  check_bits(k, 1, "pact");
  check_scalar(alpha, "pact", "clip value alpha");
  const double a = alpha.item(), n = levels_minus_one(k);
  LOWBIT_CHECK(a > 0, "pact: alpha must be positive, got ", a);
  const Tensor y = math::clamp(x.data(), 0, a);
  const Tensor yq = math::mul(math::round(math::mul(y, n / a)), a / n);
  const Tensor pass = math::mul(math::gt(x.data(), 0.0), math::lt(x.data(), a));
  const Tensor clipped = math::ge(x.data(), a);
  return make_result(yq, "pact", {x, alpha}, [pass, clipped, alpha](const Variable& g, const Variable&) {
    return std::vector<Variable>{mul_mask(g, pass), reshape(sum(mul_mask(g, clipped)), alpha.shape())};
  });
}

}  // namespace lowbit::quant
