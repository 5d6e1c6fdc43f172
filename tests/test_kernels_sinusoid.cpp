// The sinusoid kernels (SinReQ / WaveQ's per-weight pass) pinned to their std::sin `_ref` twins over
// the regularized layers' real sizes and odd tails, at the slopes and offsets the regularizers use.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include "core/kernels/sinusoid.h"
#include "core/parallel.h"
#include "core/random.h"
#include "kernel_test_util.h"

using namespace lowbit;

namespace {

template <class T>
std::vector<T> weights(int64_t n, double stddev, uint64_t seed) {
  Generator gen(seed);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(gen.normal() * stddev);
  return v;
}

// Element counts: ResNet-20's regularized convs (16·16·9, 32·16·9, 32·32·9, 64·64·9, the 1×1
// shortcuts 32·16, 64·32), LeNet-5's fc1 (800·500), and odd tails around the block (256) and chunk
// (16,384) sizes.
const int64_t kSizes[] = {1, 7, 255, 257, 512, 2048, 2304, 4608, 9216, 16383, 16385, 36864, 36871, 400000};

// (a, b) as the regularizers build them: a = π / Δ / s (WRPN grid, Δ = 1 / (2^(k−1) − 1), s = max|w|
// ≈ 0.3 … 1), b = π c / Δ (DoReFa's half-step offset), and WaveQ's real-valued periods.
struct Slope {
  double a, b;
};
const Slope kSlopes[] = {{std::numbers::pi * 1 / 0.3, 0.0},
                         {std::numbers::pi * 3, 0.0},
                         {std::numbers::pi * 127 / 0.25, 0.0},
                         {std::numbers::pi * 7.5, std::numbers::pi * 7.5},
                         {std::numbers::pi * (std::exp2(4.64) - 1) / 0.4, 0.0},
                         {std::numbers::pi * (std::exp2(8.0) - 1) / 0.05, 0.0}};

template <class T>
void check_pair(int64_t n, double stddev, Slope sl, double tol_sum, double tol_dx) {
  const auto x = weights<T>(n, stddev, uint64_t(n) * 31 + 7);
  const double fwd = kernels::sin2_sum(n, x.data(), sl.a, sl.b);
  const double fwd_ref = kernels::sin2_sum_ref(n, x.data(), sl.a, sl.b);
  CHECK(std::fabs(fwd - fwd_ref) <= tol_sum * std::max(1.0, std::fabs(fwd_ref)));
  std::vector<T> dx(n), dx_ref(n);
  const double g = 0.37;
  const double da = kernels::sin2_backward(n, x.data(), sl.a, sl.b, g, dx.data());
  const double da_ref = kernels::sin2_backward_ref(n, x.data(), sl.a, sl.b, g, dx_ref.data());
  double scale = 0;
  for (T v : x) scale += std::fabs(double(v));
  CHECK(std::fabs(da - da_ref) <= tol_sum * std::max(1.0, scale));
  CHECK(test::rel_err(dx, dx_ref) <= tol_dx);
}

}  // namespace

TEST_CASE("sin_fast equals std::sin to 1e-15 over the reduction's range, and std::sin outside it") {
  std::vector<double> v;
  for (double x = -50; x <= 50; x += 0.00731) v.push_back(x);  // many periods, both signs
  const double pi = std::numbers::pi;
  for (int k = -1000; k <= 1000; k += 37)  // near multiples of π/2, where the reduction switches
    for (double e : {-1e-9, 0.0, 1e-9}) v.push_back(k * pi / 2 + e);
  for (double x : {1e5, -3.3e6, 2.0e8, 2.1e8, -2.2e8, 1e12}) v.push_back(x);  // around the limit 2^26 π
  std::vector<double> out(v.size());
  kernels::sin_fast(int64_t(v.size()), v.data(), out.data());
  double worst = 0;
  for (size_t i = 0; i < v.size(); ++i) worst = std::max(worst, std::fabs(out[i] - std::sin(v[i])));
  CHECK(worst < 1e-15);
  MESSAGE("max |sin_fast - std::sin| = " << worst);

  // Non-finite input: the block falls back to std::sin, so NaN comes out as NaN.
  std::vector<double> special = {0.5, std::numeric_limits<double>::quiet_NaN(),
                                 std::numeric_limits<double>::infinity()};
  std::vector<double> so(special.size());
  kernels::sin_fast(3, special.data(), so.data());
  CHECK(so[0] == doctest::Approx(std::sin(0.5)).epsilon(1e-15));
  CHECK(std::isnan(so[1]));
  CHECK(std::isnan(so[2]));
}

TEST_CASE("sin2_sum / sin2_backward equal their _ref twins over real layer sizes and odd tails, any thread count") {
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int64_t n : kSizes)
      for (const Slope& sl : kSlopes) {
        CAPTURE(threads);
        CAPTURE(n);
        CAPTURE(sl.a);
        check_pair<float>(n, 0.1, sl, 1e-12, 1e-6);
        check_pair<double>(n, 0.1, sl, 1e-12, 1e-13);
      }
  }
  set_num_threads(saved);
}

TEST_CASE("sin2 kernels: results do not depend on the thread count (fixed chunks)") {
  const int64_t n = 100003;
  const auto x = weights<float>(n, 0.2, 5);
  std::vector<float> dx1(n), dx2(n);
  const int saved = num_threads();
  set_num_threads(1);
  const double s1 = kernels::sin2_sum(n, x.data(), 31.4, 0.2);
  const double d1 = kernels::sin2_backward(n, x.data(), 31.4, 0.2, 1.0, dx1.data());
  set_num_threads(2);
  const double s2 = kernels::sin2_sum(n, x.data(), 31.4, 0.2);
  const double d2 = kernels::sin2_backward(n, x.data(), 31.4, 0.2, 1.0, dx2.data());
  set_num_threads(saved);
  CHECK(s1 == s2);
  CHECK(d1 == d2);
  CHECK(test::bit_equal(dx1, dx2));
}

TEST_CASE("sin2 kernels on hand-picked values: zeros on the levels, 1 at the thresholds, NaN propagates") {
  // a = π / Δ with Δ = 1/3 (WRPN 3 bits): levels m/3 give sin^2 = 0, thresholds (m + 1/2)/3 give 1.
  const double a = std::numbers::pi * 3;
  const std::vector<double> on_levels = {0.0, 1.0 / 3, -2.0 / 3, 1.0};
  const std::vector<double> thresholds = {0.5 / 3, -1.5 / 3, 2.5 / 3};
  CHECK(kernels::sin2_sum(4, on_levels.data(), a, 0.0) == doctest::Approx(0.0).epsilon(1e-28));
  CHECK(kernels::sin2_sum(3, thresholds.data(), a, 0.0) == doctest::Approx(3.0).epsilon(1e-14));
  std::vector<double> dx(3);
  // d/dx sin^2(a x) = a sin(2 a x): 0 at the thresholds (maxima).
  kernels::sin2_backward(3, thresholds.data(), a, 0.0, 1.0, dx.data());
  for (double d : dx) CHECK(std::fabs(d) < 1e-12);
  const std::vector<float> with_nan = {0.1f, std::numeric_limits<float>::quiet_NaN()};
  CHECK(std::isnan(kernels::sin2_sum(2, with_nan.data(), a, 0.0)));
}
