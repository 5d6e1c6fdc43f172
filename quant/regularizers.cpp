// SinReQ and WaveQ regularizers (spec §1.1, §1.4, §2.1); see regularizers.h for the grids.
#include "quant/regularizers.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "autograd/ops.h"
#include "core/error.h"
#include "core/kernels/sinusoid.h"
#include "core/math.h"
#include "quant/quantizers.h"

namespace lowbit::quant {
namespace {

constexpr double kPi = std::numbers::pi;
constexpr double kLn2 = std::numbers::ln2;

void check_bits(Grid grid, int bits, const char* op) {
  LOWBIT_CHECK(bits >= 1 && bits <= 30, op, ": bits must be in [1, 30], got ", bits);
  LOWBIT_CHECK(grid != Grid::wrpn || bits >= 2, op, ": the WRPN grid needs k >= 2 bits, got ", bits);
}

// The composed definition of sin2_reduce's gradients (recorded when create_graph asks for it).
std::vector<Variable> sin2_reduce_backward_composed(const Variable& g, const Variable& w, const Variable& a, double b,
                                                    double scale) {
  const Variable s2 = sin(mul(add(mul(w, a), b), 2.0));  // sin(2u) = d sin^2(u) / du
  const Variable gs = mul(reshape(g, {}), scale);
  return {w.requires_grad() ? mul(mul(s2, reshape(a, {})), gs) : Variable(),
          a.requires_grad() ? reshape(mul(sum(mul(w, s2)), gs), a.shape()) : Variable()};
}

// reduce_j sin^2(u_j), u = a w + b, for a one-element Variable a and a constant b: the per-weight
// chain (scale, shift, sin, square, reduce) fused into one pass forward and one backward pass that
// yields both gradients (core/kernels/sinusoid.h), d/dw_j = a sin(2 u_j) r and
// d/da = sum_j w_j sin(2 u_j) r (r = 1 or 1/N). When the backward pass is recorded (create_graph)
// it is composed from ops, so it is differentiable.
Variable sin2_reduce(const Variable& w_in, const Variable& a, double b, Reduction r) {
  LOWBIT_CHECK(r != Reduction::none, "sinreq_penalty/waveq_penalty: reduction must be sum or mean, not none");
  const Tensor w = w_in.data().contiguous();
  const int64_t n = w.numel();
  const double scale = r == Reduction::mean ? 1.0 / double(std::max<int64_t>(n, 1)) : 1.0;
  const double av = a.item();
  const double total =
      LOWBIT_DISPATCH_FLOAT(w.dtype(), "sin2_reduce", [&] { return kernels::sin2_sum(n, w.data<scalar_t>(), av, b); });
  Tensor out = Tensor::full({}, total * scale, w.dtype());
  return make_result(out, "sin2_reduce", {w_in, a}, [w_in, a, b, scale, w, av](const Variable& g, const Variable&) {
    if (GradMode::enabled()) return sin2_reduce_backward_composed(g, w_in, a, b, scale);
    const double gs = g.item() * scale;
    Tensor dw = Tensor::empty(w.shape(), w.dtype());
    double da = 0;
    LOWBIT_DISPATCH_FLOAT(w.dtype(), "sin2_reduce backward", [&] {
      da = kernels::sin2_backward(w.numel(), w.data<scalar_t>(), av, b, gs, dw.data<scalar_t>());
    });
    return std::vector<Variable>{
        w_in.requires_grad() ? Variable(dw.reshape(w_in.shape())) : Variable(),
        a.requires_grad() ? Variable(Tensor::full(a.shape(), da * gs, a.data().dtype())) : Variable()};
  });
}

// The slope a of u = a w + b for the sinusoid on w / s: a / s, s = max |w| a constant (no
// gradient path through the max: see regularizers.h, "the scale is a constant").
Variable scaled_slope(const Variable& a, const Variable& weight, WeightScale scale) {
  if (scale != WeightScale::max_abs) return a;
  const double s = weight_scale_of(weight.data(), scale);
  LOWBIT_CHECK(s > 0, "weight scale: a layer's weights are all zero, max |w| = 0");
  return div(a, Variable(Tensor::scalar(s, a.data().dtype())));
}

// What the sinusoid reads: tanh(w) / s for tanh_max, s = max|tanh w| a constant (gradients
// through tanh only), else w itself (max_abs divides through the slope instead).
Variable sinusoid_input(const Variable& weight, WeightScale scale) {
  if (scale != WeightScale::tanh_max) return weight;
  const Variable t = tanh(weight);
  const Variable s(math::amax(math::abs(t.data())));
  LOWBIT_CHECK(s.item() > 0, "weight scale: a layer's weights are all zero, max |tanh w| = 0");
  return div(t, s);
}

}  // namespace

double grid_step(Grid grid, int bits) {
  check_bits(grid, bits, "grid_step");
  switch (grid) {
    case Grid::dorefa: return 2.0 / (std::ldexp(1.0, bits) - 1);
    case Grid::wrpn: return 1.0 / (std::ldexp(1.0, bits - 1) - 1);
    case Grid::fixed_point: return std::ldexp(1.0, 1 - bits);
  }
  return 0;
}

double grid_offset(Grid grid, int bits) { return grid == Grid::dorefa ? grid_step(grid, bits) / 2 : 0.0; }

std::vector<double> grid_levels(Grid grid, int bits) {
  check_bits(grid, bits, "grid_levels");
  std::vector<double> levels;
  switch (grid) {
    case Grid::dorefa: {  // 2q/n - 1, q = 0..n, n = 2^k - 1 (spec §8.2)
      const double n = std::ldexp(1.0, bits) - 1;
      for (int q = 0; q <= static_cast<int>(n); ++q) levels.push_back(2 * q / n - 1);
      break;
    }
    case Grid::wrpn: {  // m/n, m = -n..n, n = 2^(k-1) - 1 (spec §8.3)
      const int n = (1 << (bits - 1)) - 1;
      for (int m = -n; m <= n; ++m) levels.push_back(static_cast<double>(m) / n);
      break;
    }
    case Grid::fixed_point: {  // m 2^-(k-1), m = -2^(k-1)..2^(k-1)-1
      const int h = 1 << (bits - 1);
      for (int m = -h; m < h; ++m) levels.push_back(static_cast<double>(m) / h);
      break;
    }
  }
  return levels;
}

WeightScale parse_weight_scale(const std::string& name) {
  if (name == "none") return WeightScale::none;
  if (name == "max") return WeightScale::max_abs;
  if (name == "tanh") return WeightScale::tanh_max;
  LOWBIT_CHECK(false, "unknown weight scale '", name, "' (expected none, max or tanh)");
  return WeightScale::none;
}

double weight_scale_of(const Tensor& weight, WeightScale scale) {
  switch (scale) {
    case WeightScale::none: return 1.0;
    case WeightScale::max_abs: return math::amax(math::abs(weight)).item();
    case WeightScale::tanh_max: return math::amax(math::abs(math::tanh(weight))).item();
  }
  return 1.0;
}

Variable wrpn_on_scale(const Variable& weight, int bits, WeightScale scale) {
  LOWBIT_CHECK(scale != WeightScale::tanh_max, "wrpn_on_scale: the wrpn grid lives on w or w / max|w|, not tanh");
  const Variable s(Tensor::full({}, std::max(weight_scale_of(weight.data(), scale), 1e-30), weight.dtype()));
  return mul(wrpn_weight(div(weight, s), bits), s);
}

Variable quantize_on_period(const Variable& weight, double beta, WeightScale scale) {
  LOWBIT_CHECK(scale != WeightScale::tanh_max, "quantize_on_period: the wrpn grid lives on w or w / max|w|, not tanh");
  LOWBIT_CHECK(std::isfinite(beta) && beta > 0, "quantize_on_period: beta must be positive, got ", beta);
  const double s = std::max(weight_scale_of(weight.data(), scale), 1e-30);
  const double steps_to_s = std::exp2(beta) - 1.0;  // s / d
  const double levels_per_side = std::max(1.0, std::floor(steps_to_s * (1 + 1e-12)));
  // The zeros of sin^2(pi (w / s) (2^beta - 1)), spec §1.1: U3's grid at the exact step s / (2^beta - 1).
  return uniform_fixed(weight, s / steps_to_s, static_cast<int64_t>(levels_per_side));
}

bool period_rounds_closer(const Tensor& weight, double beta, WeightScale scale) {
  const Variable w(weight);
  const Tensor on_grid = wrpn_on_scale(w, learned_weight_bits(beta), scale).data();
  const Tensor on_period = quantize_on_period(w, beta, scale).data();
  auto squared_error = [&](const Tensor& q) {
    const Tensor e = math::sub(q, weight);
    return math::sum(math::mul(e, e)).item();
  };
  return squared_error(on_period) < squared_error(on_grid);
}

double SinusoidDomain::to(double w) const { return (scale == WeightScale::tanh_max ? std::tanh(w) : w) / s; }

double SinusoidDomain::from(double y) const {
  if (scale != WeightScale::tanh_max) return y * s;
  return std::atanh(std::clamp(y * s, -1.0 + 1e-12, 1.0 - 1e-12));
}

SinusoidDomain sinusoid_domain(const Tensor& weight, WeightScale scale) {
  const double s = weight_scale_of(weight, scale);
  return {scale, s > 0 ? s : 1.0};
}

Tensor to_sinusoid_domain(const Tensor& weight, WeightScale scale) {
  if (scale == WeightScale::none) return weight;
  const Tensor x = scale == WeightScale::tanh_max ? math::tanh(weight) : weight;
  const double s = math::amax(math::abs(x)).item();  // weight_scale_of, on the tensor already formed
  return s > 0 ? math::mul(x, 1.0 / s) : x;
}

Variable sinreq_layer(const Variable& weight, int bits, const SinReQOptions& options) {
  LOWBIT_CHECK(weight.defined(), "sinreq_penalty: undefined weight");
  const double step = grid_step(options.grid, bits), offset = grid_offset(options.grid, bits);
  // u = pi (w / s + c) / Delta
  const Variable a(Tensor::full({}, kPi / step, weight.dtype()));
  return sin2_reduce(sinusoid_input(weight, options.scale), scaled_slope(a, weight, options.scale), kPi * offset / step,
                     options.reduction);
}

Variable sinreq_penalty(const std::vector<Variable>& weights, const std::vector<int>& bits,
                        const SinReQOptions& options) {
  LOWBIT_CHECK(!weights.empty(), "sinreq_penalty: no weights");
  LOWBIT_CHECK(weights.size() == bits.size(), "sinreq_penalty: ", weights.size(), " weight tensors but ", bits.size(),
               " bitwidths");
  Variable total;
  for (size_t i = 0; i < weights.size(); ++i) {
    Variable term = sinreq_layer(weights[i], bits[i], options);
    total = total.defined() ? add(total, term) : term;
  }
  return total;
}

Variable waveq_layer(const Variable& weight, const Variable& beta, const WaveQOptions& options) {
  LOWBIT_CHECK(weight.defined() && beta.defined(), "waveq_penalty: undefined weight or beta");
  LOWBIT_CHECK(beta.numel() == 1 && beta.dim() <= 1, "waveq_penalty: beta must be a one-element scalar, got shape ",
               shape_str(beta.shape()));
  LOWBIT_CHECK(beta.dtype() == weight.dtype(), "waveq_penalty: beta is ", dtype_name(beta.dtype()),
               " but the weight is ", dtype_name(weight.dtype()), "; give beta the weight's dtype");
  const Variable two_pow_beta = exp(mul(beta, kLn2));  // 2^beta
  // 1/Delta(beta) and c/Delta: u = pi (w / Delta + c / Delta).
  Variable inv_step;
  double offset_in_steps = 0;
  switch (options.grid) {
    case Grid::wrpn: inv_step = add(two_pow_beta, -1.0); break;
    case Grid::dorefa:
      inv_step = add(two_pow_beta, -0.5);
      offset_in_steps = 0.5;
      break;
    case Grid::fixed_point: inv_step = two_pow_beta; break;
  }
  // u = pi w / Delta + pi c / Delta; the per-weight part is fused (sin2_reduce), the beta-dependent
  // scalars around it stay composed.
  Variable term = sin2_reduce(sinusoid_input(weight, options.scale),
                              scaled_slope(reshape(mul(inv_step, kPi), {}), weight, options.scale),
                              kPi * offset_in_steps, options.reduction);
  switch (options.norm) {
    case Normalization::R0: break;
    case Normalization::R1: term = div(term, reshape(two_pow_beta, {})); break;
    case Normalization::R2: term = div(term, reshape(mul(two_pow_beta, two_pow_beta), {})); break;
  }
  return term;
}

WaveQTerms waveq_penalty(const std::vector<Variable>& weights, const std::vector<Variable>& betas,
                         const WaveQOptions& options) {
  LOWBIT_CHECK(!weights.empty(), "waveq_penalty: no weights");
  LOWBIT_CHECK(weights.size() == betas.size(), "waveq_penalty: ", weights.size(), " weight tensors but ", betas.size(),
               " betas");
  WaveQTerms terms;
  for (size_t i = 0; i < weights.size(); ++i) {
    Variable term = waveq_layer(weights[i], betas[i], options);
    terms.weight_term = terms.weight_term.defined() ? add(terms.weight_term, term) : term;
    const Variable b = reshape(betas[i], {});
    terms.bitwidth_term = terms.bitwidth_term.defined() ? add(terms.bitwidth_term, b) : b;
  }
  return terms;
}

void clamp_betas(const std::vector<Variable>& betas, double lo, double hi) {
  LOWBIT_CHECK(lo <= hi, "clamp_betas: empty range [", lo, ", ", hi, "]");
  for (const Variable& b : betas) {
    LOWBIT_CHECK(b.defined(), "clamp_betas: undefined beta");
    Variable beta = b;  // shares the impl; mutable_data is the in-place access optimizers use
    Tensor& data = beta.mutable_data();
    data.copy_(math::clamp(data, lo, hi));
  }
}

SinusoidGrid waveq_grid(Grid grid, double beta) {
  const double two_pow_beta = std::exp2(beta);
  switch (grid) {
    case Grid::wrpn: return {1.0 / (two_pow_beta - 1.0), 0.0};
    case Grid::dorefa: return {1.0 / (two_pow_beta - 0.5), 0.5 / (two_pow_beta - 0.5)};
    case Grid::fixed_point: return {1.0 / two_pow_beta, 0.0};
  }
  return {};
}

SinusoidGrid sinreq_grid(Grid grid, int bits) { return {grid_step(grid, bits), grid_offset(grid, bits)}; }

int learned_bits(double beta) {
  LOWBIT_CHECK(std::isfinite(beta), "learned_bits: beta is not finite: ", beta);
  return static_cast<int>(std::ceil(beta));
}

int learned_weight_bits(double beta) { return learned_bits(beta) + 1; }

}  // namespace lowbit::quant
