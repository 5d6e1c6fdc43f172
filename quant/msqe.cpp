// Choi et al.'s learned-cell-size quantizers and MSQE regularizer (spec methods.md §3.1, §3.2); see msqe.h.
#include "quant/msqe.h"

#include <cmath>
#include <limits>

#include "autograd/ops.h"
#include "core/error.h"
#include "core/math.h"
#include "quant/ste.h"

namespace lowbit::quant {
namespace {

// The clip range [lo, hi] of the codes (binary: the STE's range on x / d).
void code_range(int bits, bool signed_, double* lo, double* hi) {
  if (!signed_) {
    *lo = 0, *hi = std::ldexp(1.0, bits) - 1;
  } else if (bits <= 2) {
    *lo = -1, *hi = 1;  // ternary, and binary's hardtanh range
  } else {
    *lo = -std::ldexp(1.0, bits - 1), *hi = std::ldexp(1.0, bits - 1) - 1;
  }
}

void check_args(int bits, double d, const char* op) {
  LOWBIT_CHECK(bits >= 1 && bits <= 16, op, ": bits must be in 1..16, got ", bits);
  LOWBIT_CHECK(std::isfinite(d) && d > 0, op, ": the cell size must be positive and finite, got ", d);
}

}  // namespace

Tensor msqe_codes(const Tensor& x, double d, int bits, bool signed_) {
  check_args(bits, d, "msqe_codes");
  if (signed_ && bits == 1) return math::add(math::mul(math::ge(x, 0.0), 2.0), -1.0);  // sign, sign(0) = +1
  double lo = 0, hi = 0;
  code_range(bits, signed_, &lo, &hi);
  return math::clamp(math::round(math::div(x, Tensor::full({}, d, x.dtype()))), lo, hi);
}

Variable msqe_quantize(const Variable& x, const Variable& d, int bits, bool signed_) {
  LOWBIT_CHECK(d.defined() && d.numel() == 1, "msqe_quantize: the cell size must be a one-element Variable");
  const double dv = d.item();
  check_args(bits, dv, "msqe_quantize");
  double lo = 0, hi = 0;
  code_range(bits, signed_, &lo, &hi);
  // Q = d r, dQ/dd = r (r constant), dQ/dx the STE mask 1[lo <= x/d <= hi]: fused (step_quantize,
  // pinned to the composition below by tests/test_kernels_quantize.cpp); binary weights composed.
  if (!(signed_ && bits == 1)) return step_quantize(x, d, lo, hi, StepGradient::codes);
  const Tensor r = msqe_codes(x.data(), dv, bits, signed_);
  const Tensor u = math::div(x.data(), Tensor::full({}, dv, x.dtype()));
  const Tensor mask = math::mul(math::ge(u, lo), math::le(u, hi));
  // Q = d r (dQ/dd = r, r constant) + a zero-valued term whose gradient to x is the STE mask.
  const Variable q = mul(Variable(r), reshape(d, {}));
  const Variable ste = straight_through(mul(x, Variable(mask)), Tensor::zeros(x.shape(), x.dtype()));
  return add(q, ste);
}

double msqe_init_delta(const Tensor& x_in, int bits, bool signed_, int iterations) {
  LOWBIT_CHECK(bits >= 1 && bits <= 16, "msqe_init_delta: bits must be in 1..16, got ", bits);
  const Tensor x = x_in.to(DType::f64).contiguous();
  if (x.numel() == 0) return 1.0;
  if (signed_ && bits == 1) {  // r = sign(x): the optimal d is mean|x|
    const double m = math::mean(math::abs(x)).item();
    return m > 0 ? m : 1.0;
  }
  double lo = 0, hi = 0;
  code_range(bits, signed_, &lo, &hi);
  const double top = signed_ ? math::amax(math::abs(x)).item() : math::amax(x).item();
  if (!(top > 0)) return 1.0;
  // A coarse scan of d in (0, d0] (the error is not convex in d), then Lloyd from the best point.
  const double d0 = top / std::max(hi, 1.0);
  double d = d0, best = std::numeric_limits<double>::infinity();
  for (int i = 1; i <= 40; ++i) {
    const double c = d0 * i / 40.0;
    const Tensor e = math::sub(x, math::mul(msqe_codes(x, c, bits, signed_), c));
    const double err = math::sum(math::mul(e, e)).item();
    if (err < best) best = err, d = c;
  }
  for (int it = 0; it < iterations; ++it) {
    const Tensor r = msqe_codes(x, d, bits, signed_);  // the optimal codes for d (nearest level)
    const double num = math::sum(math::mul(x, r)).item(), den = math::sum(math::mul(r, r)).item();
    if (!(den > 0) || !(num > 0)) break;
    const double next = num / den;  // the optimal d for these codes
    if (std::fabs(next - d) <= 1e-12 * d) break;
    d = next;
  }
  return d;
}

Variable msqe_penalty(const std::vector<Variable>& weights, const std::vector<Variable>& deltas,
                      const std::vector<int>& bits) {
  LOWBIT_CHECK(!weights.empty(), "msqe_penalty: no weights");
  LOWBIT_CHECK(weights.size() == deltas.size() && weights.size() == bits.size(), "msqe_penalty: ", weights.size(),
               " weight tensors, ", deltas.size(), " cell sizes, ", bits.size(), " bitwidths");
  Variable total;
  int64_t n = 0;
  for (size_t l = 0; l < weights.size(); ++l) {
    const Variable& w = weights[l];
    LOWBIT_CHECK(deltas[l].defined() && deltas[l].numel() == 1, "msqe_penalty: cell size ", l, " is not one-element");
    const Tensor r = msqe_codes(w.data(), deltas[l].item(), bits[l], true);  // held constant (§3.2)
    const Variable e = sub(w, mul(Variable(r), reshape(deltas[l], {})));
    const Variable s = sum(mul(e, e));
    total = total.defined() ? add(total, s) : s;
    n += w.numel();
  }
  return mul(total, 1.0 / double(std::max<int64_t>(n, 1)));  // (1/N) over all layers, Choi et al. §3.2
}

Variable msqe_coefficient_term(const Variable& r, const Variable& a, double lambda) {
  const Variable a0 = reshape(a, {});
  return add(mul(exp(a0), reshape(r, {})), mul(a0, -lambda));  // α R - λ log α, α = exp(a)
}

MsqeRegularizer::MsqeRegularizer(std::vector<Variable> weights, std::vector<Variable> deltas,
                                 std::vector<std::shared_ptr<int>> bits, Variable log_alpha, double lambda)
    : weights_(std::move(weights)),
      deltas_(std::move(deltas)),
      bits_(std::move(bits)),
      a_(std::move(log_alpha)),
      lambda_(lambda) {
  LOWBIT_CHECK(weights_.size() == deltas_.size() && weights_.size() == bits_.size(),
               "MsqeRegularizer: ", weights_.size(), " weights, ", deltas_.size(), " cell sizes, ", bits_.size(),
               " bit cells");
  LOWBIT_CHECK(lambda_ > 0, "--msqe-lambda ", lambda_, " must be > 0 (the -lambda log alpha term keeps alpha > 0)");
}

std::vector<int> MsqeRegularizer::current_bits() const {
  std::vector<int> b;
  for (const auto& c : bits_) b.push_back(*c);
  return b;
}

double coefficient_cap(int64_t n, double lr) { return std::log(double(n) / (2 * lr)); }

void project_coefficient(Variable& a, const std::vector<Variable>& weights, double lr) {
  if (lr <= 0 || weights.empty()) return;
  int64_t n = 0;
  for (const Variable& w : weights) n += w.numel();
  const double cap = coefficient_cap(n, lr);
  if (a.item() > cap) a.mutable_data().fill_(cap);
}

Variable MsqeRegularizer::loss(const optim::ParamGroup& group, int64_t) {
  lr_ = group.lr;
  if (weights_.empty()) return Variable();
  return msqe_coefficient_term(msqe_penalty(weights_, deltas_, current_bits()), a_, lambda_);
}

double MsqeRegularizer::penalty() const {
  if (weights_.empty()) return 0;
  NoGradGuard ng;
  return msqe_penalty(weights_, deltas_, current_bits()).item();
}

void MsqeRegularizer::project_coefficient() { quant::project_coefficient(a_, weights_, lr_); }

double MsqeRegularizer::alpha() const { return std::exp(a_.item()); }

}  // namespace lowbit::quant
