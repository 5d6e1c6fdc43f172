// Quantizers: forward values against the spec's formulas on hand-picked inputs, and backward
// against the specified surrogate gradients (spec §6, §8).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>

#include "autograd/ops.h"
#include "core/math.h"
#include "quant/quantizers.h"

using namespace lowbit;
using namespace lowbit::quant;

namespace {

Variable leaf(std::initializer_list<double> v) {
  return Variable(Tensor::from_list(v, {static_cast<int64_t>(v.size())}, DType::f64), true);
}
Variable scalar(double v) { return Variable(Tensor::from_list({v}, {1}, DType::f64), true); }
std::vector<double> vec(const Variable& v) { return v.data().to_vector(); }

void check_vec(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-9) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(tol).scale(1));
}

// d/dw of sum(f(w)) by central differences of a smooth reference function.
std::vector<double> numeric_grad(const std::function<std::vector<double>(const std::vector<double>&)>& f,
                                 std::vector<double> w) {
  std::vector<double> g(w.size());
  for (size_t j = 0; j < w.size(); ++j) {
    const double o = w[j], eps = 1e-6;
    w[j] = o + eps;
    double up = 0;
    for (double v : f(w)) up += v;
    w[j] = o - eps;
    double down = 0;
    for (double v : f(w)) down += v;
    w[j] = o;
    g[j] = (up - down) / (2 * eps);
  }
  return g;
}

}  // namespace

TEST_CASE("DoReFa weights, k = 2 by hand") {
  Variable w = leaf({-2, -0.5, 0, 0.3, 1.0});
  // tanh/(2 max|tanh|) + 1/2 = [0, .2603, .5, .6511, .8950]; x3 -> round [0, 1, 2, 2, 3]; 2q/3 - 1.
  check_vec(vec(dorefa_weight(w, 2)), {-1, -1.0 / 3, 1.0 / 3, 1.0 / 3, 1});
}

TEST_CASE("DoReFa weights, k = 1..8: formula, levels, surrogate gradient") {
  Generator gen(1);
  const Tensor wt = Tensor::randn({257}, gen, DType::f64);
  const std::vector<double> w0 = wt.to_vector();
  for (int k = 2; k <= 8; ++k) {
    Variable w(wt.clone(), true);
    Variable q = dorefa_weight(w, k);
    const double n = std::ldexp(1.0, k) - 1;
    double m = 0;
    for (double x : w0) m = std::max(m, std::abs(std::tanh(x)));
    std::set<double> levels;
    const auto qv = vec(q);
    for (size_t i = 0; i < w0.size(); ++i) {
      const double r = std::tanh(w0[i]) / (2 * m) + 0.5;
      CHECK(qv[i] == doctest::Approx(2 * std::nearbyint(n * r) / n - 1));
      levels.insert(qv[i]);
    }
    CHECK(levels.size() <= static_cast<size_t>(n + 1));
    CHECK(levels.count(0.0) == 0);  // zero is not a level
    // Identity STE through the round: the gradient of sum(q) is that of tanh(w)/max|tanh w|.
    sum(q).backward();
    const auto expect = numeric_grad(
        [](const std::vector<double>& v) {
          double mm = 0;
          for (double x : v) mm = std::max(mm, std::abs(std::tanh(x)));
          std::vector<double> out;
          for (double x : v) out.push_back(std::tanh(x) / mm);
          return out;
        },
        w0);
    check_vec(vec(w.grad()), expect, 1e-5);
  }
  // k = 1: E sign(w / E), sign(0) = +1, identity gradient; unscaled variant.
  Variable w1 = leaf({0.5, -1.5, 0, 2.0});  // E = 1
  Variable q1 = dorefa_weight(w1, 1);
  check_vec(vec(q1), {1, -1, 1, 1});
  sum(mul(q1, Variable(Tensor::from_list({1, 2, 3, 4}, {4}, DType::f64)))).backward();
  check_vec(vec(w1.grad()), {1, 2, 3, 4});
  Variable w2 = leaf({0.2, -0.4});  // E = 0.3
  check_vec(vec(dorefa_weight(w2, 1)), {0.3, -0.3});
  check_vec(vec(dorefa_weight(w2, 1, /*scaled=*/false)), {1, -1});
}

TEST_CASE("DoReFa activations: clip to [0,1], k bits, gradient 1 inside") {
  Variable a = leaf({-0.2, 0.1, 0.5, 0.8, 1.3});
  Variable q = dorefa_activation(a, 2);
  check_vec(vec(q), {0, 0, 2.0 / 3, 2.0 / 3, 1});  // round half to even at 1.5
  sum(q).backward();
  check_vec(vec(a.grad()), {0, 1, 1, 1, 0});
  for (int k = 1; k <= 8; ++k) {
    Variable x(Tensor::arange(-0.5, 1.5, 1.0 / 1024, DType::f64), false);
    std::set<double> levels;
    for (double v : vec(dorefa_activation(x, k))) levels.insert(v);
    CHECK(levels.size() == static_cast<size_t>(std::ldexp(1.0, k)));
  }
}

TEST_CASE("DoReFa gradient quantization: identity forward, gradient on the k_G grid, unbiased") {
  auto gen = std::make_shared<Generator>(5);
  const int kg = 4;
  const double n = 15;
  Tensor gt = Tensor::from_list({0.2, -0.7, 0.05, 0.9, -0.3, 0.6}, {2, 3}, DType::f64);
  std::vector<double> mean(6, 0);
  const int trials = 4000;
  for (int t = 0; t < trials; ++t) {
    Variable x(Tensor::zeros({2, 3}, DType::f64), true);
    Variable y = dorefa_gradient(x, kg, gen);
    CHECK(allclose(y.data(), x.data(), 0, 0));
    y.backward(Variable(gt));
    const auto g = vec(x.grad());
    const double maxx[2] = {0.7, 0.9};
    for (int i = 0; i < 6; ++i) {
      // (q - 1/2) 2 maxx with q = j / n.
      const double j = (g[i] / (2 * maxx[i / 3]) + 0.5) * n;
      CHECK(std::abs(j - std::nearbyint(j)) < 1e-9);
      mean[i] += g[i] / trials;
    }
  }
  const auto want = gt.to_vector();
  for (int i = 0; i < 6; ++i) CHECK(mean[i] == doctest::Approx(want[i]).epsilon(0.03).scale(1));
}

TEST_CASE("WRPN: 2^k - 1 levels, clip gradient") {
  for (int k = 2; k <= 8; ++k) {
    Variable w(Tensor::arange(-1.5, 1.5, 1.0 / 2048, DType::f64), true);
    Variable q = wrpn_weight(w, k);
    std::set<double> levels;
    for (double v : vec(q)) levels.insert(v);
    CHECK(levels.size() == static_cast<size_t>(std::ldexp(1.0, k) - 1));
    CHECK(levels.count(0.0) == 1);
    sum(q).backward();
    const auto g = vec(w.grad()), wv = vec(w);
    for (size_t i = 0; i < g.size(); ++i) CHECK(g[i] == (std::abs(wv[i]) <= 1 ? 1 : 0));
  }
  check_vec(vec(wrpn_weight(leaf({0.4, -0.9, 1.7}), 3)), {1.0 / 3, -1, 1});  // n = 3
  Variable a = leaf({-0.1, 0.4, 1.2});
  Variable qa = wrpn_activation(a, 2);
  check_vec(vec(qa), {0, 1.0 / 3, 1});
  sum(qa).backward();
  check_vec(vec(a.grad()), {0, 1, 0});
}

TEST_CASE("binary and ternary (TWN) weights") {
  Variable b = leaf({0.5, -1.5, 0, 2.0});
  Variable qb = binary_weight(b);
  check_vec(vec(qb), {1, -1, 1, 1});
  sum(qb).backward();
  check_vec(vec(b.grad()), {1, 0, 1, 0});  // hardtanh STE
  Variable t = leaf({0.1, -0.5, 1.0, -2.0, 0.05});
  // mean|W| = 0.73, delta = 0.511: kept {1.0, -2.0}, alpha = 1.5.
  Variable qt = ternary_weight(t);
  check_vec(vec(qt), {0, 0, 1.5, -1.5, 0});
  sum(mul(qt, Variable(Tensor::from_list({1, 2, 3, 4, 5}, {5}, DType::f64)))).backward();
  check_vec(vec(t.grad()), {1, 2, 3, 4, 5});  // identity STE
}

TEST_CASE("DoReFa gradient quantization: the graph owns its generator") {
  Tensor gt = Tensor::from_list({0.2, -0.7, 0.05, 0.9, -0.3, 0.6}, {2, 3}, DType::f64);
  auto run = [&](const std::shared_ptr<Generator>& g) {
    Variable x(Tensor::zeros({2, 3}, DType::f64), true);
    dorefa_gradient(x, 4, g).backward(Variable(gt));
    return vec(x.grad());
  };
  // The caller drops its handle before backward: the closure keeps the generator alive.
  Variable x(Tensor::zeros({2, 3}, DType::f64), true);
  auto gen = std::make_shared<Generator>(9);
  std::weak_ptr<Generator> watch = gen;
  Variable y = dorefa_gradient(x, 4, gen);
  gen.reset();
  CHECK(!watch.expired());
  y.backward(Variable(gt));
  CHECK(watch.expired());  // released with the graph
  // Same draws as a fresh generator with the same seed, used once.
  CHECK(vec(x.grad()) == run(std::make_shared<Generator>(9)));
  // The shared generator's state advances by one draw per element and backward pass.
  auto shared = std::make_shared<Generator>(9);
  run(shared);
  CHECK(shared->offset() == 6);
  run(shared);
  CHECK(shared->offset() == 12);
  CHECK_THROWS_AS(dorefa_gradient(x, 4, nullptr), Error);
}

TEST_CASE("Uhlich U3 uniform quantizer: values, surrogate gradients, inferred bits") {
  Variable x = leaf({0.3, -0.62, 2.0}), d = scalar(0.25), qmax = scalar(1.0);
  Variable q = uniform_u3(x, d, qmax);
  check_vec(vec(q), {0.25, -0.5, 1.0});
  sum(q).backward();
  check_vec(vec(x.grad()), {1, 1, 0});
  // dQ/dd = (Q - x)/d inside: (0.25-0.3)/0.25 + (-0.5+0.62)/0.25 = 0.28; 0 outside (q_max = 4 d);
  // dQ/dq_max = sign(x) outside.
  check_vec(vec(d.grad()), {0.28});
  check_vec(vec(qmax.grad()), {1});
  // |Q - x| <= d'/2 inside, for any x (d = 0.1 runs on d' = 1/8).
  Generator gen(2);
  Variable xs(Tensor::randn({1000}, gen, DType::f64), false);
  Variable y = uniform_u3(xs, scalar(0.1), scalar(10));
  const auto yv = vec(y), xv = vec(xs);
  for (size_t i = 0; i < yv.size(); ++i) CHECK(std::abs(yv[i] - xv[i]) <= 0.0625 + 1e-12);
  CHECK(u3_bits(0.25, 1.75) == 4);  // log2(8) + 1
  CHECK(u3_bits(1, 1) == 2);
  CHECK(u3_bits(0.25, 1.8) == 4);                   // q_max snaps to 7 d = 1.75
  CHECK(u3_bits(0.25, 1.9) == 5);                   // q_max snaps to 8 d = 2
  CHECK(u3_bits(0.1, 1.5, /*signed=*/false) == 4);  // d' = 1/8, n = 12: log2(13) -> 4
  CHECK(u3_bits(1, 0.5) == 2);                      // b_min for weights
  CHECK(u3_bits(1, 0.3, /*signed=*/false) == 1);    // n at least 1; b_min 1 for activations
  CHECK(u3_bits(1, 2.6) == 3);                      // 7 levels {-3, ..., 3}
  // Unsigned: negative inputs clip to 0 with zero gradient.
  Variable xa = leaf({-1, 0.26});
  Variable qa = uniform_u3(xa, scalar(0.25), scalar(1.0), false);
  check_vec(vec(qa), {0, 0.25});
  sum(qa).backward();
  check_vec(vec(xa.grad()), {0, 1});
}

TEST_CASE("uniform_fixed: U3's grid at an exact, non-power-of-two step; gradient 1 inside") {
  const double d = 0.3;  // not rounded: levels are multiples of 0.3
  Variable x = leaf({0.44, -0.46, 0.89, 0.95, -2.0, 0.0});
  Variable q = uniform_fixed(x, d, 3);
  check_vec(vec(q), {0.3, -0.6, 0.9, 0.9, -0.9, 0});
  sum(q).backward();
  check_vec(vec(x.grad()), {1, 1, 1, 0, 0, 1});
  Variable xs(Tensor::arange(-2, 2, 1.0 / 512, DType::f64), false);
  const auto qv = vec(uniform_fixed(xs, d, 3));
  std::set<double> levels(qv.begin(), qv.end());
  CHECK(levels.size() == 7);
  CHECK(double(levels.size()) <= std::exp2(u3_bits(1, 3)) - 1);
  for (size_t i = 1; i < qv.size(); ++i) CHECK(qv[i] >= qv[i - 1]);
  CHECK_THROWS_AS(uniform_fixed(x, d, 0), Error);
}

TEST_CASE("U3: d rounds to a power of two, q_max snaps to a multiple of it (u3_effective)") {
  struct Case {
    double d, q_max, step, top;
  };
  for (const Case& c : {Case{1, 2.6, 1, 3}, Case{0.3, 1.7, 0.25, 1.75}, Case{0.1, 1.5, 0.125, 1.5},
                        Case{0.75, 0.76, 1, 1}, Case{1, 0.3, 1, 1}, Case{0.07, 0.9, 0.0625, 0.875},
                        Case{0.2, 3.33, 0.25, 3.25}, Case{0.25, 0.375, 0.25, 0.5}}) {
    CAPTURE(c.d);
    CAPTURE(c.q_max);
    const U3Params e = u3_effective(c.d, c.q_max);
    CHECK(e.d == c.step);
    CHECK(e.q_max == c.top);
  }
  // The reported non-monotone case: d = 1, q_max = 2.6 (was Q(2.55) = 3 > Q(2.61) = 2.6).
  CHECK(vec(uniform_u3(leaf({2.55, 2.61, 2.9, 10, -2.61}), scalar(1), scalar(2.6))) ==
        std::vector<double>{3, 3, 3, 3, -3});
}

TEST_CASE("U3: monotone over a dense sweep, at most 2^b - 1 (signed) / 2^b (unsigned) levels, on the grid") {
  const std::vector<std::pair<double, double>> cases = {{1, 2.6}, {0.3, 1.7},  {0.1, 1.5},   {0.07, 0.9}, {0.75, 0.76},
                                                        {1, 0.3}, {0.2, 3.33}, {0.011, 0.5}, {0.45, 0.5}, {0.6, 5.1}};
  for (const auto& [d, q_max] : cases) {
    for (bool signed_ : {true, false}) {
      for (DType dt : {DType::f64, DType::f32}) {
        CAPTURE(d);
        CAPTURE(q_max);
        CAPTURE(signed_);
        const U3Params e = u3_effective(d, q_max);
        const int b = u3_bits(d, q_max, signed_);
        const double n = e.q_max / e.d;
        Variable x(Tensor::arange(-2 * q_max - 1, 2 * q_max + 1, e.d / 64 + 1e-4, dt), false);
        const auto qv =
            vec(uniform_u3(x, Variable(Tensor::full({}, d, dt)), Variable(Tensor::full({}, q_max, dt)), signed_));
        std::set<double> levels;
        for (size_t i = 0; i < qv.size(); ++i) {
          if (i > 0) CHECK(qv[i] >= qv[i - 1]);  // monotone
          const double m = qv[i] / e.d;
          CHECK(m == std::nearbyint(m));  // a multiple of the power-of-two step, exactly
          levels.insert(qv[i]);
        }
        CHECK(*levels.rbegin() == e.q_max);
        CHECK(*levels.begin() == (signed_ ? -e.q_max : 0.0));
        CHECK(double(levels.size()) == (signed_ ? 2 * n + 1 : n + 1));  // the sweep meets every level
        CHECK(double(levels.size()) <= (signed_ ? std::exp2(b) - 1 : std::exp2(b)));
        const int b_min = signed_ ? 2 : 1;  // and b is the least bitwidth that holds them
        if (b > b_min) CHECK(double(levels.size()) > (signed_ ? std::exp2(b - 1) - 1 : std::exp2(b - 1)));
      }
    }
  }
}

TEST_CASE("U3: surrogate gradients w.r.t. x, d and q_max at hand-picked points") {
  // d = 0.3 -> d' = 1/4, q_max = 1.7 -> q' = 7/4. Columns: x, Q, dQ/dx, dQ/dd, dQ/dq_max.
  struct Row {
    double x, q, dx, dd, dq;
  };
  const double d = 0.3, qm = 1.7;
  const std::vector<Row> signed_rows = {
      {0.4, 0.5, 1, (0.5 - 0.4) / d, 0},        // inside: (Q - x)/d with the raw d
      {-1.0, -1.0, 1, 0, 0},                    // on a level
      {-0.61, -0.5, 1, (-0.5 + 0.61) / d, 0},   //
      {0.0, 0.0, 1, 0, 0},                      //
      {1.75, 1.75, 1, 0, 0},                    // |x| = q': still inside
      {1.8, 1.75, 0, (1.75 - 1.7) / d, 1},      // outside: sign(x)(q' - q_max)/d, sign(x)
      {-2.5, -1.75, 0, -(1.75 - 1.7) / d, -1},  //
  };
  const std::vector<Row> unsigned_rows = {
      {-0.5, 0, 0, 0, 0}, {0.0, 0, 1, 0, 0}, {0.4, 0.5, 1, (0.5 - 0.4) / d, 0}, {1.8, 1.75, 0, (1.75 - 1.7) / d, 1}};
  for (bool signed_ : {true, false}) {
    for (const Row& r : signed_ ? signed_rows : unsigned_rows) {
      CAPTURE(r.x);
      Variable x = leaf({r.x}), dv = scalar(d), qv = scalar(qm);
      Variable q = uniform_u3(x, dv, qv, signed_);
      check_vec(vec(q), {r.q});
      sum(q).backward();
      check_vec(vec(x.grad()), {r.dx});
      check_vec(vec(dv.grad()), {r.dd});
      check_vec(vec(qv.grad()), {r.dq});
    }
  }
  // Outside dQ/dd vanishes when q_max is a multiple of d'.
  Variable dv = scalar(0.25), qv = scalar(1.5);
  sum(uniform_u3(leaf({3.0, -4.0}), dv, qv)).backward();
  check_vec(vec(dv.grad()), {0});
  check_vec(vec(qv.grad()), {0});  // sign(3) + sign(-4)
  // f32 inputs: the same factors in single precision.
  Variable xf(Tensor::from_list({0.4, 1.8}, {2}, DType::f32), true);
  Variable df(Tensor::full({1}, d, DType::f32), true), qf(Tensor::full({1}, qm, DType::f32), true);
  Variable yf = uniform_u3(xf, df, qf);
  sum(yf).backward();
  check_vec(vec(yf), {0.5, 1.75}, 1e-6);
  check_vec(vec(df.grad()), {(0.5 - 0.4) / d + (1.75 - 1.7) / d}, 1e-5);
}

TEST_CASE("U3 initialisation (spec 6.5) and parameter clipping (spec 6.4)") {
  // max|w| = 0.3. b = 4: 0.3/7 = 0.0429 -> 2^floor(-4.54) = 1/32; b = 5: 0.3/15 = 0.02 ->
  // 2^ceil(-5.64) = 1/32 (ceil for b > 4); b = 2: 0.3 -> 2^floor(-1.74) = 1/4.
  const Tensor w = Tensor::from_list({0.1, -0.3, 0.05, 0.2}, {4}, DType::f64);
  U3Params p = u3_init_weight(w, 4);
  CHECK(p.d == 1.0 / 32);
  CHECK(p.q_max == 7.0 / 32);
  p = u3_init_weight(w, 5);
  CHECK(p.d == 1.0 / 32);
  CHECK(p.q_max == 15.0 / 32);
  p = u3_init_weight(w, 2);
  CHECK(p.d == 0.25);
  CHECK(p.q_max == 0.25);
  Generator gen(3);
  for (int b = 2; b <= 8; ++b) {
    const Tensor r = Tensor::randn({300}, gen, DType::f64, 0, 0.2);
    const U3Params e = u3_init_weight(r, b);
    CHECK(e.d == std::exp2(std::round(std::log2(e.d))));  // a power of two
    CHECK(u3_bits(e.d, e.q_max) == b);                    // the start corresponds to b bits
    CHECK(u3_effective(e.d, e.q_max).q_max == e.q_max);
    CHECK(u3_bits(u3_init_weight(b).d, u3_init_weight(b).q_max) == b);
    CHECK(u3_bits(u3_init_activation(b).d, u3_init_activation(b).q_max, false) == b);
  }
  CHECK(u3_init_weight(4).d == 0.125);
  CHECK(u3_init_weight(4).q_max == 0.875);
  CHECK(u3_init_activation(4).d == 0.125);
  CHECK(u3_init_activation(4).q_max == 0.125 * 15);  // spec [O]: d = 2^-3, xmax = d (2^4 - 1)
  CHECK_THROWS_AS(u3_init_weight(w, 1), Error);

  auto clip = [](double d, double q, bool signed_) {
    Variable dv = scalar(d), qv = scalar(q);
    u3_clip_parameters(dv, qv, signed_);
    return std::pair<double, double>{dv.item(), qv.item()};
  };
  const double eps = 1e-5, lo = std::exp2(-8);
  CHECK(clip(0.1, 1.0, true) == std::pair<double, double>{0.1, 1.0});  // inside: unchanged
  auto r = clip(2.0, 300.0, true);
  CHECK(r.first == doctest::Approx(1 - eps).epsilon(1e-12));
  CHECK(r.second == doctest::Approx(127 - eps).epsilon(1e-12));
  r = clip(2.0, 300.0, false);
  CHECK(r.second == doctest::Approx(255 - eps).epsilon(1e-12));
  r = clip(1e-4, 1e-4, true);  // both below 2^-8
  CHECK(r.first == doctest::Approx(lo + eps).epsilon(1e-12));
  CHECK(r.second == doctest::Approx(lo + eps).epsilon(1e-12));
  r = clip(0.5, 0.3, true);  // d > q_max: the official min/max exchange them (with the margin)
  CHECK(r.first == doctest::Approx(0.3 - eps).epsilon(1e-12));
  CHECK(r.second == doctest::Approx(0.5 + eps).epsilon(1e-12));
  CHECK(r.first < r.second);
}

TEST_CASE("P3 power-of-two quantizer: rounding of q_min, q_max; monotone; levels within p3_bits") {
  CHECK(p3_bits(0.125, 4) == 4);          // M = 6 magnitudes: 1 + ceil(log2 6)
  CHECK(p3_bits(0.1, 3) == 4);            // rounds to 1/8 and 4
  CHECK(p3_bits(std::exp2(-7), 1) == 4);  // the official b = 4 start: q_min = q_max / 2^(2^3 - 1)
  CHECK(p3_bits(1, 1) == 2);              // M = 1: one bit, b_min 2 for weights
  CHECK(p3_bits(1, 1, false) == 1);
  CHECK(p3_bits(0.125, 0.1) == 2);          // q_max rounds to q_min
  CHECK(p3_bits(1, 2) == 2);                // M = 2
  CHECK(p3_bits(1, 4) == 3);                // M = 3
  CHECK(p3_bits(std::exp2(-8), 127) == 5);  // M = 7 + 8 + 1 = 16
  const std::vector<std::pair<double, double>> cases = {{0.1, 3},   {0.125, 4},  {0.03, 0.7}, {1, 1},
                                                        {0.3, 0.2}, {0.01, 100}, {0.7, 1.5}};
  for (const auto& [lo, hi] : cases) {
    for (bool signed_ : {true, false}) {
      CAPTURE(lo);
      CAPTURE(hi);
      CAPTURE(signed_);
      const double lo_q = std::exp2(std::round(std::log2(lo)));
      const double hi_q = std::max(std::exp2(std::round(std::log2(hi))), lo_q);
      const double m = std::log2(hi_q / lo_q) + 1;
      const int b = p3_bits(lo, hi, signed_);
      // Log-spaced sweep over both signs, with zero.
      std::vector<double> xs{0.0};
      for (double t = std::log2(lo_q) - 3; t <= std::log2(hi_q) + 3; t += 1.0 / 97) xs.push_back(std::exp2(t));
      const size_t half = xs.size();
      for (size_t i = 1; i < half; ++i) xs.push_back(-xs[i]);
      std::sort(xs.begin(), xs.end());
      Variable x(Tensor::from_vector(xs, {int64_t(xs.size())}), false);
      const auto qv = vec(pow2_p3(x, scalar(lo), scalar(hi), signed_));
      std::set<double> levels;
      for (size_t i = 0; i < qv.size(); ++i) {
        if (i > 0) CHECK(qv[i] >= qv[i - 1]);                                                         // monotone
        if (qv[i] != 0) CHECK(std::abs(qv[i]) == std::exp2(std::round(std::log2(std::abs(qv[i])))));  // power of two
        levels.insert(qv[i]);
      }
      CHECK(*levels.rbegin() == hi_q);
      CHECK(double(levels.size()) == (signed_ ? 2 * m : m + 1));  // every level met
      CHECK(double(levels.size()) <= std::exp2(b));
    }
  }
}

TEST_CASE("P3: surrogate gradients w.r.t. x, q_min and q_max at hand-picked points") {
  // q_min = 0.1 -> 1/8 (dq_min'/dq_min = 1.25), q_max = 3 -> 4 (dq_max'/dq_max = 4/3).
  struct Row {
    double x, q, dx, dlo, dhi;
  };
  const std::vector<Row> signed_rows = {
      {0.05, 0.125, 0, 1.25, 0},    // |x| <= q_min': sign(x) q_min'/q_min
      {-0.1, -0.125, 0, -1.25, 0},  //
      {0.0, 0.125, 0, 1.25, 0},     // sign(0) = +1
      {0.7, 0.5, 0.5 / 0.7, 0, 0},  // inside: |Q|/|x|
      {-3.0, -4, 4 / 3.0, 0, 0},    //
      {4.0, 4, 1, 0, 0},            // |x| = q_max': inside
      {5.0, 4, 0, 0, 4 / 3.0},      // outside: sign(x) q_max'/q_max
      {-6.0, -4, 0, 0, -4 / 3.0},   //
  };
  const std::vector<Row> unsigned_rows = {{-1, 0, 0, 0, 0},
                                          {0.0, 0, 0, 0, 0},
                                          {0.05, 0.125, 0, 1.25, 0},
                                          {0.7, 0.5, 0.5 / 0.7, 0, 0},
                                          {5, 4, 0, 0, 4 / 3.0}};
  for (bool signed_ : {true, false}) {
    for (const Row& r : signed_ ? signed_rows : unsigned_rows) {
      CAPTURE(r.x);
      Variable x = leaf({r.x}), lo = scalar(0.1), hi = scalar(3);
      Variable q = pow2_p3(x, lo, hi, signed_);
      check_vec(vec(q), {r.q});
      sum(q).backward();
      check_vec(vec(x.grad()), {r.dx});
      check_vec(vec(lo.grad()), {r.dlo});
      check_vec(vec(hi.grad()), {r.dhi});
    }
  }
}

TEST_CASE("LSQ: values and the step-size gradient with its scale") {
  Variable v = leaf({0.3, -1.0, 5.0}), s = scalar(0.5);
  Variable q = lsq(v, s, 3);  // Q_N = 4, Q_P = 3
  check_vec(vec(q), {0.5, -1.0, 1.5});
  sum(q).backward();
  check_vec(vec(v.grad()), {1, 1, 0});
  // ds = (1 - 0.6) + (-2 + 2) + 3 = 3.4, times g = 1/sqrt(3 * 3).
  check_vec(vec(s.grad()), {3.4 / 3});
  Variable u = leaf({-0.5, 0.74, 9.0}), su = scalar(0.25);
  Variable qu = lsq(u, su, 2, /*signed=*/false);  // Q_N = 0, Q_P = 3
  check_vec(vec(qu), {0, 0.75, 0.75});
  sum(qu).backward();
  // ds = 0 (clipped at -Q_N = 0) + (3 - 2.96) + 3, times 1/sqrt(3 * 3).
  check_vec(vec(su.grad()), {(0 + 0.04 + 3) / 3});
  CHECK(lsq_init_step(Tensor::from_list({1, -1, 1, -1}, {4}), 3) == doctest::Approx(2 / std::sqrt(3.0)));
  CHECK_THROWS_WITH_AS(lsq(v, scalar(0), 3), doctest::Contains("lsq: step size s must be positive"), Error);
  CHECK_THROWS_AS(lsq(v, scalar(-0.5), 3), Error);
}

TEST_CASE("LSQ on activations: the gradient scale counts features per sample, not the batch") {
  // One sample of 5 features, unsigned 2 bits (Q_P = 3), s = 0.25. Raw per-sample ds:
  // 0 (x < 0) + (round(1.2) - 1.2) + (3 - 2.96) + 3 (clipped) + (0 - 0.2) = -0.2 + 0.04 + 3 - 0.2.
  const std::vector<double> sample = {-0.5, 0.3, 0.74, 9.0, 0.05};
  const double raw = -0.2 + 0.04 + 3 - 0.2;
  auto ds = [&](int batch, bool batched) {
    std::vector<double> data;
    for (int i = 0; i < batch; ++i) data.insert(data.end(), sample.begin(), sample.end());
    Variable a(Tensor::from_vector(data, {batch, 5}), true), s = scalar(0.25);
    sum(lsq(a, s, 2, false, batched)).backward();
    return s.grad().item();
  };
  const double one = ds(1, true), eight = ds(8, true);
  CHECK(one == doctest::Approx(raw / std::sqrt(5 * 3.0)));
  // 8 identical samples sum 8 identical contributions with the same scale g = 1/sqrt(5 Q_P).
  // (The batch-counting scale g = 1/sqrt(40 Q_P) gives sqrt(8) times, not 8 times.)
  CHECK(eight == doctest::Approx(8 * one));
  CHECK(ds(3, true) == doctest::Approx(3 * one));
  // Without `batched`, N = numel (weights): the old, batch-dependent scale.
  CHECK(ds(1, false) == doctest::Approx(one));
  CHECK(ds(8, false) == doctest::Approx(std::sqrt(8.0) * one));
  // Values do not depend on the flag.
  Variable a(Tensor::from_vector(sample, {1, 5}), false);
  CHECK(allclose(lsq(a, scalar(0.25), 2, false, true).data(), lsq(a, scalar(0.25), 2, false).data(), 0, 0));
  CHECK_THROWS_AS(lsq(Variable(Tensor::scalar(1.0, DType::f64)), scalar(0.25), 2, false, true), Error);
}

TEST_CASE("PACT: clip at a learned alpha, Distiller's gradients") {
  Variable x = leaf({-0.5, 0.3, 0.7, 2.0, 1.5}), alpha = scalar(1.0);
  Variable q = pact(x, alpha, 2);
  check_vec(vec(q), {0, 1.0 / 3, 2.0 / 3, 1, 1});
  sum(q).backward();
  check_vec(vec(x.grad()), {0, 1, 1, 0, 0});
  check_vec(vec(alpha.grad()), {2});  // two inputs >= alpha
}

TEST_CASE("signed PACT: symmetric clip at alpha, 2^(k-1) - 1 levels a side, PACT's gradients on each side") {
  // alpha = 3, k = 3: n = 3 levels a side, step alpha / n = 1, so the codes are round(clip(x, -3, 3)),
  // half to even (-0.5 -> 0, 0.5 -> 0, 2.5 -> 2, -1.5 -> -2).
  Variable x = leaf({-4, -3, -2.5, -1.5, -0.5, 0, 0.5, 1.2, 2.5, 3, 7}), alpha = scalar(3);
  Variable q = signed_pact(x, alpha, 3);
  check_vec(vec(q), {-3, -3, -2, -2, 0, 0, 0, 1, 2, 3, 3});
  // The surrogate, with distinct upstream gradients c_i = i + 1 (loss sum c q):
  //   dx = c 1[-alpha < x < alpha];  dalpha = sum c (1[x >= alpha] - 1[x <= -alpha]) = -1 - 2 + 10 + 11.
  const Variable c(Tensor::from_list({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {11}, DType::f64));
  sum(mul(q, c)).backward();
  check_vec(vec(x.grad()), {0, 0, 3, 4, 5, 6, 7, 8, 9, 0, 0});
  check_vec(vec(alpha.grad()), {18});
  // k = 2: one level a side (-alpha, 0, alpha); alpha = 0.8: step 0.8, round(x / 0.8).
  Variable y = leaf({-1.0, -0.5, -0.3, 0.3, 0.41, 0.79, 2.0}), a2 = scalar(0.8);
  check_vec(vec(signed_pact(y, a2, 2)), {-0.8, -0.8, 0, 0, 0.8, 0.8, 0.8});
  // k = 4: 15 levels, every output on the grid alpha m / 7, |m| <= 7.
  Variable z = leaf({-9, -2.2, -1.0, -0.1, 0.33, 1.9, 4.4, 5.0}), a4 = scalar(4.9);
  for (double v : vec(signed_pact(z, a4, 4))) {
    const double m = v * 7 / 4.9;
    CHECK(m == doctest::Approx(std::nearbyint(m)).epsilon(1e-12));
    CHECK(std::abs(m) <= 7 + 1e-9);
  }
  CHECK_THROWS_AS(signed_pact(z, a4, 1), Error);  // no level beside the sign
  CHECK_THROWS_AS(signed_pact(z, scalar(0), 4), Error);
}

TEST_CASE("quantizer errors") {
  Variable w = leaf({0.1});
  CHECK_THROWS_AS(wrpn_weight(w, 1), Error);
  CHECK_THROWS_AS(dorefa_weight(w, 0), Error);
  // NaN inputs stay NaN.
  CHECK(std::isnan(vec(uniform_u3(leaf({NAN}), scalar(1), scalar(2)))[0]));
  CHECK(std::isnan(vec(uniform_u3(leaf({NAN}), scalar(1), scalar(2), false))[0]));
  CHECK(std::isnan(vec(pow2_p3(leaf({NAN}), scalar(1), scalar(2)))[0]));
  CHECK(std::isnan(vec(uniform_fixed(leaf({NAN}), 0.3, 2))[0]));
  CHECK_THROWS_AS(uniform_u3(w, scalar(-1), scalar(1)), Error);
  CHECK_THROWS_AS(uniform_u3(w, scalar(1), scalar(0)), Error);
  CHECK_THROWS_AS(u3_bits(0, 1), Error);
  CHECK_THROWS_AS(pow2_p3(w, scalar(0), scalar(1)), Error);
  CHECK_THROWS_AS(p3_bits(1, -1), Error);
  CHECK_THROWS_AS(pact(w, scalar(0), 4), Error);
}
