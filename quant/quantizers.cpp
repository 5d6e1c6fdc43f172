// Quantizers composed from straight-through primitives (quant/ste.h) and ordinary ops; those
// with learned range parameters (U3, P3, PACT) state their published surrogate gradients explicitly.
#include "quant/quantizers.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <utility>

#include "autograd/ops.h"
#include "core/kernels/quantize.h"
#include "core/math.h"
#include "core/parallel.h"
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

Variable dorefa_gradient(const Variable& x, int k_g, std::shared_ptr<Generator> gen) {
  check_bits(k_g, 1, "dorefa_gradient");
  LOWBIT_CHECK(gen != nullptr, "dorefa_gradient: the generator must not be null");
  LOWBIT_CHECK(x.dim() >= 1, "dorefa_gradient: expected a batch axis, got shape ", shape_str(x.shape()));
  return make_result(x.data(), "dorefa_gradient", {x}, [k_g, gen](const Variable& g, const Variable&) {
    const double n = levels_minus_one(k_g);
    const Tensor dr = g.data();
    std::vector<int64_t> non_batch;
    for (int64_t d = 1; d < dr.dim(); ++d) non_batch.push_back(d);
    Tensor maxx = non_batch.empty() ? math::abs(dr) : math::amax(math::abs(dr), non_batch, true);
    maxx = math::maximum(maxx, Tensor::full({}, 1e-30, dr.dtype()));                   // all-zero samples stay zero
    const Tensor noise = math::add(Tensor::rand(dr.shape(), *gen, dr.dtype()), -0.5);  // U(-1/2, 1/2)
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

namespace {

double pow2_round(double v) { return std::exp2(std::round(std::log2(v))); }  // 2^round(log2 v)

// Smallest m with 2^m >= count (count >= 1), exactly.
int ceil_log2(double count) {
  int m = 0;
  while (std::ldexp(1.0, m) < count) ++m;
  return m;
}

void check_positive(double v, const char* op, const char* what) {
  LOWBIT_CHECK(std::isfinite(v) && v > 0, op, ": ", what, " must be positive and finite, got ", v);
}

// Forward value and the three surrogate-gradient factors (w.r.t. x and the two range parameters)
// of an elementwise quantizer, computed in double by f(x, out[4]) and stored in x's dtype.
struct Elementwise {
  Tensor q, dx, da, db;
};

template <typename F>
Elementwise elementwise(const Tensor& x_in, const char* op, F&& f) {
  const Tensor x = x_in.is_dense() ? x_in : x_in.contiguous();
  Elementwise r{Tensor::empty_like(x), Tensor::empty_like(x), Tensor::empty_like(x), Tensor::empty_like(x)};
  LOWBIT_DISPATCH_FLOAT(x.dtype(), op, [&] {
    const scalar_t* xp = x.data<scalar_t>();
    scalar_t *q = r.q.data<scalar_t>(), *dx = r.dx.data<scalar_t>(), *da = r.da.data<scalar_t>(),
             *db = r.db.data<scalar_t>();
    // Each element on its own: parallel, the same result for any thread count.
    parallel_for(0, x.numel(), 16384, [&](int64_t lo, int64_t hi) {
      double out[4];
      for (int64_t i = lo; i < hi; ++i) {
        f(double(xp[i]), out);
        q[i] = scalar_t(out[0]), dx[i] = scalar_t(out[1]), da[i] = scalar_t(out[2]), db[i] = scalar_t(out[3]);
      }
    });
  });
  return r;
}

// NaN inputs stay NaN (with zero surrogate gradients) instead of landing on a level.
bool pass_nan(double v, double* out) {
  if (!std::isnan(v)) return false;
  out[0] = v, out[1] = out[2] = out[3] = 0;
  return true;
}

// {d', q'} of uniform_u3 (header).
U3Params u3_grid(double d, double q_max, const char* op) {
  check_positive(d, op, "step size d");
  check_positive(q_max, op, "range q_max");
  const double step = pow2_round(d);
  return {step, std::max(std::round(q_max / step), 1.0) * step};
}

}  // namespace

U3Params u3_effective(double d, double q_max) { return u3_grid(d, q_max, "u3_effective"); }

namespace {

// x in its own dense layout (channels-last activations are not copied), and a gradient brought to it.
Tensor dense(const Tensor& x) { return x.is_dense() ? x : x.contiguous(); }
Tensor like(const Tensor& g, const Tensor& x) {
  return g.dtype() == x.dtype() && g.strides() == x.strides() && g.is_dense() ? g : Tensor::empty_like(x).copy_(g);
}

// Uhlich's uniform grids fused (core/kernels/quantize.h uniform_grid_*): the quantized x, dQ/dx = 1
// inside, and grads(sums) -> the two parameters' gradients from the backward's two sums
// (sum_inside g (Q - x), sum_outside g sign(x)).
template <class Grads>
Variable fused_uniform(const Variable& x, const kernels::UniformGrid& grid, const char* op, const Variable& p1,
                       const Variable& p2, Grads grads) {
  const Tensor xc = dense(x.data());
  Tensor q = Tensor::empty_like(xc);
  LOWBIT_DISPATCH_FLOAT(xc.dtype(), op, [&] {
    kernels::uniform_grid_forward(grid, xc.numel(), xc.data<scalar_t>(), q.data<scalar_t>());
  });
  return make_result(q, op, {x, p1, p2}, [xc, grid, op, p1, p2, grads](const Variable& g, const Variable&) {
    const Tensor gc = like(g.data(), xc);
    Tensor dx = Tensor::empty_like(xc);
    kernels::UniformGridSums sums;
    LOWBIT_DISPATCH_FLOAT(xc.dtype(), op, [&] {
      sums = kernels::uniform_grid_backward(grid, xc.numel(), xc.data<scalar_t>(), gc.data<scalar_t>(),
                                            dx.data<scalar_t>());
    });
    const std::pair<double, double> d = grads(sums);
    return std::vector<Variable>{Variable(dx), Variable(Tensor::full(p1.shape(), d.first, p1.dtype())),
                                 Variable(Tensor::full(p2.shape(), d.second, p2.dtype()))};
  });
}

// The power-of-two grids likewise (pow2_grid_*): dQ/dx = p / |x| between the bounds; grads(sums)
// from (sum_{|x| <= lo} g sign(x), sum_{|x| > hi} g sign(x)).
template <class Grads>
Variable fused_pow2(const Variable& x, const kernels::Pow2Grid& grid, const char* op, const Variable& p1,
                    const Variable& p2, Grads grads) {
  const Tensor xc = dense(x.data());
  Tensor q = Tensor::empty_like(xc);
  LOWBIT_DISPATCH_FLOAT(xc.dtype(), op,
                        [&] { kernels::pow2_grid_forward(grid, xc.numel(), xc.data<scalar_t>(), q.data<scalar_t>()); });
  return make_result(q, op, {x, p1, p2}, [xc, grid, op, p1, p2, grads](const Variable& g, const Variable&) {
    const Tensor gc = like(g.data(), xc);
    Tensor dx = Tensor::empty_like(xc);
    kernels::Pow2GridSums sums;
    LOWBIT_DISPATCH_FLOAT(xc.dtype(), op, [&] {
      sums =
          kernels::pow2_grid_backward(grid, xc.numel(), xc.data<scalar_t>(), gc.data<scalar_t>(), dx.data<scalar_t>());
    });
    const std::pair<double, double> d = grads(sums);
    return std::vector<Variable>{Variable(dx), Variable(Tensor::full(p1.shape(), d.first, p1.dtype())),
                                 Variable(Tensor::full(p2.shape(), d.second, p2.dtype()))};
  });
}

}  // namespace

Variable uniform_u3(const Variable& x, const Variable& d, const Variable& q_max, bool signed_) {
  check_scalar(d, "uniform_u3", "step size d");
  check_scalar(q_max, "uniform_u3", "range q_max");
  const double dv = d.item(), qv = q_max.item();
  const U3Params e = u3_grid(dv, qv, "uniform_u3");
  // The header's table (fused): dQ/dd = [sum_inside g (Q - x) + (q' - q_max) sum_outside g s] / d,
  // dQ/dq_max = sum_outside g s.
  return fused_uniform(x, {e.d, e.q_max, signed_}, "uniform_u3", d, q_max,
                       [dv, qv, e](const kernels::UniformGridSums& s) {
                         return std::pair<double, double>{(s.inside + (e.q_max - qv) * s.outside) / dv, s.outside};
                       });
}

Variable uniform_fixed(const Variable& x, double d, int64_t n) {
  check_positive(d, "uniform_fixed", "step d");
  LOWBIT_CHECK(n >= 1, "uniform_fixed: need n >= 1 steps a side, got ", n);
  const double top = double(n) * d;
  auto f = [&](double v, double* out) {
    if (pass_nan(v, out)) return;
    const double s = v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0), a = std::abs(v);
    out[0] = a <= top ? s * d * std::floor(a / d + 0.5) : s * top;
    out[1] = a <= top ? 1 : 0, out[2] = out[3] = 0;
  };
  const Elementwise e = elementwise(x.data(), "uniform_fixed", f);
  const Tensor dx = e.dx;
  return make_result(e.q, "uniform_fixed", {x},
                     [dx](const Variable& g, const Variable&) { return std::vector<Variable>{mul_mask(g, dx)}; });
}

int u3_bits(double d, double q_max, bool signed_) {
  const U3Params e = u3_grid(d, q_max, "u3_bits");
  const double n = std::round(e.q_max / e.d);  // exact integer already
  return signed_ ? std::max(ceil_log2(n + 1) + 1, 2) : std::max(ceil_log2(n + 1), 1);
}

U3Params u3_init_weight(const Tensor& w, int bits) {
  check_bits(bits, 2, "u3_init_weight");
  const double m = math::amax(math::abs(w)).item() + std::ldexp(1.0, -23);  // + float32 eps
  const double steps = std::ldexp(1.0, bits - 1) - 1, e = std::log2(m / steps);
  const double d = std::exp2(bits > 4 ? std::ceil(e) : std::floor(e));
  return {d, d * steps};
}

U3Params u3_init_weight(int bits) {
  check_bits(bits, 2, "u3_init_weight");
  return {0.125, 0.125 * (std::ldexp(1.0, bits - 1) - 1)};
}

U3Params u3_init_activation(int bits) {
  check_bits(bits, 1, "u3_init_activation");
  return {0.125, 0.125 * levels_minus_one(bits)};
}

void u3_clip_parameters(Variable& d, Variable& q_max, bool signed_) {
  check_scalar(d, "u3_clip_parameters", "step size d");
  check_scalar(q_max, "u3_clip_parameters", "range q_max");
  const double eps = 1e-5, lo = std::ldexp(1.0, -8), d_old = d.item(), q_old = q_max.item();
  const double dv = std::clamp(std::min(d_old, q_old - eps), lo + eps, 1.0 - eps);
  const double qv = std::clamp(std::max(d_old + eps, q_old), lo + eps, (signed_ ? 127.0 : 255.0) - eps);
  d.mutable_data().fill_(dv);
  q_max.mutable_data().fill_(qv);
}

P3Params p3_init_weight(const Tensor& w, int bits) {
  check_bits(bits, 2, "p3_init_weight");
  const double q_max = pow2_round(u3_init_weight(w, bits).q_max);
  P3Params p{std::ldexp(q_max, -int(std::ldexp(1.0, bits - 1) - 1)), q_max};
  Variable lo(Tensor::scalar(p.q_min, DType::f64)), hi(Tensor::scalar(p.q_max, DType::f64));
  p3_clip_parameters(lo, hi, true);
  return {lo.item(), hi.item()};
}

P3Params p3_init_activation(int bits) {
  check_bits(bits, 1, "p3_init_activation");
  const double q_max = pow2_round(u3_init_activation(bits).q_max);
  Variable lo(Tensor::scalar(std::ldexp(q_max, -int(std::ldexp(1.0, bits - 1) - 1)), DType::f64));
  Variable hi(Tensor::scalar(q_max, DType::f64));
  p3_clip_parameters(lo, hi, false);
  return {lo.item(), hi.item()};
}

void p3_clip_parameters(Variable& q_min, Variable& q_max, bool signed_) {
  check_scalar(q_min, "p3_clip_parameters", "q_min");
  check_scalar(q_max, "p3_clip_parameters", "q_max");
  const double eps = 1e-5, top = signed_ ? 127.0 : 255.0, lo_old = q_min.item(), hi_old = q_max.item();
  const double lo = std::clamp(std::min(lo_old, hi_old - eps), std::ldexp(1.0, signed_ ? -16 : -14) + eps, top - eps);
  const double hi = std::clamp(std::max(lo_old + eps, hi_old), std::ldexp(1.0, -8) + eps, top - eps);
  q_min.mutable_data().fill_(lo);
  q_max.mutable_data().fill_(hi);
}

namespace {

constexpr int kUniformMaxBits = 16, kPow2MaxBits = 8;  // the official n_max
constexpr double kLn2 = std::numbers::ln2;

// b' = min(max(round(b), b_min), b_max), b_min = 2 signed, 1 unsigned (header).
int rounded_bits(double b, bool signed_, int b_max, const char* op) {
  LOWBIT_CHECK(std::isfinite(b), op, ": bitwidth b must be finite, got ", b);
  return int(std::clamp(std::round(b), signed_ ? 2.0 : 1.0, double(b_max)));
}

// The grid of uniform_u1 / uniform_u2 and the factors of the chain rule through b: N = 2^(b'-1)
// signed, 2^b' unsigned, n = N - 1 steps a side, q' = n d' (header).
struct UniformTied {
  double d, q_max, big_n, n;
};

double uniform_big_n(double b, bool signed_, const char* op) {
  const int bits = rounded_bits(b, signed_, kUniformMaxBits, op);
  return std::ldexp(1.0, signed_ ? bits - 1 : bits);
}

UniformTied u1_grid(double b, double d, bool signed_, const char* op) {
  const double big_n = uniform_big_n(b, signed_, op);
  check_positive(d, op, "step size d");
  const double step = pow2_round(d);
  check_positive((big_n - 1) * step, op, "the range q' = n d'");
  return {step, (big_n - 1) * step, big_n, big_n - 1};
}

UniformTied u2_grid(double b, double q_max, bool signed_, const char* op) {
  const double big_n = uniform_big_n(b, signed_, op);
  check_positive(q_max, op, "range q_max");
  const double step = pow2_round(q_max / (big_n - 1));
  return {step, (big_n - 1) * step, big_n, big_n - 1};
}

}  // namespace

Variable uniform_u1(const Variable& x, const Variable& b, const Variable& d, bool signed_) {
  check_scalar(b, "uniform_u1", "bitwidth b");
  check_scalar(d, "uniform_u1", "step size d");
  const double dv = d.item();
  const UniformTied g = u1_grid(b.item(), dv, signed_, "uniform_u1");
  // The header's table (fused): dQ/db = N ln2 d' sum_outside g s, dQ/dd = [sum_inside g (Q - x) +
  // n d' sum_outside g s] / d.
  return fused_uniform(x, {g.d, g.q_max, signed_}, "uniform_u1", b, d, [g, dv](const kernels::UniformGridSums& s) {
    return std::pair<double, double>{s.outside * g.big_n * kLn2 * g.d, (s.inside + g.n * g.d * s.outside) / dv};
  });
}

Variable uniform_u2(const Variable& x, const Variable& b, const Variable& q_max, bool signed_) {
  check_scalar(b, "uniform_u2", "bitwidth b");
  check_scalar(q_max, "uniform_u2", "range q_max");
  const double qv = q_max.item();
  const UniformTied g = u2_grid(b.item(), qv, signed_, "uniform_u2");
  const double db_inside = -g.big_n * kLn2 / g.n;  // dQ/db = db_inside (Q - x)
  // The header's table (fused): dQ/db = db_inside sum_inside g (Q - x), dQ/dq_max = [sum_inside
  // g (Q - x) + q' sum_outside g s] / q_max.
  return fused_uniform(x, {g.d, g.q_max, signed_}, "uniform_u2", b, q_max,
                       [g, qv, db_inside](const kernels::UniformGridSums& s) {
                         return std::pair<double, double>{db_inside * s.inside, (s.inside + g.q_max * s.outside) / qv};
                       });
}

int u12_bits(double b, bool signed_) { return rounded_bits(b, signed_, kUniformMaxBits, "u12_bits"); }

U3Params u1_effective(double b, double d, bool signed_) {
  const UniformTied g = u1_grid(b, d, signed_, "u1_effective");
  return {g.d, g.q_max};
}

U3Params u2_effective(double b, double q_max, bool signed_) {
  const UniformTied g = u2_grid(b, q_max, signed_, "u2_effective");
  return {g.d, g.q_max};
}

Variable pow2_p3(const Variable& x, const Variable& q_min, const Variable& q_max, bool signed_) {
  check_scalar(q_min, "pow2_p3", "q_min");
  check_scalar(q_max, "pow2_p3", "q_max");
  const double lo_raw = q_min.item(), hi_raw = q_max.item();
  check_positive(lo_raw, "pow2_p3", "q_min");
  check_positive(hi_raw, "pow2_p3", "q_max");
  const double lo = pow2_round(lo_raw), hi = std::max(pow2_round(hi_raw), lo);
  // The header's table (fused): dQ/dq_min = (lo / q_min) sum_low g s, dQ/dq_max = (hi / q_max) sum_high g s.
  return fused_pow2(x, {lo, hi, signed_}, "pow2_p3", q_min, q_max,
                    [lo, hi, lo_raw, hi_raw](const kernels::Pow2GridSums& s) {
                      return std::pair<double, double>{s.low * lo / lo_raw, s.high * hi / hi_raw};
                    });
}

int p3_bits(double q_min, double q_max, bool signed_) {
  check_positive(q_min, "p3_bits", "q_min");
  check_positive(q_max, "p3_bits", "q_max");
  const double e_min = std::round(std::log2(q_min)), e_max = std::max(std::round(std::log2(q_max)), e_min);
  return std::max(ceil_log2(e_max - e_min + 1) + 1, signed_ ? 2 : 1);
}

namespace {

// The grid of pow2_p1 / pow2_p2 (header), {q_min', q_max'}, and the chain-rule factor
// L = 2^(b'-1) ln^2(2) (= ln2 dE/db) of its E = 2^(b'-1) - 1 octaves.
struct Pow2Tied {
  double q_min, q_max, l;
};

// {2^(b'-1), E} of the rounded bitwidth.
std::pair<double, int> pow2_octaves(double b, bool signed_, const char* op) {
  const int bits = rounded_bits(b, signed_, kPow2MaxBits, op);
  return {std::ldexp(1.0, bits - 1), (1 << (bits - 1)) - 1};
}

Pow2Tied p1_grid(double b, double q_max, bool signed_, const char* op) {
  const auto [half, e] = pow2_octaves(b, signed_, op);
  check_positive(q_max, op, "q_max");
  const double hi = pow2_round(q_max), lo = std::ldexp(hi, -e);
  LOWBIT_CHECK(std::isnormal(lo) && std::isnormal(hi), op, ": q_min' = 2^-", e,
               " q_max' out of range for q_max = ", q_max);
  return {lo, hi, half * kLn2 * kLn2};
}

Pow2Tied p2_grid(double b, double q_min, bool signed_, const char* op) {
  const auto [half, e] = pow2_octaves(b, signed_, op);
  check_positive(q_min, op, "q_min");
  const double lo = pow2_round(q_min), hi = std::ldexp(lo, e);
  LOWBIT_CHECK(std::isnormal(lo) && std::isnormal(hi), op, ": q_max' = 2^", e,
               " q_min' out of range for q_min = ", q_min);
  return {lo, hi, half * kLn2 * kLn2};
}

}  // namespace

Variable pow2_p1(const Variable& x, const Variable& b, const Variable& q_max, bool signed_) {
  check_scalar(b, "pow2_p1", "bitwidth b");
  check_scalar(q_max, "pow2_p1", "q_max");
  const double hi_raw = q_max.item();
  const Pow2Tied g = p1_grid(b.item(), hi_raw, signed_, "pow2_p1");
  // The header's table (fused): dQ/db = -L q_min' sum_low g s, dQ/dq_max = (q_min' sum_low g s +
  // q_max' sum_high g s) / q_max.
  return fused_pow2(x, {g.q_min, g.q_max, signed_}, "pow2_p1", b, q_max, [g, hi_raw](const kernels::Pow2GridSums& s) {
    return std::pair<double, double>{-g.l * g.q_min * s.low, (g.q_min * s.low + g.q_max * s.high) / hi_raw};
  });
}

Variable pow2_p2(const Variable& x, const Variable& b, const Variable& q_min, bool signed_) {
  check_scalar(b, "pow2_p2", "bitwidth b");
  check_scalar(q_min, "pow2_p2", "q_min");
  const double lo_raw = q_min.item();
  const Pow2Tied g = p2_grid(b.item(), lo_raw, signed_, "pow2_p2");
  // The header's table (fused): dQ/db = L q_max' sum_high g s, dQ/dq_min = (q_min' sum_low g s +
  // q_max' sum_high g s) / q_min.
  return fused_pow2(x, {g.q_min, g.q_max, signed_}, "pow2_p2", b, q_min, [g, lo_raw](const kernels::Pow2GridSums& s) {
    return std::pair<double, double>{g.l * g.q_max * s.high, (g.q_min * s.low + g.q_max * s.high) / lo_raw};
  });
}

int p12_bits(double b, bool signed_) { return rounded_bits(b, signed_, kPow2MaxBits, "p12_bits"); }

P3Params p1_effective(double b, double q_max, bool signed_) {
  const Pow2Tied g = p1_grid(b, q_max, signed_, "p1_effective");
  return {g.q_min, g.q_max};
}

P3Params p2_effective(double b, double q_min, bool signed_) {
  const Pow2Tied g = p2_grid(b, q_min, signed_, "p2_effective");
  return {g.q_min, g.q_max};
}

Variable lsq(const Variable& v, const Variable& s, int b, bool signed_, bool batched) {
  check_bits(b, signed_ ? 2 : 1, "lsq");
  check_scalar(s, "lsq", "step size s");
  check_positive(s.item(), "lsq", "step size s");
  LOWBIT_CHECK(!batched || (v.dim() >= 1 && v.size(0) > 0), "lsq: batched needs a non-empty batch axis, got shape ",
               shape_str(v.shape()));
  const double qn = signed_ ? std::ldexp(1.0, b - 1) : 0.0;
  const double qp = signed_ ? std::ldexp(1.0, b - 1) - 1 : std::ldexp(1.0, b) - 1;
  const double n = batched ? double(v.numel()) / double(v.size(0)) : double(v.numel());
  const Variable s_scaled = grad_scale(s, 1.0 / std::sqrt(n * qp));
  // round_ste(clamp(v / s, -Q_N, Q_P)) s, fused (step_quantize; pinned to this composition by tests).
  return step_quantize(v, s_scaled, -qn, qp, StepGradient::full);
}

double lsq_init_step(const Tensor& v, int b, bool signed_) {
  const double qp = signed_ ? std::ldexp(1.0, b - 1) - 1 : std::ldexp(1.0, b) - 1;
  return 2 * math::mean(math::abs(v)).item() / std::sqrt(qp);
}

namespace {

// PACT's forward round(clamp(x, lo, a) n / a) a / n (clip_quantize's kernel: the same values as the
// composed clamp -> mul -> round -> mul), backward dx = g 1[lo < x < a] and dalpha =
// sum_{x >= a} g - (signed) sum_{x <= -a} g in one pass (clip_open_backward). Under GradMode (a
// double backward) the same from masks, linear in g.
Variable fused_pact(const Variable& x_in, const Variable& alpha, double lo, double a, double n, bool signed_,
                    const char* op) {
  const Tensor x = dense(x_in.data());
  Tensor yq = Tensor::empty_like(x);
  LOWBIT_DISPATCH_FLOAT(x.dtype(), op, [&] {
    kernels::clip_quantize_forward(x.numel(), x.data<scalar_t>(), scalar_t(lo), scalar_t(a), scalar_t(n / a),
                                   scalar_t(a / n), yq.data<scalar_t>());
  });
  return make_result(yq, op, {x_in, alpha}, [x, alpha, lo, a, signed_, op](const Variable& g, const Variable&) {
    if (GradMode::enabled()) {
      const Tensor pass = math::mul(math::gt(x, lo), math::lt(x, a));
      Tensor side = math::ge(x, a);  // +1 above, and -1 below when signed
      if (signed_) side = math::sub(side, math::le(x, lo));
      return std::vector<Variable>{mul_mask(g, pass), reshape(sum(mul_mask(g, side)), alpha.shape())};
    }
    const Tensor dy = like(g.data(), x);
    Tensor dx = Tensor::empty_like(x);
    kernels::ClipSums sums;
    LOWBIT_DISPATCH_FLOAT(x.dtype(), op, [&] {
      sums = kernels::clip_open_backward(x.numel(), x.data<scalar_t>(), dy.data<scalar_t>(), scalar_t(lo), scalar_t(a),
                                         dx.data<scalar_t>());
    });
    const double da = signed_ ? sums.high - sums.low : sums.high;
    return std::vector<Variable>{Variable(dx), Variable(Tensor::full(alpha.shape(), da, alpha.dtype()))};
  });
}

}  // namespace

Variable pact(const Variable& x, const Variable& alpha, int k) {
  check_bits(k, 1, "pact");
  check_scalar(alpha, "pact", "clip value alpha");
  const double a = alpha.item(), n = levels_minus_one(k);
  LOWBIT_CHECK(a > 0, "pact: alpha must be positive, got ", a);
  return fused_pact(x, alpha, 0.0, a, n, false, "pact");
}

Variable signed_pact(const Variable& x, const Variable& alpha, int k) {
  check_bits(k, 2, "signed_pact");
  check_scalar(alpha, "signed_pact", "clip value alpha");
  const double a = alpha.item(), n = levels_minus_one(k - 1);
  LOWBIT_CHECK(a > 0, "signed_pact: alpha must be positive, got ", a);
  return fused_pact(x, alpha, -a, a, n, true, "signed_pact");
}

}  // namespace lowbit::quant
