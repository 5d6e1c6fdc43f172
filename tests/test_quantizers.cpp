// Quantizers: forward values against the spec's formulas on hand-picked inputs, and backward
// against the specified surrogate gradients (spec §6, §8).
#include <doctest/doctest.h>

#include <cmath>
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
  Generator gen(5);
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

TEST_CASE("Uhlich U3 uniform quantizer: values, surrogate gradients, inferred bits") {
  Variable x = leaf({0.3, -0.62, 2.0}), d = scalar(0.25), qmax = scalar(1.0);
  Variable q = uniform_u3(x, d, qmax);
  check_vec(vec(q), {0.25, -0.5, 1.0});
  sum(q).backward();
  check_vec(vec(x.grad()), {1, 1, 0});
  // dQ/dd = (Q - x)/d inside: (0.25-0.3)/0.25 + (-0.5+0.62)/0.25 = 0.28; dQ/dq_max = sign(x) outside.
  check_vec(vec(d.grad()), {0.28});
  check_vec(vec(qmax.grad()), {1});
  // |dQ/dd| <= 1/2 inside, for any x.
  Generator gen(2);
  Variable xs(Tensor::randn({1000}, gen, DType::f64), false);
  Variable d2 = scalar(0.1), q2 = scalar(10);
  Variable y = uniform_u3(xs, d2, q2);
  const auto yv = vec(y), xv = vec(xs);
  for (size_t i = 0; i < yv.size(); ++i) CHECK(std::abs((yv[i] - xv[i]) / 0.1) <= 0.5 + 1e-12);
  CHECK(u3_bits(0.25, 1.75) == 4);  // log2(8) + 1
  CHECK(u3_bits(1, 1) == 2);
  CHECK(u3_bits(0.25, 1.8) == 5);
  CHECK(u3_bits(0.1, 1.5, /*signed=*/false) == 4);  // log2(16)
  CHECK(u3_bits(1, 0.5) == 2);                      // b_min for weights
  // Unsigned: negative inputs clip to 0 with zero gradient.
  Variable xa = leaf({-1, 0.26});
  Variable qa = uniform_u3(xa, scalar(0.25), scalar(1.0), false);
  check_vec(vec(qa), {0, 0.25});
  sum(qa).backward();
  check_vec(vec(xa.grad()), {0, 1});
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
}

TEST_CASE("PACT: clip at a learned alpha, Distiller's gradients") {
  Variable x = leaf({-0.5, 0.3, 0.7, 2.0, 1.5}), alpha = scalar(1.0);
  Variable q = pact(x, alpha, 2);
  check_vec(vec(q), {0, 1.0 / 3, 2.0 / 3, 1, 1});
  sum(q).backward();
  check_vec(vec(x.grad()), {0, 1, 1, 0, 0});
  check_vec(vec(alpha.grad()), {2});  // two inputs >= alpha
}

TEST_CASE("quantizer errors") {
  Variable w = leaf({0.1});
  CHECK_THROWS_AS(wrpn_weight(w, 1), Error);
  CHECK_THROWS_AS(dorefa_weight(w, 0), Error);
  CHECK_THROWS_AS(uniform_u3(w, scalar(-1), scalar(1)), Error);
  CHECK_THROWS_AS(pact(w, scalar(0), 4), Error);
}
