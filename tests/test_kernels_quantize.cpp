// Fused fake-quantization kernels pinned to their `_ref` twins, and the clip_quantize op pinned to
// the composed clamp -> scale -> round_ste -> rescale chain it replaces (values bit for bit, and the
// straight-through gradient g 1[lo <= x <= hi]).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "autograd/ops.h"
#include "core/kernels/cpu.h"
#include "core/kernels/quantize.h"
#include "core/math.h"
#include "core/parallel.h"
#include "core/random.h"
#include "quant/quantizers.h"
#include "quant/ste.h"

using namespace lowbit;

namespace {

std::vector<float> inputs(int64_t n, uint64_t seed) {
  Generator gen(seed);
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(gen.normal() * 0.8 + 0.3);
  // Exact bounds, grid points, half-way points (round half to even), specials.
  const float special[] = {0.0f,
                           1.0f,
                           -0.0f,
                           0.5f / 15,
                           1.5f / 15,
                           2.5f / 15,
                           7.5f / 15,
                           1.0f + 1e-7f,
                           -1e-7f,
                           std::numeric_limits<float>::quiet_NaN(),
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity()};
  for (size_t i = 0; i < sizeof(special) / sizeof(float) && int64_t(i * 7) < n; ++i) v[i * 7] = special[i];
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

}  // namespace

TEST_CASE("clip_quantize kernels equal their _ref twins over odd tails, both paths, any thread count") {
  for (bool simd : {true, false}) {
    const kernels::Avx512Guard avx512(simd);
    for (int64_t n : {0, 1, 15, 16, 17, 31, 33, 100, 1000, 200003}) {
      const auto x = inputs(n, 10 + n), dy = inputs(n, 20 + n);
      for (float levels : {1.0f, 3.0f, 15.0f, 255.0f}) {
        std::vector<float> y(n), y_ref(n), dx(n), dx_ref(n);
        kernels::clip_quantize_forward(n, x.data(), 0.0f, 1.0f, levels, 1.0f / levels, y.data());
        kernels::clip_quantize_forward_ref(n, x.data(), 0.0f, 1.0f, levels, 1.0f / levels, y_ref.data());
        CHECK(same_bits(y, y_ref));
        kernels::clip_mask_backward(n, x.data(), dy.data(), 0.0f, 1.0f, dx.data());
        kernels::clip_mask_backward_ref(n, x.data(), dy.data(), 0.0f, 1.0f, dx_ref.data());
        CHECK(same_bits(dx, dx_ref));
        set_num_threads(1);
        std::vector<float> y1(n);
        kernels::clip_quantize_forward(n, x.data(), 0.0f, 1.0f, levels, 1.0f / levels, y1.data());
        set_num_threads(2);
        CHECK(same_bits(y, y1));
      }
    }
  }
}

TEST_CASE("the _ref twin follows the definition on hand-picked values") {
  const std::vector<float> x = {-0.2f, 0.0f, 0.1f, 0.5f / 3, 0.5f, 2.5f / 3, 1.0f, 3.0f};
  std::vector<float> y(x.size()), dx(x.size());
  const std::vector<float> dy(x.size(), 2.0f);
  kernels::clip_quantize_forward_ref(int64_t(x.size()), x.data(), 0.0f, 1.0f, 3.0f, 1.0f / 3, y.data());
  // Levels {0, 1/3, 2/3, 1}; 0.5/3 * 3 = 0.5 rounds to even (0); 2.5/3 * 3 = 2.5 rounds to 2.
  const std::vector<float> expect = {0, 0, 0, 0, 2.0f / 3, 2.0f / 3, 1, 1};
  for (size_t i = 0; i < x.size(); ++i) CHECK(y[i] == doctest::Approx(expect[i]).epsilon(1e-6));
  kernels::clip_mask_backward_ref(int64_t(x.size()), x.data(), dy.data(), 0.0f, 1.0f, dx.data());
  const std::vector<float> mask = {0, 1, 1, 1, 1, 1, 1, 0};
  for (size_t i = 0; i < x.size(); ++i) CHECK(dx[i] == 2.0f * mask[i]);
}

TEST_CASE(
    "clip_quantize equals the composed chain, values bit for bit, gradients = the surrogate, any layout and dtype") {
  for (DType dt : {DType::f32, DType::f64}) {
    for (MemoryFormat fmt : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
      Generator gen(5);
      Tensor base = Tensor::randn({3, 5, 7, 6}, gen, dt, 0.4, 0.7).contiguous(fmt);
      for (double n : {1.0, 7.0, 15.0}) {
        Variable a(base, true), b(base, true);
        Variable fused = quant::clip_quantize(a, 0.0, 1.0, n);
        Variable composed = mul(quant::round_ste(mul(clamp(b, 0.0, 1.0), n)), 1.0 / n);
        CHECK(fused.data().to_vector() == composed.data().to_vector());
        Tensor g = Tensor::randn({3, 5, 7, 6}, gen, dt);  // row-major: a layout different from fmt
        fused.backward(Variable(g));
        composed.backward(Variable(g));
        // Exactly the specified surrogate g 1[0 <= x <= 1]; the composed chain multiplies by 1/n
        // then n, so it matches up to that rounding.
        const auto ga = a.grad().data().to_vector(), gb = b.grad().data().to_vector();
        const auto gv = g.to_vector(), xv = base.to_vector();
        for (size_t i = 0; i < ga.size(); ++i) {
          CHECK(ga[i] == ((xv[i] >= 0 && xv[i] <= 1) ? gv[i] : 0.0));
          CHECK(ga[i] == doctest::Approx(gb[i]).epsilon(1e-6));
        }
      }
    }
  }
}

TEST_CASE("clip_quantize double backward: the gradient is linear in g with the same mask") {
  Generator gen(6);
  Variable x(Tensor::randn({40}, gen, DType::f64, 0.5, 0.8), true);
  Variable g(Tensor::randn({40}, gen, DType::f64), true);
  Variable y = quant::clip_quantize(x, 0.0, 1.0, 3.0);
  auto gx = grad({y}, {x}, {g}, true, true)[0];
  Variable v(Tensor::randn({40}, gen, DType::f64));
  auto gg = grad({gx}, {g}, {v})[0];
  const auto xv = x.data().to_vector(), vv = v.data().to_vector(), ggv = gg.data().to_vector();
  for (size_t i = 0; i < xv.size(); ++i) CHECK(ggv[i] == ((xv[i] >= 0 && xv[i] <= 1) ? vv[i] : 0.0));
  CHECK_THROWS_AS(quant::clip_quantize(x, 1.0, 0.0, 3.0), Error);
}

// ---- Uhlich's uniform grid (uniform_u3's fused kernels) ----

TEST_CASE(
    "uniform_grid_forward / backward: fast == _ref bit for bit, and the definition, on ResNet-20 shapes and tails") {
  Generator gen(9);
  // ResNet-20's first-stage activations at batch 128 (128 x 16 x 32 x 32), a stage-3 one at batch 7,
  // and odd tails around the SIMD width and the sums' chunk (2^15).
  for (int64_t n : {int64_t(1), int64_t(17), int64_t(32769), int64_t(7 * 64 * 8 * 8), int64_t(128) * 16 * 32 * 32})
    for (bool signed_ : {true, false}) {
      CAPTURE(n);
      CAPTURE(signed_);
      const kernels::UniformGrid g{0.125, 0.875, signed_};  // 7 steps a side (U3 at 4 bits)
      std::vector<float> x(static_cast<size_t>(n)), dy(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        // values on the levels, on the half-steps (ties), at the range, outside it, and in between
        const double u = gen.uniform() * 2.4 - 1.2;
        x[size_t(i)] = i % 7 == 0 ? float(std::round(u * 16) / 16) : float(u);
        dy[size_t(i)] = float(gen.uniform() - 0.5);
      }
      std::vector<float> y(x.size()), y_ref(x.size()), dx(x.size()), dx_ref(x.size());
      kernels::uniform_grid_forward(g, n, x.data(), y.data());
      kernels::uniform_grid_forward_ref(g, n, x.data(), y_ref.data());
      CHECK(std::memcmp(y.data(), y_ref.data(), y.size() * 4) == 0);
      const kernels::UniformGridSums s = kernels::uniform_grid_backward(g, n, x.data(), dy.data(), dx.data());
      const kernels::UniformGridSums s_ref =
          kernels::uniform_grid_backward_ref(g, n, x.data(), dy.data(), dx_ref.data());
      CHECK(std::memcmp(dx.data(), dx_ref.data(), dx.size() * 4) == 0);
      CHECK(s.inside == s_ref.inside);
      CHECK(s.outside == s_ref.outside);
      {  // the portable path too
        kernels::Avx512Guard portable(false);
        std::vector<float> yp(x.size()), dxp(x.size());
        kernels::uniform_grid_forward(g, n, x.data(), yp.data());
        const kernels::UniformGridSums sp = kernels::uniform_grid_backward(g, n, x.data(), dy.data(), dxp.data());
        CHECK(std::memcmp(y.data(), yp.data(), y.size() * 4) == 0);
        CHECK(std::memcmp(dx.data(), dxp.data(), dx.size() * 4) == 0);
        CHECK((sp.inside == s.inside && sp.outside == s.outside));
      }
      // The definition, element by element, and the sums in one plain double loop.
      double inside = 0, outside = 0;
      int64_t bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double v = x[size_t(i)], a = signed_ ? std::fabs(v) : v, sg = signed_ ? (v > 0) - (v < 0) : 1;
        const double want = a < 0 ? 0 : a <= 0.875 ? sg * 0.125 * std::floor(a * 8 + 0.5) : sg * 0.875;
        bad += double(y[size_t(i)]) != want;
        const bool in = a >= 0 && a <= 0.875;
        bad += dx[size_t(i)] != (in ? dy[size_t(i)] : 0.0f);
        if (in) inside += double(dy[size_t(i)]) * (want - v);
        if (a > 0.875) outside += double(dy[size_t(i)]) * sg;
      }
      CHECK(bad == 0);
      CHECK(s.inside == doctest::Approx(inside).epsilon(1e-12));
      CHECK(s.outside == doctest::Approx(outside).epsilon(1e-12));
    }
}

TEST_CASE("pow2_grid_forward / backward: fast == _ref bit for bit, and the definition, on ResNet-20 shapes and tails") {
  Generator gen(11);
  for (int64_t n : {int64_t(1), int64_t(17), int64_t(32769), int64_t(7 * 64 * 8 * 8), int64_t(128) * 16 * 32 * 32})
    for (bool signed_ : {true, false}) {
      CAPTURE(n);
      CAPTURE(signed_);
      const kernels::Pow2Grid g{std::ldexp(1.0, -7), 1.0, signed_};  // P3 at 4 bits: 8 octaves
      std::vector<float> x(static_cast<size_t>(n)), dy(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        // log-uniform magnitudes over the range and beyond, both signs; every 5th next to sqrt(2) 2^k
        const double mag = std::exp2(gen.uniform() * 12 - 10);
        double v = gen.uniform() < 0.5 ? -mag : mag;
        if (i % 5 == 0) {
          const float r = float(std::sqrt(2.0) * std::exp2(std::floor(gen.uniform() * 10 - 8)));
          v = double(i % 10 == 0 ? std::nextafter(r, 0.0f) : std::nextafter(r, 10.0f));
        }
        if (i % 97 == 0) v = 0;
        x[size_t(i)] = float(v);
        dy[size_t(i)] = float(gen.uniform() - 0.5);
      }
      std::vector<float> y(x.size()), y_ref(x.size()), dx(x.size()), dx_ref(x.size());
      kernels::pow2_grid_forward(g, n, x.data(), y.data());
      kernels::pow2_grid_forward_ref(g, n, x.data(), y_ref.data());
      CHECK(std::memcmp(y.data(), y_ref.data(), y.size() * 4) == 0);
      const auto s = kernels::pow2_grid_backward(g, n, x.data(), dy.data(), dx.data());
      const auto s_ref = kernels::pow2_grid_backward_ref(g, n, x.data(), dy.data(), dx_ref.data());
      CHECK(std::memcmp(dx.data(), dx_ref.data(), dx.size() * 4) == 0);
      CHECK((s.low == s_ref.low && s.high == s_ref.high));
      {
        kernels::Avx512Guard portable(false);
        std::vector<float> yp(x.size()), dxp(x.size());
        kernels::pow2_grid_forward(g, n, x.data(), yp.data());
        const auto sp = kernels::pow2_grid_backward(g, n, x.data(), dy.data(), dxp.data());
        CHECK(std::memcmp(y.data(), yp.data(), y.size() * 4) == 0);
        CHECK(std::memcmp(dx.data(), dxp.data(), dx.size() * 4) == 0);
        CHECK((sp.low == s.low && sp.high == s.high));
      }
      // The definition: the nearest power of two in log scale (no tie: sqrt 2 is irrational).
      double low = 0, high = 0;
      int64_t bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double v = x[size_t(i)], a = std::fabs(v), sg = v >= 0 ? 1 : -1;
        if (!signed_ && v <= 0) {
          bad += y[size_t(i)] != 0 || dx[size_t(i)] != 0;
          continue;
        }
        int e = 0;
        const double m = 2 * std::frexp(a, &e);  // a = m 2^(e-1), m in [1, 2)
        const double p = std::ldexp(1.0, (e - 1) + (m * m > 2 ? 1 : 0));
        const double want = a <= g.lo ? sg * g.lo : a > g.hi ? sg * g.hi : sg * p;
        bad += double(y[size_t(i)]) != want;
        const bool mid = a > g.lo && a <= g.hi;
        bad += dx[size_t(i)] != (mid ? dy[size_t(i)] * float(p / a) : 0.0f);
        if (a <= g.lo) low += double(dy[size_t(i)]) * sg;
        if (a > g.hi) high += double(dy[size_t(i)]) * sg;
      }
      CHECK(bad == 0);
      CHECK(s.low == doctest::Approx(low).epsilon(1e-12));
      CHECK(s.high == doctest::Approx(high).epsilon(1e-12));
    }
}

// ---- The learned-step grid (LSQ, MSQE: step_quantize's kernels) ----

TEST_CASE(
    "step_quantize_forward / backward: fast == _ref bit for bit, and the definition, on MobileNet and ResNet-20 "
    "shapes and tails") {
  Generator gen(13);
  // LSQ's signed 4-bit grid on a power-of-two step (exact ties), MSQE's unsigned 8-bit activations,
  // a ternary grid.
  const kernels::StepGrid grids[] = {{0.125, -8, 7}, {0.02, 0, 255}, {0.3, -1, 1}};
  // MobileNet v1 (CIFAR)'s first activation at batch 128 (128 x 32 x 32 x 32), a ResNet-20 stage-3
  // one at batch 7, and odd tails around the SIMD width and the sums' chunk (2^15).
  for (int64_t n : {int64_t(1), int64_t(17), int64_t(32769), int64_t(7 * 64 * 8 * 8), int64_t(128) * 32 * 32 * 32})
    for (const kernels::StepGrid& g : grids) {
      CAPTURE(n);
      CAPTURE(g.hi);
      std::vector<float> x(static_cast<size_t>(n)), dy(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        // over the code range and beyond it both ways; every 3rd on a half-step (a tie), every 11th a level
        const double u = g.lo - 3 + gen.uniform() * (g.hi - g.lo + 6);
        const double v = i % 3 == 0 ? (std::floor(u) + 0.5) : i % 11 == 0 ? std::round(u) : u;
        x[size_t(i)] = float(v * g.step);
        dy[size_t(i)] = float(gen.uniform() - 0.5);
      }
      std::vector<float> y(x.size()), y_ref(x.size()), dx(x.size()), dx_ref(x.size());
      kernels::step_quantize_forward(g, n, x.data(), y.data());
      kernels::step_quantize_forward_ref(g, n, x.data(), y_ref.data());
      CHECK(same_bits(y, y_ref));
      const auto s = kernels::step_quantize_backward(g, n, x.data(), dy.data(), dx.data());
      const auto s_ref = kernels::step_quantize_backward_ref(g, n, x.data(), dy.data(), dx_ref.data());
      CHECK(same_bits(dx, dx_ref));
      CHECK((s.codes == s_ref.codes && s.inside == s_ref.inside));
      {  // the portable path too
        kernels::Avx512Guard portable(false);
        std::vector<float> yp(x.size()), dxp(x.size());
        kernels::step_quantize_forward(g, n, x.data(), yp.data());
        const auto sp = kernels::step_quantize_backward(g, n, x.data(), dy.data(), dxp.data());
        CHECK(same_bits(y, yp));
        CHECK(same_bits(dx, dxp));
        CHECK((sp.codes == s.codes && sp.inside == s.inside));
      }
      // The definition: u = x / step in float, r the nearest integer (ties to even) clamped.
      double codes = 0, inside = 0;
      int64_t bad = 0, ties = 0;
      const float step = float(g.step);
      for (int64_t i = 0; i < n; ++i) {
        const float u = x[size_t(i)] / step;
        const double fl = std::floor(double(u)), frac = double(u) - fl;
        const double nearest = frac < 0.5 ? fl : frac > 0.5 ? fl + 1 : (std::fmod(fl, 2.0) == 0 ? fl : fl + 1);
        ties += frac == 0.5;
        const double r = std::min(std::max(nearest, g.lo), g.hi);
        bad += y[size_t(i)] != float(r) * step;
        const bool in = u >= g.lo && u <= g.hi;
        bad += dx[size_t(i)] != (in ? dy[size_t(i)] : 0.0f);
        codes += double(dy[size_t(i)]) * r;
        if (in) inside += double(dy[size_t(i)]) * double(u);
      }
      CHECK(bad == 0);
      if (n > 100) CHECK(ties > 0);
      CHECK(s.codes == doctest::Approx(codes).epsilon(1e-12));
      CHECK(s.inside == doctest::Approx(inside).epsilon(1e-12));
    }
}

TEST_CASE("step_quantize kernels: NaN and infinities, and the grid's checks") {
  const kernels::StepGrid g{0.5, -4, 3};
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {nan, inf, -inf, 1.25f, -0.25f};  // 1.25 / 0.5 = 2.5: a tie, to 2
  const std::vector<float> dy = {1, 1, 1, 1, 1};
  for (bool simd : {true, false}) {
    kernels::Avx512Guard guard(simd);
    std::vector<float> y(x.size()), dx(x.size());
    kernels::step_quantize_forward(g, int64_t(x.size()), x.data(), y.data());
    CHECK(std::isnan(y[0]));
    CHECK(y[1] == 1.5f);
    CHECK(y[2] == -2.0f);
    CHECK(y[3] == 1.0f);
    CHECK((y[4] == 0.0f && std::signbit(y[4])));  // nearbyint(-0.5) = -0
    const auto s = kernels::step_quantize_backward(g, int64_t(x.size()), x.data(), dy.data(), dx.data());
    CHECK(dx == std::vector<float>{0, 0, 0, 1, 1});  // NaN and the infinities are outside
    CHECK(std::isnan(s.codes));
    CHECK(s.inside == doctest::Approx(2.5 - 0.5));
  }
  std::vector<float> y(1);
  const float one = 1;
  CHECK_THROWS_AS(kernels::step_quantize_forward({0.0, -1, 1}, 1, &one, y.data()), Error);
  CHECK_THROWS_AS(kernels::step_quantize_forward({-0.5, -1, 1}, 1, &one, y.data()), Error);
  CHECK_THROWS_AS(kernels::step_quantize_forward({0.5, 1, -1}, 1, &one, y.data()), Error);
  CHECK_THROWS_AS(kernels::step_quantize_forward({0.5, -1.5, 1}, 1, &one, y.data()), Error);
}

namespace {

// The compositions step_quantize replaces: MSQE's (d r with r constant, plus a zero-valued term whose
// gradient is the STE mask) and LSQ's (round_ste(clamp(x / s, lo, hi)) s).
Variable msqe_composed(const Variable& x, const Variable& d, double lo, double hi) {
  const Tensor u = math::div(x.data(), Tensor::full({}, d.item(), x.dtype()));
  const Tensor r = math::clamp(math::round(u), lo, hi);
  const Tensor mask = math::mul(math::ge(u, lo), math::le(u, hi));
  const Variable q = mul(Variable(r), reshape(d, {}));
  return add(q, quant::straight_through(mul(x, Variable(mask)), Tensor::zeros(x.shape(), x.dtype())));
}
Variable lsq_composed(const Variable& x, const Variable& s, double lo, double hi) {
  return mul(quant::round_ste(clamp(div(x, s), lo, hi)), s);
}

}  // namespace

TEST_CASE("step_quantize equals the composed MSQE and LSQ chains: values bit for bit, gradients, any layout, dtype") {
  for (DType dt : {DType::f32, DType::f64})
    for (MemoryFormat fmt : {MemoryFormat::contiguous, MemoryFormat::channels_last})
      for (quant::StepGradient mode : {quant::StepGradient::codes, quant::StepGradient::full}) {
        CAPTURE(int(dt));
        CAPTURE(int(fmt));
        CAPTURE(int(mode));
        Generator gen(15);
        const Tensor base = Tensor::randn({3, 5, 7, 6}, gen, dt, 0.4, 0.7).contiguous(fmt);
        const double lo = mode == quant::StepGradient::codes ? 0 : -8, hi = mode == quant::StepGradient::codes ? 15 : 7;
        Variable a(base, true), b(base, true);
        Variable sa(Tensor::full({}, 0.1, dt), true), sb(Tensor::full({}, 0.1, dt), true);
        const Variable fused = quant::step_quantize(a, sa, lo, hi, mode);
        const Variable composed =
            mode == quant::StepGradient::codes ? msqe_composed(b, sb, lo, hi) : lsq_composed(b, sb, lo, hi);
        CHECK(fused.data().to_vector() == composed.data().to_vector());
        const Tensor g = Tensor::randn({3, 5, 7, 6}, gen, dt);  // row-major: a layout other than fmt
        fused.backward(Variable(g));
        composed.backward(Variable(g));
        const auto ga = a.grad().data().to_vector(), gb = b.grad().data().to_vector(), gv = g.to_vector(),
                   xv = base.to_vector();
        int64_t bad = 0, clipped = 0;
        for (size_t i = 0; i < ga.size(); ++i) {
          const double u = dt == DType::f32 ? double(float(xv[i]) / 0.1f) : xv[i] / 0.1;
          const bool in = u >= lo && u <= hi;
          clipped += !in;
          bad += ga[i] != (in ? gv[i] : 0.0);                               // the stated surrogate, exactly
          bad += std::fabs(ga[i] - gb[i]) > 1e-6 * (1 + std::fabs(gb[i]));  // LSQ's chain: (g s) / s
        }
        CHECK(bad == 0);
        CHECK(clipped > 0);
        const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
        CHECK(sa.grad().item() == doctest::Approx(sb.grad().item()).epsilon(tol));
      }
}

TEST_CASE("step_quantize double backward: the same second derivatives as the composed chains (float64)") {
  for (quant::StepGradient mode : {quant::StepGradient::codes, quant::StepGradient::full}) {
    CAPTURE(int(mode));
    Generator gen(17);
    const Tensor xt = Tensor::randn({40}, gen, DType::f64, 0.3, 0.9), gt = Tensor::randn({40}, gen, DType::f64);
    const Tensor vt = Tensor::randn({40}, gen, DType::f64);
    // d/d(x, s, g) of <dQ/dx, v> + 3 dQ/ds, from the fused op and from its composition
    auto second = [&](bool fused) {
      Variable x(xt, true), s(Tensor::full({}, 0.25, DType::f64), true), g(gt, true);
      const Variable y =
          fused ? quant::step_quantize(x, s, -4, 3, mode)
                : (mode == quant::StepGradient::codes ? msqe_composed(x, s, -4, 3) : lsq_composed(x, s, -4, 3));
      const auto first = grad({y}, {x, s}, {g}, true, true);
      const Variable h = add(sum(mul(first[0], Variable(vt))), mul(sum(first[1]), 3.0));
      const auto d = grad({h}, {x, s, g}, {}, false, false, true);
      std::vector<double> out;
      for (size_t k = 0; k < d.size(); ++k) {
        const size_t len = k == 1 ? 1 : 40;
        const auto vals = d[k].defined() ? d[k].data().to_vector() : std::vector<double>(len, 0.0);
        out.insert(out.end(), vals.begin(), vals.end());
      }
      return out;
    };
    const auto f = second(true), c = second(false);
    REQUIRE(f.size() == c.size());
    double norm = 0;
    for (size_t i = 0; i < f.size(); ++i) {
      CHECK(f[i] == doctest::Approx(c[i]).epsilon(1e-12));
      norm += std::fabs(f[i]);
    }
    CHECK(norm > 0);
  }
}

// ---- PACT's open mask (clip_open_backward) ----

TEST_CASE("clip_open_backward: fast == _ref bit for bit, and the definition, on MobileNet shapes and tails") {
  Generator gen(19);
  for (int64_t n : {int64_t(1), int64_t(17), int64_t(32769), int64_t(7 * 64 * 8 * 8), int64_t(128) * 32 * 32 * 32})
    for (bool signed_ : {false, true}) {
      CAPTURE(n);
      CAPTURE(signed_);
      const float hi = 1.5f, lo = signed_ ? -hi : 0.0f;
      std::vector<float> x(static_cast<size_t>(n)), dy(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {  // beyond both bounds, and every 5th exactly on one
        x[size_t(i)] = i % 5 == 0 ? (i % 10 == 0 ? lo : hi) : float(gen.uniform() * 4 - 2);
        dy[size_t(i)] = float(gen.uniform() - 0.5);
      }
      std::vector<float> dx(x.size()), dx_ref(x.size()), dxp(x.size());
      const auto s = kernels::clip_open_backward(n, x.data(), dy.data(), lo, hi, dx.data());
      const auto s_ref = kernels::clip_open_backward_ref(n, x.data(), dy.data(), lo, hi, dx_ref.data());
      CHECK(same_bits(dx, dx_ref));
      CHECK((s.low == s_ref.low && s.high == s_ref.high));
      {
        kernels::Avx512Guard portable(false);
        const auto sp = kernels::clip_open_backward(n, x.data(), dy.data(), lo, hi, dxp.data());
        CHECK(same_bits(dx, dxp));
        CHECK((sp.low == s.low && sp.high == s.high));
      }
      double low = 0, high = 0;
      int64_t bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float v = x[size_t(i)];
        bad += dx[size_t(i)] != ((v > lo && v < hi) ? dy[size_t(i)] : 0.0f);
        if (v <= lo) low += dy[size_t(i)];
        if (v >= hi) high += dy[size_t(i)];
      }
      CHECK(bad == 0);
      CHECK(s.low == doctest::Approx(low).epsilon(1e-12));
      CHECK(s.high == doctest::Approx(high).epsilon(1e-12));
    }
  const float nan = std::numeric_limits<float>::quiet_NaN(), one = 1;
  std::vector<float> dx(1);
  const auto s = kernels::clip_open_backward(1, &nan, &one, 0.0f, 1.0f, dx.data());  // NaN: in neither sum
  CHECK((dx[0] == 0 && s.low == 0 && s.high == 0));
}

namespace {

// PACT as it was composed before clip_quantize / clip_open_backward (the definition pinned below).
Variable pact_composed(const Variable& x, const Variable& alpha, int k, bool signed_) {
  const double a = alpha.item(), n = signed_ ? (1 << (k - 1)) - 1 : (1 << k) - 1, lo = signed_ ? -a : 0.0;
  const Tensor yq = math::mul(math::round(math::mul(math::clamp(x.data(), lo, a), n / a)), a / n);
  const Tensor pass = math::mul(math::gt(x.data(), lo), math::lt(x.data(), a));
  Tensor side = math::ge(x.data(), a);
  if (signed_) side = math::sub(side, math::le(x.data(), -a));
  return make_result(yq, "pact_composed", {x, alpha}, [pass, side, alpha](const Variable& g, const Variable&) {
    return std::vector<Variable>{mul_mask(g, pass), reshape(sum(mul_mask(g, side)), alpha.shape())};
  });
}

}  // namespace

TEST_CASE("pact / signed_pact equal their composition: values bit for bit, gradients, any layout, dtype, twice") {
  for (DType dt : {DType::f32, DType::f64})
    for (MemoryFormat fmt : {MemoryFormat::contiguous, MemoryFormat::channels_last})
      for (bool signed_ : {false, true}) {
        CAPTURE(int(dt));
        CAPTURE(int(fmt));
        CAPTURE(signed_);
        Generator gen(21);
        Tensor base = Tensor::randn({3, 5, 7, 6}, gen, dt, 0.2, 1.0).contiguous(fmt);
        {  // values exactly on the bounds too
          auto v = base.to_vector();
          v[0] = 1.25, v[1] = signed_ ? -1.25 : 0.0;
          base = Tensor::from_vector(v, {3, 5, 7, 6}).to(dt).contiguous(fmt);
        }
        Variable a(base, true), b(base, true);
        Variable alpha_a(Tensor::full({1}, 1.25, dt), true), alpha_b(Tensor::full({1}, 1.25, dt), true);
        const int k = 4;
        const Variable fused = signed_ ? quant::signed_pact(a, alpha_a, k) : quant::pact(a, alpha_a, k);
        const Variable composed = pact_composed(b, alpha_b, k, signed_);
        CHECK(fused.data().to_vector() == composed.data().to_vector());
        const Variable g(Tensor::randn({3, 5, 7, 6}, gen, dt), true);
        {  // the kernel's backward (no graph recorded)
          const auto ka = grad({fused}, {a, alpha_a}, {g}, true);
          const auto kb = grad({composed}, {b, alpha_b}, {g}, true);
          CHECK(ka[0].data().to_vector() == kb[0].data().to_vector());
          CHECK(ka[1].item() == doctest::Approx(kb[1].item()).epsilon(dt == DType::f32 ? 1e-6 : 1e-13));
        }
        // and the masks' (create_graph)
        const auto ga = grad({fused}, {a, alpha_a}, {g}, true, true);
        const auto gb = grad({composed}, {b, alpha_b}, {g}, true, true);
        CHECK(ga[0].data().to_vector() == gb[0].data().to_vector());
        CHECK(ga[1].item() == doctest::Approx(gb[1].item()).epsilon(dt == DType::f32 ? 1e-6 : 1e-13));
        CHECK(gb[1].item() != 0);
        // twice: d/dg of <dx, v> + 3 dalpha
        const Variable v(Tensor::randn({3, 5, 7, 6}, gen, dt));
        const auto hf = grad({add(sum(mul(ga[0], v)), mul(sum(ga[1]), 3.0))}, {g});
        const auto hc = grad({add(sum(mul(gb[0], v)), mul(sum(gb[1]), 3.0))}, {g});
        CHECK(hf[0].data().to_vector() == hc[0].data().to_vector());
      }
}
