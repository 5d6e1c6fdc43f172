// SinReQ / WaveQ regularizers, their lambda schedules and the level statistics (spec §1, §2):
// gradients by finite differences and against the closed forms of §1.2 / §2.1, minima on the
// levels of the quantizers of quant/quantizers.h, the WaveQ = SinReQ identity at a fixed beta,
// hand-computed statistics, and a short training run in plain Variables.
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>
#include <set>
#include <string>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "core/math.h"
#include "core/random.h"
#include "quant/quantizers.h"
#include "quant/regularizers.h"
#include "quant/schedules.h"
#include "quant/stats.h"

using namespace lowbit;
namespace q = lowbit::quant;

namespace {

constexpr double kPi = std::numbers::pi;
constexpr double kLn2 = std::numbers::ln2;

Variable leaf_vec(const std::vector<double>& v) {
  return Variable(Tensor::from_vector(v, {static_cast<int64_t>(v.size())}), true);
}
Variable beta_leaf(double b) { return Variable(Tensor::scalar(b, DType::f64), true); }
Variable random_leaf(const Shape& shape, Generator& gen, double lo = -1, double hi = 1) {
  return Variable(Tensor::rand(shape, gen, DType::f64, lo, hi), true);
}

const q::Grid kGrids[] = {q::Grid::dorefa, q::Grid::wrpn, q::Grid::fixed_point};
const q::Normalization kNorms[] = {q::Normalization::R0, q::Normalization::R1, q::Normalization::R2};
const Reduction kReductions[] = {Reduction::sum, Reduction::mean};

std::string grid_name(q::Grid g) {
  return g == q::Grid::dorefa ? "dorefa" : g == q::Grid::wrpn ? "wrpn" : "fixed_point";
}

// Midpoints between consecutive levels: the quantizer's decision thresholds.
std::vector<double> midpoints(const std::vector<double>& levels) {
  std::vector<double> m;
  for (size_t i = 0; i + 1 < levels.size(); ++i) m.push_back(0.5 * (levels[i] + levels[i + 1]));
  return m;
}

}  // namespace

TEST_CASE("grid levels are exactly the levels the DoReFa and WRPN quantizers produce") {
  for (int k = 2; k <= 6; ++k) {
    CAPTURE(k);
    // Inputs spanning the whole range of both quantizers.
    std::vector<double> xs;
    for (int i = 0; i <= 4000; ++i) xs.push_back(-1.5 + 3.0 * i / 4000);
    const Variable x(Tensor::from_vector(xs, {static_cast<int64_t>(xs.size())}));
    for (auto [grid, out] :
         {std::pair{q::Grid::wrpn, q::wrpn_weight(x, k)}, std::pair{q::Grid::dorefa, q::dorefa_weight(x, k)}}) {
      CAPTURE(grid_name(grid));
      std::set<double> produced;
      for (double v : out.data().to_vector()) produced.insert(v);
      const std::vector<double> levels = q::grid_levels(grid, k);
      REQUIRE(produced.size() == levels.size());
      size_t i = 0;
      for (double v : produced) CHECK(v == doctest::Approx(levels[i++]).epsilon(1e-12));
    }
    // Fixed point Q1.(k-1): round(w 2^(k-1)) / 2^(k-1) on [-1, 1 - Delta].
    const std::vector<double> fp = q::grid_levels(q::Grid::fixed_point, k);
    REQUIRE(fp.size() == (size_t{1} << k));
    const double h = std::ldexp(1.0, k - 1);
    for (size_t i = 0; i < fp.size(); ++i) CHECK(fp[i] == doctest::Approx((static_cast<double>(i) - h) / h));
  }
}

TEST_CASE("SinReQ: zero on every level, maximal (1 per weight) at every decision threshold") {
  for (q::Grid grid : kGrids) {
    for (int k = 2; k <= 5; ++k) {
      CAPTURE(grid_name(grid));
      CAPTURE(k);
      const std::vector<double> levels = q::grid_levels(grid, k);
      const q::SinReQOptions sum_opt{grid, Reduction::sum};
      const double at_levels = q::sinreq_layer(leaf_vec(levels), k, sum_opt).item();
      CHECK(std::abs(at_levels) < 1e-20);
      const std::vector<double> mids = midpoints(levels);
      const double at_mids = q::sinreq_layer(leaf_vec(mids), k, {grid, Reduction::mean}).item();
      CHECK(at_mids == doctest::Approx(1).epsilon(1e-12));
      // The midpoints are the thresholds of the matching quantizer: just below and above them the
      // quantizer picks the two neighbouring levels; the levels are its fixed points.
      if (grid == q::Grid::wrpn) {
        for (size_t i = 0; i < mids.size(); ++i) {
          const auto lo = q::wrpn_weight(Variable(Tensor::from_vector(std::vector<double>{mids[i] - 1e-9}, {1})), k);
          const auto hi = q::wrpn_weight(Variable(Tensor::from_vector(std::vector<double>{mids[i] + 1e-9}, {1})), k);
          CHECK(lo.item() == doctest::Approx(levels[i]));
          CHECK(hi.item() == doctest::Approx(levels[i + 1]));
        }
        const auto fixed =
            q::wrpn_weight(Variable(Tensor::from_vector(levels, {static_cast<int64_t>(levels.size())})), k);
        CHECK(max_abs_diff(fixed.data(), Tensor::from_vector(levels, {static_cast<int64_t>(levels.size())})) < 1e-12);
      }
      // Between a level and the next threshold the penalty rises monotonically.
      const double a = levels[levels.size() / 2], b = mids[levels.size() / 2];
      double prev = -1;
      for (int i = 0; i <= 10; ++i) {
        const double v = q::sinreq_layer(leaf_vec({a + (b - a) * i / 10}), k, sum_opt).item();
        CHECK(v > prev);
        prev = v;
      }
    }
  }
}

TEST_CASE("SinReQ with the DoReFa grid: minima on DoReFa levels in the tanh-normalised domain") {
  // w = atanh(0.9 x) with max|x| = 1 gives tanh(w) / max|tanh w| = x exactly: DoReFa rounds x.
  for (int k = 2; k <= 4; ++k) {
    CAPTURE(k);
    const std::vector<double> levels = q::grid_levels(q::Grid::dorefa, k);
    const std::vector<double> mids = midpoints(levels);
    std::vector<double> xs;
    for (double m : mids) xs.insert(xs.end(), {m - 1e-6, m + 1e-6});
    xs.push_back(1.0);
    std::vector<double> ws;
    for (double x : xs) ws.push_back(std::atanh(0.9 * x));
    const auto wq = q::dorefa_weight(Variable(Tensor::from_vector(ws, {static_cast<int64_t>(ws.size())})), k);
    const auto qv = wq.data().to_vector();
    for (size_t i = 0; i < mids.size(); ++i) {
      CHECK(qv[2 * i] == doctest::Approx(levels[i]));          // just below the threshold
      CHECK(qv[2 * i + 1] == doctest::Approx(levels[i + 1]));  // just above
    }
    // ... and the sinusoid evaluated on that domain is 0 on the levels, 1 at the thresholds.
    CHECK(q::sinreq_layer(leaf_vec(levels), k, {q::Grid::dorefa, Reduction::sum}).item() < 1e-20);
    CHECK(q::sinreq_layer(leaf_vec(mids), k, {q::Grid::dorefa, Reduction::mean}).item() == doctest::Approx(1));
  }
}

TEST_CASE("WaveQ at a fixed beta equals SinReQ at k = beta + 1 bits on the matching grid") {
  Generator gen(7);
  const std::vector<Variable> ws = {random_leaf({4, 5}, gen, -1.2, 1.2), random_leaf({7}, gen)};
  for (q::Grid grid : kGrids) {
    for (Reduction red : kReductions) {
      for (int beta = 1; beta <= 6; ++beta) {
        CAPTURE(grid_name(grid));
        CAPTURE(beta);
        const double sinreq = q::sinreq_penalty(ws, {beta + 1, beta + 1}, {grid, red}).item();
        const std::vector<Variable> betas = {beta_leaf(beta), beta_leaf(beta)};
        const double norm_factor[] = {1.0, std::ldexp(1.0, -beta), std::ldexp(1.0, -2 * beta)};
        int n = 0;
        for (q::Normalization norm : kNorms) {
          const q::WaveQTerms t = q::waveq_penalty(ws, betas, {grid, norm, red});
          CHECK(t.weight_term.item() == doctest::Approx(sinreq * norm_factor[n++]).epsilon(1e-10));
          CHECK(t.bitwidth_term.item() == doctest::Approx(2.0 * beta));
        }
      }
    }
  }
}

TEST_CASE("SinReQ gradcheck (float64) for every grid and reduction") {
  Generator gen(11);
  for (q::Grid grid : kGrids) {
    for (Reduction red : kReductions) {
      CAPTURE(grid_name(grid));
      CAPTURE(static_cast<int>(red));
      const std::vector<Variable> ws = {random_leaf({3, 4}, gen), random_leaf({6}, gen, -1.3, 1.3)};
      const auto f = [&](const std::vector<Variable>& x) { return q::sinreq_penalty(x, {3, 4}, {grid, red}); };
      const GradcheckResult r = gradcheck(f, ws);
      CHECK_MESSAGE(r.ok, r.message);
    }
  }
}

TEST_CASE("WaveQ gradcheck (float64) w.r.t. weights and betas for every grid, normalisation, reduction") {
  Generator gen(12);
  for (q::Grid grid : kGrids) {
    for (q::Normalization norm : kNorms) {
      for (Reduction red : kReductions) {
        CAPTURE(grid_name(grid));
        CAPTURE(static_cast<int>(norm));
        CAPTURE(static_cast<int>(red));
        const std::vector<Variable> inputs = {random_leaf({3, 4}, gen), random_leaf({5}, gen, -1.2, 1.2),
                                              beta_leaf(2.3), beta_leaf(3.6)};
        const auto f = [&](const std::vector<Variable>& x) {
          const q::WaveQTerms t = q::waveq_penalty({x[0], x[1]}, {x[2], x[3]}, {grid, norm, red});
          return add(t.weight_term, mul(t.bitwidth_term, 0.05));
        };
        const GradcheckResult r = gradcheck(f, inputs);
        CHECK_MESSAGE(r.ok, r.message);
      }
    }
  }
}

TEST_CASE("weight scale max: the sinusoid sees w / max|w| (scale-invariant), the scale a constant") {
  Generator gen(14);
  const Variable w = random_leaf({4, 5}, gen, -0.12, 0.12);
  const double s = math::amax(math::abs(w.data())).item();
  const Variable w_over_s(math::mul(w.data(), 1.0 / s));
  const Variable beta = beta_leaf(2.4);
  for (q::Grid grid : {q::Grid::wrpn, q::Grid::fixed_point}) {
    CAPTURE(grid_name(grid));
    q::WaveQOptions scaled{grid, q::Normalization::R1, Reduction::mean};
    scaled.scale = q::WeightScale::max_abs;
    const q::WaveQOptions plain{grid, q::Normalization::R1, Reduction::mean};
    // Equal to the unscaled penalty of w / s, and unchanged when w is multiplied by a constant.
    CHECK(q::waveq_layer(w, beta, scaled).item() ==
          doctest::Approx(q::waveq_layer(w_over_s, beta, plain).item()).epsilon(1e-12));
    CHECK(q::waveq_layer(Variable(math::mul(w.data(), 7.5)), beta, scaled).item() ==
          doctest::Approx(q::waveq_layer(w, beta, scaled).item()).epsilon(1e-12));
    q::SinReQOptions sr{grid, Reduction::sum};
    sr.scale = q::WeightScale::max_abs;
    CHECK(q::sinreq_layer(w, 3, sr).item() ==
          doctest::Approx(q::sinreq_layer(w_over_s, 3, {grid, Reduction::sum}).item()).epsilon(1e-12));
    // Gradients: those of the penalty of w * (1 / s0) with s0 = max|w| a constant (no path
    // through the max), which finite differences check.
    const Variable x = random_leaf({3, 4}, gen, -0.2, 0.2), b = beta_leaf(2.7);
    const double s0 = math::amax(math::abs(x.data())).item();
    const auto f_frozen = [&](const std::vector<Variable>& v) {
      const Variable y = mul(v[0], Variable(Tensor::scalar(1.0 / s0, DType::f64)));
      return add(q::waveq_penalty({y}, {v[1]}, plain).weight_term, q::sinreq_penalty({y}, {3}, {grid, Reduction::sum}));
    };
    const auto f_scaled = [&](const std::vector<Variable>& v) {
      return add(q::waveq_penalty({v[0]}, {v[1]}, scaled).weight_term, q::sinreq_penalty({v[0]}, {3}, sr));
    };
    const GradcheckResult r = gradcheck(f_frozen, {x, b});
    CHECK_MESSAGE(r.ok, r.message);
    const std::vector<Variable> g_frozen = grad({f_frozen({x, b})}, {x, b});
    const std::vector<Variable> g_scaled = grad({f_scaled({x, b})}, {x, b});
    CHECK(max_abs_diff(g_scaled[0].data(), g_frozen[0].data()) < 1e-12);
    CHECK(g_scaled[1].item() == doctest::Approx(g_frozen[1].item()).epsilon(1e-12));
  }
  CHECK(q::parse_weight_scale("max") == q::WeightScale::max_abs);
  CHECK_THROWS_WITH_AS(q::parse_weight_scale("l2"), doctest::Contains("unknown weight scale"), Error);
}

TEST_CASE("weight scale tanh: the sinusoid sees DoReFa's tanh(w)/max|tanh w|, zero on DoReFa's levels") {
  Generator gen(15);
  const Variable w = random_leaf({4, 5}, gen, -0.3, 0.3);
  const Tensor t = math::tanh(w.data());
  const Variable y(math::mul(t, 1.0 / math::amax(math::abs(t)).item()));
  q::SinReQOptions sr{q::Grid::dorefa, Reduction::sum};
  sr.scale = q::WeightScale::tanh_max;
  // Equal to the plain penalty of y, for SinReQ and WaveQ (R1).
  for (int k : {2, 3, 4, 5}) {
    CAPTURE(k);
    CHECK(q::sinreq_layer(w, k, sr).item() ==
          doctest::Approx(q::sinreq_layer(y, k, {q::Grid::dorefa, Reduction::sum}).item()).epsilon(1e-12));
    // Zero on the quantized weights' preimage: w whose tanh-normalised value is DoReFa's level.
    // dorefa_weight(w) = levels; choose w = atanh(0.6 * level) so max|tanh w| = 0.6 and y = level.
    const std::vector<double> levels = q::grid_levels(q::Grid::dorefa, k);
    std::vector<double> pre;
    for (double l : levels) pre.push_back(std::atanh(0.6 * l));
    const Variable wl(Tensor::from_vector(pre, {static_cast<int64_t>(pre.size())}));
    CHECK(q::sinreq_layer(wl, k, sr).item() < 1e-20);
    CHECK(max_abs_diff(q::dorefa_weight(wl, k).data(),
                       Tensor::from_vector(levels, {static_cast<int64_t>(levels.size())})) < 1e-12);
    // ... and not for the same points on raw w (the official code's approximation).
    CHECK(q::sinreq_layer(wl, k, {q::Grid::dorefa, Reduction::sum}).item() > 0.1);
  }
  q::WaveQOptions wq{q::Grid::dorefa, q::Normalization::R1, Reduction::mean};
  wq.scale = q::WeightScale::tanh_max;
  const Variable beta = beta_leaf(2.6);
  CHECK(q::waveq_layer(w, beta, wq).item() ==
        doctest::Approx(q::waveq_layer(y, beta, {q::Grid::dorefa, q::Normalization::R1, Reduction::mean}).item())
            .epsilon(1e-12));
  // The domain helpers agree with the penalty's view and map levels back to weights.
  const q::SinusoidDomain d = q::sinusoid_domain(w.data(), q::WeightScale::tanh_max);
  CHECK(max_abs_diff(q::to_sinusoid_domain(w.data(), q::WeightScale::tanh_max), y.data()) < 1e-15);
  CHECK(d.from(d.to(0.17)) == doctest::Approx(0.17).epsilon(1e-12));
  // Gradients: through tanh, with s0 = max|tanh w| a constant (those of the penalty of
  // tanh(w) * (1 / s0), which finite differences check).
  const Variable x = random_leaf({3, 4}, gen, -0.4, 0.4), b = beta_leaf(2.7);
  const double s0 = math::amax(math::abs(math::tanh(x.data()))).item();
  const q::WaveQOptions wq_plain{q::Grid::dorefa, q::Normalization::R1, Reduction::mean};
  const auto f_frozen = [&](const std::vector<Variable>& v) {
    const Variable y = mul(tanh(v[0]), Variable(Tensor::scalar(1.0 / s0, DType::f64)));
    return add(q::waveq_penalty({y}, {v[1]}, wq_plain).weight_term,
               q::sinreq_penalty({y}, {3}, {q::Grid::dorefa, Reduction::sum}));
  };
  const auto f_scaled = [&](const std::vector<Variable>& v) {
    return add(q::waveq_penalty({v[0]}, {v[1]}, wq).weight_term, q::sinreq_penalty({v[0]}, {3}, sr));
  };
  const GradcheckResult r = gradcheck(f_frozen, {x, b});
  CHECK_MESSAGE(r.ok, r.message);
  const std::vector<Variable> g_frozen = grad({f_frozen({x, b})}, {x, b});
  const std::vector<Variable> g_scaled = grad({f_scaled({x, b})}, {x, b});
  CHECK(max_abs_diff(g_scaled[0].data(), g_frozen[0].data()) < 1e-12);
  CHECK(g_scaled[1].item() == doctest::Approx(g_frozen[1].item()).epsilon(1e-12));
  CHECK(q::parse_weight_scale("tanh") == q::WeightScale::tanh_max);
}

TEST_CASE("weight scale: descending the sinusoid alone moves weights to the levels, not the scale") {
  // Differentiated through the max, the layer's whole pull toward 0 lands on its largest weight,
  // which grows until every other weight sits in the basin of the level 0 (seen in ResNet-20
  // WRPN + SinReQ at 3 bits: max|w| 0.87 -> 8.3, 99 % of the weights quantized to 0). With the
  // scale a constant the largest weight, already on a level (+-1), stays put.
  Generator gen(16);
  for (q::WeightScale scale : {q::WeightScale::max_abs, q::WeightScale::tanh_max}) {
    CAPTURE(static_cast<int>(scale));
    const q::Grid grid = scale == q::WeightScale::tanh_max ? q::Grid::dorefa : q::Grid::wrpn;
    Tensor w = Tensor::rand({64}, gen, DType::f64, -0.3, 0.3);
    const double max0 = math::amax(math::abs(w)).item();
    q::SinReQOptions sr{grid, Reduction::mean};
    sr.scale = scale;
    const double r0 = q::sinreq_layer(Variable(w), 3, sr).item();
    for (int step = 0; step < 300; ++step) {
      const Variable v(w, true);
      const Variable g = grad({q::sinreq_layer(v, 3, sr)}, {v})[0];
      w = math::sub(w, math::mul(g.data(), 0.02));
    }
    CHECK(q::sinreq_layer(Variable(w), 3, sr).item() < 0.5 * r0);
    CHECK(math::amax(math::abs(w)).item() == doctest::Approx(max0).epsilon(1e-9));
  }
}

TEST_CASE("WaveQ second derivatives (gradgradcheck, float64)") {
  Generator gen(13);
  const std::vector<Variable> inputs = {random_leaf({6}, gen), beta_leaf(2.6)};
  const auto f = [](const std::vector<Variable>& x) {
    return q::waveq_penalty({x[0]}, {x[1]}, {q::Grid::dorefa, q::Normalization::R1, Reduction::mean}).weight_term;
  };
  const GradcheckResult r = gradgradcheck(f, inputs);
  CHECK_MESSAGE(r.ok, r.message);
}

TEST_CASE("WaveQ gradients equal the closed forms of spec §1.2 (WRPN grid, R1, sum)") {
  const std::vector<double> wv = {-0.83, -0.4, -0.05, 0.12, 0.31, 0.77, 1.1};
  const double beta0 = 2.7, lambda_w = 0.6, lambda_beta = 0.03;
  Variable w = leaf_vec(wv), beta = beta_leaf(beta0);
  const q::WaveQTerms t = q::waveq_penalty({w}, {beta}, {q::Grid::wrpn, q::Normalization::R1, Reduction::sum});
  add(mul(t.weight_term, lambda_w), mul(t.bitwidth_term, lambda_beta)).backward();
  const double n = std::pow(2.0, beta0);
  double dbeta = 0;
  const auto gw = w.grad().data().to_vector();
  for (size_t j = 0; j < wv.size(); ++j) {
    const double u = kPi * wv[j] * (n - 1);
    CHECK(gw[j] == doctest::Approx(lambda_w * kPi * (n - 1) * std::sin(2 * u) / n).epsilon(1e-12));
    dbeta += kPi * wv[j] * std::sin(2 * u) - std::sin(u) * std::sin(u) / n;
  }
  CHECK(beta.grad().item() == doctest::Approx(lambda_w * kLn2 * dbeta + lambda_beta).epsilon(1e-12));
}

TEST_CASE("SinReQ gradient equals the closed form of spec §2.1 (mean reduction)") {
  const std::vector<double> wv = {-0.9, -0.21, 0.0, 0.33, 0.58};
  for (q::Grid grid : kGrids) {
    CAPTURE(grid_name(grid));
    const int k = 4;
    Variable w = leaf_vec(wv);
    q::sinreq_penalty({w}, {k}, {grid, Reduction::mean}).backward();
    // Delta, c from the spec's table for a k-bit target (independent of grid_step).
    const double delta = grid == q::Grid::dorefa ? 2.0 / (std::pow(2.0, k) - 1)
                         : grid == q::Grid::wrpn ? 1.0 / (std::pow(2.0, k - 1) - 1)
                                                 : std::pow(2.0, -(k - 1));
    const double c = grid == q::Grid::dorefa ? delta / 2 : 0;
    const auto g = w.grad().data().to_vector();
    for (size_t j = 0; j < wv.size(); ++j)
      CHECK(g[j] == doctest::Approx(kPi / delta * std::sin(2 * kPi * (wv[j] + c) / delta) / wv.size()).epsilon(1e-12));
  }
}

TEST_CASE("regularizer argument errors name the op") {
  Variable w = leaf_vec({0.1, 0.2});
  CHECK_THROWS_WITH_AS(q::sinreq_penalty({w}, {3, 4}), doctest::Contains("sinreq_penalty"), Error);
  CHECK_THROWS_WITH_AS(q::sinreq_penalty({w}, {1}, {q::Grid::wrpn}), doctest::Contains("WRPN"), Error);
  CHECK_THROWS_WITH_AS(q::waveq_penalty({w}, {}), doctest::Contains("waveq_penalty"), Error);
  const Variable beta32(Tensor::scalar(3.0, DType::f32), true);
  CHECK_THROWS_WITH_AS(q::waveq_penalty({w}, {beta32}), doctest::Contains("dtype"), Error);
  CHECK_THROWS_WITH_AS(q::sinreq_penalty({w}, {3}, {q::Grid::wrpn, Reduction::none}), doctest::Contains("none"), Error);
  const Variable beta_vec(Tensor::from_list({1, 2}, {2}, DType::f64), true);
  CHECK_THROWS_WITH_AS(q::waveq_penalty({w}, {beta_vec}), doctest::Contains("one-element"), Error);
}

TEST_CASE("clamp_betas and learned bits") {
  std::vector<Variable> betas = {beta_leaf(0.3), beta_leaf(4.2), beta_leaf(9.5)};
  q::clamp_betas(betas, q::WaveQOptions{});
  CHECK(betas[0].item() == 1.0);
  CHECK(betas[1].item() == 4.2);
  CHECK(betas[2].item() == 8.0);
  CHECK(betas[1].requires_grad());
  CHECK(q::learned_bits(2.01) == 3);
  CHECK(q::learned_bits(3.0) == 3);
  CHECK(q::learned_bits(1.0) == 1);
  CHECK(q::learned_weight_bits(2.01) == 4);
  CHECK(q::learned_weight_bits(8.0) == 9);
}

TEST_CASE("WaveQ three-phase schedule (spec §1.3)") {
  const q::WaveQSchedule s{.lambda_w = 2.0, .lambda_beta = 0.5, .rise = 0.2, .fall = 0.5, .width = 0.01};
  const double T = 1000;
  // Phase 1: both ~0.
  const auto p1 = q::waveq_lambdas(s, 50, T);
  CHECK(p1.w < 1e-6);
  CHECK(std::abs(p1.beta) < 1e-6);
  // The rise: half way at t = rT.
  CHECK(q::waveq_lambdas(s, 200, T).w == doctest::Approx(1.0));
  CHECK(q::waveq_lambdas(s, 200, T).beta == doctest::Approx(0.25));
  // Phase 2 plateau: lambda_w = Lw, lambda_beta = Lb.
  const auto p2 = q::waveq_lambdas(s, 350, T);
  CHECK(p2.w == doctest::Approx(2.0).epsilon(1e-6));
  CHECK(p2.beta == doctest::Approx(0.5).epsilon(1e-6));
  // The fall of lambda_beta, half way at t = dT; lambda_w stays.
  CHECK(q::waveq_lambdas(s, 500, T).beta == doctest::Approx(0.25).epsilon(1e-6));
  // Phase 3: lambda_beta ~0, lambda_w = Lw.
  const auto p3 = q::waveq_lambdas(s, 900, T);
  CHECK(p3.w == doctest::Approx(2.0).epsilon(1e-6));
  CHECK(std::abs(p3.beta) < 1e-6);
  // lambda_w never decreases; lambda_beta stays within [0, Lb].
  double prev = -1;
  for (int t = 0; t <= 1000; t += 5) {
    const auto l = q::waveq_lambdas(s, t, T);
    CHECK(l.w >= prev);
    CHECK(l.beta >= -1e-15);
    CHECK(l.beta <= 0.5 + 1e-15);
    prev = l.w;
  }
  // The schedule depends on t / T only.
  CHECK(q::waveq_lambdas(s, 35, 100).beta == doctest::Approx(p2.beta));
  // Official code: lambda_beta constant from the start.
  q::WaveQSchedule official = s;
  official.beta_shape = q::BetaSchedule::constant;
  CHECK(q::waveq_lambdas(official, 0, T).beta == 0.5);
  CHECK(q::waveq_lambdas(official, 900, T).beta == 0.5);
  CHECK(q::waveq_lambdas(official, 200, T).w == doctest::Approx(1.0));
  CHECK_THROWS_AS(q::waveq_lambdas(s, 1, 0), Error);
  CHECK_THROWS_AS(q::waveq_lambdas(q::WaveQSchedule{.rise = 0.6, .fall = 0.5}, 1, 10), Error);
}

TEST_CASE("SinReQ schedules: constant after warm-up, or the smooth ramp") {
  const q::SinReQSchedule step{.lambda = 3.0, .warmup = 0.1};
  CHECK(q::sinreq_lambda(step, 9.99, 100) == 0.0);
  CHECK(q::sinreq_lambda(step, 10, 100) == 3.0);
  CHECK(q::sinreq_lambda(step, 100, 100) == 3.0);
  CHECK(q::sinreq_lambda(q::SinReQSchedule{.lambda = 2.0}, 0, 100) == 2.0);  // no warm-up: from step 0
  const q::SinReQSchedule smooth{.lambda = 3.0, .warmup = 0.2, .width = 0.02, .ramp = q::SinReQRamp::smooth};
  CHECK(q::sinreq_lambda(smooth, 20, 100) == doctest::Approx(1.5));
  CHECK(q::sinreq_lambda(smooth, 0, 100) < 1e-6);
  CHECK(q::sinreq_lambda(smooth, 60, 100) == doctest::Approx(3.0));
}

TEST_CASE("level statistics on hand-picked weights") {
  // WRPN k = 3: levels m/3 on [-1, 1], Delta = 1/3.
  const Tensor w = Tensor::from_list({0.0, 1.0 / 3 + 0.001, 0.5, 1.5, -0.3}, {5}, DType::f64);
  const q::LevelStats s = q::level_stats(w, q::Grid::wrpn, 3);
  const double d[] = {0.0, 0.001, 1.0 / 6, 0.5, 1.0 / 30};
  const double mean_d = (d[0] + d[1] + d[2] + d[3] + d[4]) / 5;
  CHECK(s.count == 5);
  CHECK(s.step == doctest::Approx(1.0 / 3));
  CHECK(s.mean_distance == doctest::Approx(mean_d));
  CHECK(s.mean_distance_steps == doctest::Approx(mean_d * 3));
  CHECK(s.share_near == doctest::Approx(2.0 / 5));  // 0 and 1/3 + 0.001 (<= Delta/100 = 0.00333)
  // Wider tolerance: 1/30 = 0.1 Delta is within 10 %.
  CHECK(q::level_stats(w, q::Grid::wrpn, 3, q::Domain::raw, 0.1).share_near == doctest::Approx(3.0 / 5));

  // DoReFa k = 2, tanh-normalised domain: levels {-1, -1/3, 1/3, 1}; w = atanh(0.8 x), max|x| = 1.
  const std::vector<double> xs = {-1.0, 0.0, 0.3, 1.0};
  std::vector<double> ws;
  for (double x : xs) ws.push_back(std::atanh(0.8 * x));
  const q::LevelStats t = q::level_stats(Tensor::from_vector(ws, {4}), q::Grid::dorefa, 2, q::Domain::tanh_normalized);
  const double td = (0 + 1.0 / 3 + (1.0 / 3 - 0.3) + 0) / 4;
  CHECK(t.mean_distance == doctest::Approx(td));
  CHECK(t.step == doctest::Approx(2.0 / 3));
  CHECK(t.share_near == doctest::Approx(0.5));
  // The same weights measured raw are further from the grid (atanh stretches them).
  CHECK(q::level_stats(Tensor::from_vector(ws, {4}), q::Grid::dorefa, 2).mean_distance != doctest::Approx(td));
}

TEST_CASE("weight memory at per-layer bits vs FP32, KB = 1024") {
  const q::MemoryFootprint m = q::weight_memory({1000, 2048, 10}, {4, 2, 32});
  CHECK(m.bytes == doctest::Approx(500 + 512 + 40));
  CHECK(m.fp32_bytes == doctest::Approx(4 * 3058));
  CHECK(m.kb() == doctest::Approx(1052.0 / 1024));
  CHECK(m.fp32_kb() == doctest::Approx(12232.0 / 1024));
  CHECK(m.compression_ratio() == doctest::Approx(12232.0 / 1052));
  CHECK_THROWS_AS(q::weight_memory({10}, {4, 4}), Error);
}

TEST_CASE("histogram: bins, edges, out-of-range and non-finite values") {
  const double nan = std::nan("");
  const Tensor v = Tensor::from_list({0, 0.1, 0.25, 0.5, 0.99, 1.0, -0.1, 2, nan}, {9}, DType::f64);
  const q::Histogram h = q::histogram(v, 4, 0, 1);
  REQUIRE(h.counts.size() == 4);
  CHECK(h.counts == std::vector<int64_t>{2, 1, 1, 2});
  CHECK(h.below == 1);
  CHECK(h.above == 1);
  CHECK(h.non_finite == 1);
  CHECK(h.in_range() == 6);
  CHECK(h.bin_width() == doctest::Approx(0.25));
  const q::Histogram a = q::histogram(v, 3);  // auto range [-0.1, 2]
  CHECK(a.lo == doctest::Approx(-0.1));
  CHECK(a.hi == doctest::Approx(2));
  CHECK(a.in_range() == 8);
  CHECK(a.counts.back() == 1);  // only 2.0 in [1.3, 2]
  CHECK_THROWS_AS(q::histogram(v, 0, 0, 1), Error);
}

namespace {

// A small least-squares problem y = X w*, trained from w = w* (a "pretrained" float model) by
// plain SGD on task loss + lambda_w(t) WaveQ weight term + lambda_beta(t) sum(beta), written inline
// with Variable ops. Returns the final weights and beta.
struct RunResult {
  Tensor w;
  double beta;
};

RunResult train_waveq(double lambda_w, double lambda_beta, bool learn_beta, double beta0, uint64_t seed = 2024,
                      int steps = 200) {
  Generator gen(seed);
  const int64_t n = 256, d = 48;
  const Tensor x = Tensor::randn({n, d}, gen, DType::f64);
  const Tensor w_star = Tensor::rand({d, 1}, gen, DType::f64, -0.95, 0.95);
  const Tensor y = math::matmul(x, w_star);
  Variable w(w_star.clone(), true);
  Variable beta(Tensor::scalar(beta0, DType::f64), learn_beta);
  const q::WaveQOptions opt{q::Grid::wrpn, q::Normalization::R1, Reduction::mean};
  const q::WaveQSchedule schedule{
      .lambda_w = lambda_w, .lambda_beta = lambda_beta, .rise = 0.1, .fall = 0.7, .width = 0.03};
  const double lr = 0.02, lr_beta = 0.2;
  for (int t = 0; t < steps; ++t) {
    const q::WaveQLambdas l = q::waveq_lambdas(schedule, t, steps);
    const q::WaveQTerms r = q::waveq_penalty({w}, {beta}, opt);
    const Variable task = mse_loss(matmul(Variable(x), w), Variable(y));
    Variable loss = add(task, mul(r.weight_term, l.w));
    if (learn_beta) loss = add(loss, mul(r.bitwidth_term, l.beta));
    loss.backward();
    math::add_(w.mutable_data(), w.grad().data(), -lr);
    w.zero_grad();
    if (learn_beta) {
      math::add_(beta.mutable_data(), beta.grad().data(), -lr_beta);
      beta.zero_grad();
      q::clamp_betas({beta}, opt);
    }
  }
  return {w.data().clone(), beta.item()};
}

}  // namespace

TEST_CASE("training with WaveQ pulls weights onto the levels; a larger lambda_beta learns fewer bits") {
  // Fixed beta = 2 (WRPN grid of k = 3 bits, levels m/3): the mean distance to the levels falls.
  const RunResult plain = train_waveq(0.0, 0.0, false, 2.0);
  const RunResult reg = train_waveq(30.0, 0.0, false, 2.0);
  const q::LevelStats before = q::level_stats(plain.w, q::Grid::wrpn, 3);
  const q::LevelStats after = q::level_stats(reg.w, q::Grid::wrpn, 3);
  MESSAGE("mean distance in steps: without WaveQ ", before.mean_distance_steps, ", with ", after.mean_distance_steps,
          "; share within 1%: ", before.share_near, " -> ", after.share_near);
  CHECK(before.mean_distance_steps > 0.15);  // the task optimum is spread over the grid
  CHECK(after.mean_distance_steps < 0.3 * before.mean_distance_steps);
  CHECK(after.share_near > before.share_near);

  // Learned beta from 6 under the three-phase schedule: a large bitwidth penalty ends with few
  // bits, a tiny one keeps many (the balance of spec §1.2's two beta-gradient terms).
  for (uint64_t seed : {1, 2, 3}) {
    CAPTURE(seed);
    const RunResult low = train_waveq(3.0, 0.001, true, 6.0, seed);
    const RunResult high = train_waveq(3.0, 1.0, true, 6.0, seed);
    MESSAGE("learned beta: lambda_beta = 0.001 -> ", low.beta, ", lambda_beta = 1 -> ", high.beta);
    CHECK(low.beta > 4.0);
    CHECK(high.beta < 2.5);
    CHECK(q::learned_bits(high.beta) < q::learned_bits(low.beta));
  }
}

TEST_CASE("waveq_grid at integer beta is the k = beta + 1 grid; sinusoid_stats measures distance to its zeros") {
  for (quant::Grid g : {quant::Grid::dorefa, quant::Grid::wrpn, quant::Grid::fixed_point})
    for (int beta = 1; beta <= 6; ++beta) {
      const quant::SinusoidGrid a = quant::waveq_grid(g, beta), b = quant::sinreq_grid(g, beta + 1);
      CHECK(a.step == doctest::Approx(b.step).epsilon(1e-12));
      CHECK(a.offset == doctest::Approx(b.offset).epsilon(1e-12));
    }
  const quant::SinusoidGrid g = quant::waveq_grid(quant::Grid::wrpn, 2.0);  // zeros at multiples of 1/3
  const Tensor on = Tensor::from_vector(std::vector<double>{0.0, 1.0 / 3, -2.0 / 3, 5.0 / 3}, {4});
  quant::LevelStats s = quant::sinusoid_stats(on, g);
  CHECK(s.mean_distance == doctest::Approx(0.0).epsilon(1e-12));
  CHECK(s.share_near == 1.0);
  const Tensor half = Tensor::from_vector(std::vector<double>{1.0 / 6, -1.0 / 6, 0.5, 0.01}, {4});
  s = quant::sinusoid_stats(half, g);
  CHECK(s.mean_distance == doctest::Approx((3 * (1.0 / 6) + 0.01) / 4));
  CHECK(s.share_near == 0.0);  // 0.01 is 3% of the step
  // DoReFa-aligned: zeros at odd multiples of step/2.
  const quant::SinusoidGrid d = quant::waveq_grid(quant::Grid::dorefa, 1.0);  // step 1/1.5, zeros at +-1/3, +-1
  s = quant::sinusoid_stats(Tensor::from_vector(std::vector<double>{1.0 / 3, -1.0, 0.0}, {3}), d);
  CHECK(s.mean_distance == doctest::Approx((1.0 / 3) / 3));
}

TEST_CASE("quantize_on_period: the sinusoid's zeros at a real beta, U3's bits = ceil(beta) + 1, STE gradient 1") {
  Generator gen(21);
  for (double beta : {1.0, 2.5, 3.02, 3.999, 4.0, 5.7}) {
    for (quant::WeightScale scale : {quant::WeightScale::none, quant::WeightScale::max_abs}) {
      Variable w(Tensor::randn({500}, gen, DType::f64, 0, scale == quant::WeightScale::none ? 0.6 : 0.1), true);
      const double s = quant::weight_scale_of(w.data(), scale);
      const double d = s / (std::exp2(beta) - 1), top = std::floor(std::exp2(beta) - 1 + 1e-9) * d;
      CAPTURE(beta);
      // U3's inferred bits at (d, q_max = M d) fit in the reported k = ceil(beta) + 1 (spec §6.3,
      // convention 2), equal at an integer beta.
      // (u3_bits(1, M): the same count of levels on a unit step, which u3_bits does not round.)
      const double M = std::round(top / d);
      CHECK(quant::u3_bits(1, M) <= quant::learned_weight_bits(beta));
      if (beta == std::floor(beta)) CHECK(quant::u3_bits(1, M) == quant::learned_weight_bits(beta));
      Variable q = quant::quantize_on_period(w, beta, scale);
      const auto qv = q.data().to_vector(), wv = w.data().to_vector();
      std::set<long long> levels;
      for (size_t i = 0; i < qv.size(); ++i) {
        const double m = qv[i] / d;
        CHECK(m == doctest::Approx(std::nearbyint(m)).epsilon(1e-9));  // a multiple of the period
        CHECK(std::fabs(qv[i]) <= top + 1e-12);
        if (std::fabs(wv[i]) <= top) CHECK(std::fabs(qv[i] - wv[i]) <= d / 2 + 1e-12);  // nearest zero
        levels.insert(std::llround(m));
      }
      // The sinusoid of the WaveQ layer is 0 on every quantized weight (in its own domain w / s).
      const Variable y(math::mul(q.data(), 1.0 / s));
      CHECK(quant::waveq_layer(y, Variable(Tensor::scalar(beta, DType::f64))).item() < 1e-20);
      CHECK(double(levels.size()) <= std::exp2(quant::learned_weight_bits(beta)) - 1);
      // Straight-through: d sum(g * q) / dw = g for |w| <= M d, 0 outside.
      const Tensor g = Tensor::randn({500}, gen, DType::f64);
      sum(mul(q, Variable(g))).backward();
      const auto gw = w.grad().data().to_vector(), gv = g.to_vector();
      for (size_t i = 0; i < gw.size(); ++i) CHECK(gw[i] == doctest::Approx(std::fabs(wv[i]) <= top ? gv[i] : 0.0));
      // At an integer beta it is the (beta + 1)-bit wrpn grid.
      if (beta == std::floor(beta)) {
        const auto wr = quant::wrpn_weight(Variable(math::mul(w.data(), 1.0 / s)), int(beta) + 1).data().to_vector();
        for (size_t i = 0; i < qv.size(); ++i) CHECK(qv[i] == doctest::Approx(s * wr[i]).epsilon(1e-12));
      }
    }
  }
}

TEST_CASE("period_rounds_closer: the period for weights gathered on its zeros, the grid for weights on the grid") {
  Generator gen(22);
  const double beta = 3.3;  // period step 1/(2^3.3 - 1) = 0.1127; the 5-bit grid's step 1/15
  const int k = quant::learned_weight_bits(beta);
  REQUIRE(k == 5);
  const double d = 1 / (std::exp2(beta) - 1);
  std::vector<double> on_period, on_grid;
  for (int i = 0; i < 400; ++i) {
    const double u = Tensor::rand({}, gen, DType::f64, -1, 1).item();
    on_period.push_back(d * std::nearbyint(u / d) + 1e-4 * u);  // gathered: within 1e-4 of a zero
    on_grid.push_back(std::nearbyint(u * 15) / 15 + 1e-4 * u);
  }
  on_period.push_back(1.0), on_grid.push_back(1.0);  // s = 1 for both
  for (quant::WeightScale scale : {quant::WeightScale::none, quant::WeightScale::max_abs}) {
    CHECK(quant::period_rounds_closer(Tensor::from_vector(on_period, {401}), beta, scale));
    CHECK_FALSE(quant::period_rounds_closer(Tensor::from_vector(on_grid, {401}), beta, scale));
  }
}
