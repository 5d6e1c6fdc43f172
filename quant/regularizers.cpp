// SinReQ and WaveQ regularizers (spec §1.1, §1.4, §2.1); see regularizers.h for the grids.
#include "quant/regularizers.h"

#include <cmath>
#include <numbers>

#include "autograd/ops.h"
#include "core/error.h"
#include "core/math.h"

namespace lowbit::quant {
namespace {

constexpr double kPi = std::numbers::pi;
constexpr double kLn2 = std::numbers::ln2;

void check_bits(Grid grid, int bits, const char* op) {
  LOWBIT_CHECK(bits >= 1 && bits <= 30, op, ": bits must be in [1, 30], got ", bits);
  LOWBIT_CHECK(grid != Grid::wrpn || bits >= 2, op, ": the WRPN grid needs k >= 2 bits, got ", bits);
}

Variable reduce(const Variable& v, Reduction r) {
  LOWBIT_CHECK(r != Reduction::none, "sinreq_penalty/waveq_penalty: reduction must be sum or mean, not none");
  return r == Reduction::sum ? sum(v) : mean(v);
}

Variable sin_squared(const Variable& u) {
  const Variable s = sin(u);
  return mul(s, s);
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

Variable sinreq_layer(const Variable& weight, int bits, const SinReQOptions& options) {
  LOWBIT_CHECK(weight.defined(), "sinreq_penalty: undefined weight");
  const double step = grid_step(options.grid, bits), offset = grid_offset(options.grid, bits);
  // u = pi (w + c) / Delta
  const Variable u = add(mul(weight, kPi / step), kPi * offset / step);
  return reduce(sin_squared(u), options.reduction);
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
  Variable u = mul(mul(weight, inv_step), kPi);
  if (offset_in_steps != 0) u = add(u, kPi * offset_in_steps);
  Variable per_weight = sin_squared(u);
  switch (options.norm) {
    case Normalization::R0: break;
    case Normalization::R1: per_weight = div(per_weight, two_pow_beta); break;
    case Normalization::R2: per_weight = div(per_weight, mul(two_pow_beta, two_pow_beta)); break;
  }
  return reduce(per_weight, options.reduction);
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
