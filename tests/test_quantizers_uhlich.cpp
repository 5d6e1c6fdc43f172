// Uhlich et al.'s parametrizations U1 = [b, d], U2 = [b, q_max], P1 = [b, q_max], P2 = [b, q_min]
// (spec §6.1-§6.3, 6.5): forward values on hand-picked inputs, the surrogate gradients of the
// header's tables at hand-picked points of every region, a numerical check of those tables (central
// differences of the forward with its rounding residuals frozen: the identity-STE chain rule), and
// the agreement with uniform_u3 / pow2_p3 on the same grid. Expected values are computed here from
// the formulas, never by the code under test.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <numbers>
#include <set>
#include <string>

#include "autograd/ops.h"
#include "quant/quantizers.h"

using namespace lowbit;
using namespace lowbit::quant;

namespace {

constexpr double kLn2 = std::numbers::ln2;

Variable leaf(std::initializer_list<double> v) {
  return Variable(Tensor::from_list(v, {static_cast<int64_t>(v.size())}, DType::f64), true);
}
Variable leaf(const std::vector<double>& v, DType dt = DType::f64) {
  return Variable(Tensor::from_vector(v, {int64_t(v.size())}).to(dt), true);
}
Variable scalar(double v) { return Variable(Tensor::from_list({v}, {1}, DType::f64), true); }
std::vector<double> vec(const Variable& v) { return v.data().to_vector(); }

void check_vec(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-9) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (tol == 0) {
      CHECK(got[i] == want[i]);  // exact
    } else {
      CHECK(got[i] == doctest::Approx(want[i]).epsilon(tol).scale(1));
    }
  }
}

enum class Kind { U1, U2, P1, P2 };
using Quantizer = Variable (*)(const Variable&, const Variable&, const Variable&, bool);
Quantizer quantizer(Kind k) {
  switch (k) {
    case Kind::U1: return uniform_u1;
    case Kind::U2: return uniform_u2;
    case Kind::P1: return pow2_p1;
    case Kind::P2: return pow2_p2;
  }
  return nullptr;
}
std::string name(Kind k) {
  switch (k) {
    case Kind::U1: return "U1";
    case Kind::U2: return "U2";
    case Kind::P1: return "P1";
    case Kind::P2: return "P2";
  }
  return "";
}

// One hand-picked point: input, output, dQ/dx, dQ/db, dQ/d(second parameter).
struct Row {
  double x, q, dx, db, dp;
};

// Runs k at (b, p) on each row's x alone and checks the value and the three gradients.
void check_rows(Kind k, double b, double p, bool signed_, const std::vector<Row>& rows) {
  for (const Row& r : rows) {
    CAPTURE(name(k));
    CAPTURE(signed_);
    CAPTURE(r.x);
    Variable x = leaf({r.x}), bv = scalar(b), pv = scalar(p);
    Variable q = quantizer(k)(x, bv, pv, signed_);
    check_vec(vec(q), {r.q});
    sum(q).backward();
    check_vec(vec(x.grad()), {r.dx});
    check_vec(vec(bv.grad()), {r.db});
    check_vec(vec(pv.grad()), {r.dp});
  }
}

void check_forward(Kind k, double b, double p, bool signed_, const std::vector<double>& xs,
                   const std::vector<double>& want) {
  CAPTURE(name(k));
  CAPTURE(b);
  CAPTURE(p);
  CAPTURE(signed_);
  check_vec(vec(quantizer(k)(leaf(xs), scalar(b), scalar(p), signed_)), want, 0);
}

// The quantizer's forward at w = {x, b, p} written out here with every round r(t) replaced by
// t + (r(t0) - t0), the residual frozen at the base point w0 (the clamp of b included, as the
// header's identity), the region and sign(x) chosen at w0. Its derivatives at w0 are the
// identity-STE chain rule of the forward; central differences of it check the header's tables.
double relaxed(Kind k, bool signed_, const std::array<double, 3>& w0, const std::array<double, 3>& w) {
  const double x0 = w0[0], x = w[0];
  const bool uniform = k == Kind::U1 || k == Kind::U2;
  const double b_min = signed_ ? 2 : 1, b_max = uniform ? 16 : 8;
  const double bits0 = std::clamp(std::round(w0[1]), b_min, b_max), bits = w[1] + (bits0 - w0[1]);
  auto pow2_frozen = [](double v0, double v) {  // 2^round(log2 v) with the residual frozen at v0
    return std::exp2(std::log2(v) + (std::round(std::log2(v0)) - std::log2(v0)));
  };
  if (uniform) {
    const double s = x0 > 0 ? 1 : (x0 < 0 ? -1 : 0);
    const double n0 = std::exp2(signed_ ? bits0 - 1 : bits0) - 1, n = std::exp2(signed_ ? bits - 1 : bits) - 1;
    const double d0 = std::exp2(std::round(std::log2(k == Kind::U1 ? w0[2] : w0[2] / n0)));
    const double d = k == Kind::U1 ? pow2_frozen(w0[2], w[2]) : pow2_frozen(w0[2] / n0, w[2] / n);
    const double a0 = signed_ ? std::abs(x0) : x0, a = signed_ ? s * x : x;
    if (a0 < 0) return 0;
    if (a0 > n0 * d0) return s * n * d;
    const double t0 = a0 / d0 + 0.5;
    return s * d * (a / d + 0.5 + (std::floor(t0) - t0));
  }
  const double s = x0 >= 0 ? 1 : -1;
  if (!signed_ && x0 <= 0) return 0;
  const double e0 = std::exp2(bits0 - 1) - 1, e = std::exp2(bits - 1) - 1;
  double lo0, hi0, lo, hi;
  if (k == Kind::P1) {
    hi0 = std::exp2(std::round(std::log2(w0[2]))), lo0 = hi0 * std::exp2(-e0);
    hi = pow2_frozen(w0[2], w[2]), lo = hi * std::exp2(-e);
  } else {
    lo0 = std::exp2(std::round(std::log2(w0[2]))), hi0 = lo0 * std::exp2(e0);
    lo = pow2_frozen(w0[2], w[2]), hi = lo * std::exp2(e);
  }
  const double a0 = std::abs(x0);
  if (a0 <= lo0) return s * lo;
  if (a0 > hi0) return s * hi;
  return s * pow2_frozen(a0, s * x);
}

}  // namespace

TEST_CASE("U1 forward: b rounds to an integer in [b_min, 16], d to a power of two, q' = n d'") {
  // b = 3.4 -> 3: n = 2^2 - 1 = 3; d = 0.3 -> 1/4; q' = 3/4. Ties of the level round away from 0.
  check_forward(Kind::U1, 3.4, 0.3, true, {0, 0.1, 0.13, -0.37, 0.375, -0.375, 0.75, 0.76, -5},
                {0, 0, 0.25, -0.25, 0.5, -0.5, 0.75, 0.75, -0.75});
  check_forward(Kind::U1, 2.5, 0.25, true, {0.7, 1.0, -0.2}, {0.75, 0.75, -0.25});  // b = 2.5 -> 3
  check_forward(Kind::U1, 2.49, 0.25, true, {0.7, -0.1, 0.13}, {0.25, 0, 0.25});    // b -> 2: {-d', 0, d'}
  check_forward(Kind::U1, 0.3, 0.25, true, {0.7, -0.1, -0.13}, {0.25, 0, -0.25});   // clamped to b_min = 2
  check_forward(Kind::U1, -3, 0.25, true, {-0.7}, {-0.25});
  check_forward(Kind::U1, 40, 1, true, {40000, -12.4, 32766.6}, {32767, -12, 32767});  // clamped to 16
  // d rounds at 2^-1/2 = 0.7071: 0.70 -> 1/2, 0.72 -> 1 (b = 2: n = 1).
  check_forward(Kind::U1, 2, 0.70, true, {0.3, 0.9}, {0.5, 0.5});
  check_forward(Kind::U1, 2, 0.72, true, {0.3, 0.9}, {0, 1});
  // Unsigned: b = 2.6 -> 3, n = 2^3 - 1 = 7, d' = 1/4, q' = 7/4; x < 0 -> 0.
  check_forward(Kind::U1, 2.6, 0.3, false, {-0.5, 0, 0.6, 1.75, 1.8, 3}, {0, 0, 0.5, 1.75, 1.75, 1.75});
  // Unsigned b_min = 1: {0, d'}.
  check_forward(Kind::U1, 0.2, 0.5, false, {0.2, 0.25, 9, -1}, {0, 0.5, 0.5, 0});
  CHECK(u12_bits(3.4) == 3);
  CHECK(u12_bits(2.5) == 3);
  CHECK(u12_bits(2.49) == 2);
  CHECK(u12_bits(-3) == 2);
  CHECK(u12_bits(0.2, false) == 1);
  CHECK(u12_bits(1.6, false) == 2);
  CHECK(u12_bits(40) == 16);
  CHECK(u1_effective(3.4, 0.3).d == 0.25);
  CHECK(u1_effective(3.4, 0.3).q_max == 0.75);
  CHECK(u1_effective(2.6, 0.3, false).q_max == 1.75);
}

TEST_CASE("U2 forward: d' = 2^round(log2(q_max / n)), q' = n d' (the tie, not the raw q_max)") {
  // b = 3.7 -> 4, n = 7; q_max = 1: 1/7 = 2^-2.81 -> d' = 1/8, q' = 7/8.
  check_forward(Kind::U2, 3.7, 1.0, true, {0.9, 0.875, 0.5, -0.3, 0.0625, -0.0625, 0, 1e9},
                {0.875, 0.875, 0.5, -0.25, 0.125, -0.125, 0, 0.875});
  // q_max = 1.3: 1.3/7 = 2^-2.43 -> d' = 1/4, q' = 7/4 > q_max: 1.5 is inside.
  check_forward(Kind::U2, 4, 1.3, true, {1.5, 1.3, 1.76, -2}, {1.5, 1.25, 1.75, -1.75});
  // b = 1.2 -> 2 (b_min), n = 1: d' = 2^round(log2 0.3) = 1/4 = q'.
  check_forward(Kind::U2, 1.2, 0.3, true, {0.2, 0.12, -0.13}, {0.25, 0, -0.25});
  // Unsigned: b = 2, n = 2^2 - 1 = 3; q_max = 2: 2/3 = 2^-0.58 -> d' = 1/2, q' = 3/2.
  check_forward(Kind::U2, 2, 2.0, false, {-3, 0.2, 0.26, 1.6, 1.5, 0}, {0, 0, 0.5, 1.5, 1.5, 0});
  CHECK(u2_effective(3.7, 1.0).d == 0.125);
  CHECK(u2_effective(3.7, 1.0).q_max == 0.875);
  CHECK(u2_effective(4, 1.3).q_max == 1.75);
  CHECK(u2_effective(2, 2.0, false).q_max == 1.5);
}

TEST_CASE("P1 forward: q_max' = 2^round(log2 q_max), q_min' = 2^-(2^(b'-1) - 1) q_max'") {
  // b = 2.6 -> 3: E = 3 octaves; q_max = 3 -> 4, q_min' = 1/2. sign(0) = +1.
  check_forward(Kind::P1, 2.6, 3, true, {0, 0.1, -0.2, 0.5, 0.7, 0.75, 1.5, -3, 4, 5, -100},
                {0.5, 0.5, -0.5, 0.5, 0.5, 1, 2, -4, 4, 4, -4});
  check_forward(Kind::P1, 2.6, 3, false, {-1, 0, 0.1, 1.5, 5}, {0, 0, 0.5, 2, 4});
  // Signed b = 0.4 -> 2 (b_min): E = 1, q_max = 1, q_min' = 1/2.
  check_forward(Kind::P1, 0.4, 1, true, {0.3, 0.8, 0.6, 2, -0.8}, {0.5, 1, 0.5, 1, -1});
  // Unsigned b = 1.2 -> 1: E = 0, q_min' = q_max' = 2^round(log2 0.3) = 1/4: levels {0, 1/4}.
  check_forward(Kind::P1, 1.2, 0.3, false, {-1, 0, 0.1, 0.25, 7}, {0, 0, 0.25, 0.25, 0.25});
  // b = 20 -> 8: E = 127.
  check_forward(Kind::P1, 20, 1, true, {1e-40, 0.3, -2}, {std::exp2(-127), 0.25, -1});
  CHECK(p12_bits(2.6) == 3);
  CHECK(p12_bits(0.4) == 2);
  CHECK(p12_bits(1.2, false) == 1);
  CHECK(p12_bits(20) == 8);
  CHECK(p1_effective(2.6, 3).q_min == 0.5);
  CHECK(p1_effective(2.6, 3).q_max == 4);
  CHECK(p1_effective(1.2, 0.3, false).q_min == 0.25);
}

TEST_CASE("P2 forward: q_min' = 2^round(log2 q_min), q_max' = 2^(2^(b'-1) - 1) q_min'") {
  // b = 2: E = 1; q_min = 0.1 -> 1/8, q_max' = 1/4.
  check_forward(Kind::P2, 2, 0.1, true, {0.01, 0.2, 0.17, 0.3, -0.3, 0, 0.125, 0.25},
                {0.125, 0.25, 0.125, 0.25, -0.25, 0.125, 0.125, 0.25});
  // b = 4.4 -> 4: E = 7; q_min = 0.01 = 2^-6.64 -> 2^-7, q_max' = 1.
  check_forward(Kind::P2, 4.4, 0.01, true, {0.003, 0.3, 0.7, 1, 3, -1.1}, {std::exp2(-7), 0.25, 0.5, 1, 1, -1});
  // Unsigned b = 3: E = 3, {0, 1/8, ..., 1}.
  check_forward(Kind::P2, 3, 0.1, false, {-0.5, 0, 0.05, 0.7, 2}, {0, 0, 0.125, 0.5, 1});
  CHECK(p2_effective(4.4, 0.01).q_min == std::exp2(-7));
  CHECK(p2_effective(4.4, 0.01).q_max == 1);
  CHECK(p2_effective(0.5, 3, false).q_max == 4);  // b -> 1 unsigned: q_max' = q_min'
}

TEST_CASE("U1 surrogate gradients: the header's table (§6.2 with d' for d) at hand-picked points") {
  // b = 3.4 -> 3 (N = 4, n = 3), d = 0.3 -> d' = 1/4, q' = 3/4. Columns: x, Q, dQ/dx, dQ/db, dQ/dd.
  const double d = 0.3;
  check_rows(Kind::U1, 3.4, d, true,
             {
                 {0.13, 0.25, 1, 0, (0.25 - 0.13) / d},            // inside: (Q - x)/d with the raw d
                 {-0.37, -0.25, 1, 0, (-0.25 + 0.37) / d},         //
                 {0.0, 0, 1, 0, 0},                                //
                 {0.75, 0.75, 1, 0, 0},                            // |x| = q': inside
                 {0.9, 0.75, 0, 4 * kLn2 * 0.25, 3 * 0.25 / d},    // outside: s N ln2 d', s n d'/d
                 {-2, -0.75, 0, -4 * kLn2 * 0.25, -3 * 0.25 / d},  //
             });
  // Unsigned: b = 2.6 -> 3, N = 8, n = 7, d' = 1/4, q' = 7/4.
  check_rows(Kind::U1, 2.6, d, false,
             {
                 {-0.5, 0, 0, 0, 0},
                 {0.0, 0, 1, 0, 0},
                 {0.6, 0.5, 1, 0, (0.5 - 0.6) / d},
                 {1.8, 1.75, 0, 8 * kLn2 * 0.25, 7 * 0.25 / d},
             });
  // d a power of two: exactly §6.2's outside 2^(b-1) ln2 d sign(x) and (2^(b-1) - 1) sign(x).
  check_rows(Kind::U1, 4, 0.125, true, {{5, 0.875, 0, 8 * kLn2 * 0.125, 7}, {-5, -0.875, 0, -8 * kLn2 * 0.125, -7}});
}

TEST_CASE("U2 surrogate gradients: §6.2's table (inside dQ/dq_max the [D] re-derivation)") {
  // b = 3.7 -> 4 (N = 8, n = 7), q_max = 1 -> d' = 1/8, q' = 7/8. Columns: x, Q, dQ/dx, dQ/db, dQ/dq_max.
  const double c = 8 * kLn2 / 7;  // inside dQ/db = -(N ln2 / n)(Q - x)
  check_rows(Kind::U2, 3.7, 1.0, true,
             {
                 {-0.3, -0.25, 1, -c * (-0.25 + 0.3), (-0.25 + 0.3) / 1.0},
                 {0.5, 0.5, 1, 0, 0},
                 {0.0625, 0.125, 1, -c * 0.0625, 0.0625 / 1.0},
                 {0.0, 0, 1, 0, 0},
                 {0.875, 0.875, 1, 0, 0},     // |x| = q'
                 {0.9, 0.875, 0, 0, 0.875},   // outside: s q'/q_max
                 {-4, -0.875, 0, 0, -0.875},  //
             });
  // q_max = 1.3 -> d' = 1/4, q' = 7/4: between q_max and q' is inside.
  check_rows(Kind::U2, 4, 1.3, true,
             {
                 {1.5, 1.5, 1, 0, 0},
                 {1.3, 1.25, 1, -c * (1.25 - 1.3), (1.25 - 1.3) / 1.3},
                 {2, 1.75, 0, 0, 1.75 / 1.3},
                 {-2, -1.75, 0, 0, -1.75 / 1.3},
             });
  // Unsigned: b = 2 (N = 4, n = 3), q_max = 2 -> d' = 1/2, q' = 3/2.
  check_rows(Kind::U2, 2, 2.0, false,
             {
                 {-3, 0, 0, 0, 0},
                 {0.26, 0.5, 1, -(4 * kLn2 / 3) * (0.5 - 0.26), (0.5 - 0.26) / 2},
                 {1.6, 1.5, 0, 0, 1.5 / 2},
             });
  // q_max / n a power of two: exactly §6.2's outside sign(x).
  check_rows(Kind::U2, 3, 0.75, true, {{1, 0.75, 0, 0, 1}, {-1, -0.75, 0, 0, -1}});
}

TEST_CASE("P1 surrogate gradients: the header's table at hand-picked points") {
  // b = 2.6 -> 3: E = 3, L = 2^2 ln^2 2; q_max = 3 -> 4 (dq_max'/dq_max = 4/3), q_min' = 1/2.
  // Columns: x, Q, dQ/dx, dQ/db, dQ/dq_max.
  const double l = 4 * kLn2 * kLn2, lo = 0.5, hi = 4, raw = 3;
  const std::vector<Row> signed_rows = {
      {0.1, lo, 0, -l * lo, lo / raw},    // |x| <= q_min': -s L q_min', s q_min'/q_max
      {-0.2, -lo, 0, l * lo, -lo / raw},  //
      {0.0, lo, 0, -l * lo, lo / raw},    // sign(0) = +1
      {0.5, lo, 0, -l * lo, lo / raw},    // |x| = q_min'
      {0.7, 0.5, 0.5 / 0.7, 0, 0},        // between: |Q|/|x|
      {-3, -4, 4 / 3.0, 0, 0},            //
      {4, 4, 1, 0, 0},                    // |x| = q_max': between
      {5, hi, 0, 0, hi / raw},            // |x| > q_max': s q_max'/q_max
      {-100, -hi, 0, 0, -hi / raw},       //
  };
  check_rows(Kind::P1, 2.6, raw, true, signed_rows);
  check_rows(Kind::P1, 2.6, raw, false,
             {{-1, 0, 0, 0, 0},
              {0, 0, 0, 0, 0},
              {0.1, lo, 0, -l * lo, lo / raw},
              {1.5, 2, 2 / 1.5, 0, 0},
              {5, hi, 0, 0, hi / raw}});
  // q_max a power of two: §6.1 unrounded, dQ/dq_max = s 2^-E below q_min and s above q_max.
  check_rows(Kind::P1, 3, 8, true, {{0.5, 1, 0, -l * 1, 1.0 / 8}, {9, 8, 0, 0, 1}});
}

TEST_CASE("P2 surrogate gradients: the header's table at hand-picked points") {
  // b = 2.2 -> 2: E = 1, L = 2 ln^2 2; q_min = 0.1 -> 1/8 (dq_min'/dq_min = 1.25), q_max' = 1/4.
  // Columns: x, Q, dQ/dx, dQ/db, dQ/dq_min.
  const double l = 2 * kLn2 * kLn2, raw = 0.1;
  check_rows(Kind::P2, 2.2, raw, true,
             {
                 {0.01, 0.125, 0, 0, 0.125 / raw},      // |x| <= q_min': 0, s q_min'/q_min
                 {-0.05, -0.125, 0, 0, -0.125 / raw},   //
                 {0.0, 0.125, 0, 0, 0.125 / raw},       // sign(0) = +1
                 {0.125, 0.125, 0, 0, 0.125 / raw},     // |x| = q_min'
                 {0.2, 0.25, 0.25 / 0.2, 0, 0},         // between: |Q|/|x|
                 {0.25, 0.25, 1, 0, 0},                 // |x| = q_max'
                 {0.3, 0.25, 0, l * 0.25, 0.25 / raw},  // |x| > q_max': s L q_max', s q_max'/q_min
                 {-7, -0.25, 0, -l * 0.25, -0.25 / raw},
             });
  // Unsigned b = 3: E = 3, L = 4 ln^2 2, q_min' = 1/8, q_max' = 1.
  const double l3 = 4 * kLn2 * kLn2;
  check_rows(Kind::P2, 3, raw, false,
             {{-0.5, 0, 0, 0, 0},
              {0, 0, 0, 0, 0},
              {0.05, 0.125, 0, 0, 0.125 / raw},
              {0.7, 0.5, 0.5 / 0.7, 0, 0},
              {2, 1, 0, l3 * 1, 1 / raw}});
  // q_min a power of two: §6.1 unrounded, dQ/dq_min = s below q_min and s 2^E above q_max.
  check_rows(Kind::P2, 3, 0.125, true, {{-0.1, -0.125, 0, 0, -1}, {3, 1, 0, l3 * 1, 1 / 0.125}});
}

TEST_CASE("U1, U2, P1, P2: the tables are the identity-STE chain rule (central differences)") {
  struct Point {
    Kind k;
    bool signed_;
    double x, b, p;
  };
  // Points away from region boundaries, level ties and rounding ties, in every region; b clamped
  // to b_min in a few (the clamp passes the gradient, as the header says).
  const std::vector<Point> points = {
      {Kind::U1, true, 0.13, 3.4, 0.3},  {Kind::U1, true, -0.41, 3.4, 0.3},   {Kind::U1, true, 0.9, 3.4, 0.3},
      {Kind::U1, true, -2, 5.2, 0.07},   {Kind::U1, false, 0.6, 2.6, 0.3},    {Kind::U1, false, 2.2, 2.6, 0.3},
      {Kind::U1, false, 0.2, 0.7, 0.3},  {Kind::U1, true, 0.2, 1.1, 0.3},     {Kind::U2, true, -0.3, 3.7, 1.0},
      {Kind::U2, true, 1.5, 4, 1.3},     {Kind::U2, true, 1.9, 4, 1.3},       {Kind::U2, true, -3, 5.4, 0.7},
      {Kind::U2, false, 0.26, 2, 2.0},   {Kind::U2, false, 1.7, 2, 2.0},      {Kind::U2, false, 0.3, 6.3, 5.1},
      {Kind::P1, true, 0.1, 2.6, 3},     {Kind::P1, true, -0.2, 2.6, 3},      {Kind::P1, true, 0.7, 2.6, 3},
      {Kind::P1, true, -2.9, 2.6, 3},    {Kind::P1, true, 5, 2.6, 3},         {Kind::P1, false, 0.03, 4.2, 1.7},
      {Kind::P1, false, 0.3, 4.2, 1.7},  {Kind::P1, false, 9, 4.2, 1.7},      {Kind::P2, true, 0.01, 2.2, 0.1},
      {Kind::P2, true, -0.18, 2.2, 0.1}, {Kind::P2, true, 0.3, 2.2, 0.1},     {Kind::P2, true, -7, 3.8, 0.03},
      {Kind::U1, true, 0.9, 1.1, 0.3},   {Kind::P1, true, 0.1, 0.8, 3},       {Kind::P1, false, 0.01, 4.2, 1.7},
      {Kind::P2, false, 5, 0.6, 0.3},    {Kind::P2, false, 0.003, 4.4, 0.01}, {Kind::P2, false, 0.35, 4.4, 0.01},
      {Kind::P2, false, 3, 4.4, 0.01},
  };
  for (const Point& pt : points) {
    CAPTURE(name(pt.k));
    CAPTURE(pt.signed_);
    CAPTURE(pt.x);
    CAPTURE(pt.b);
    CAPTURE(pt.p);
    Variable x = leaf({pt.x}), bv = scalar(pt.b), pv = scalar(pt.p);
    Variable q = quantizer(pt.k)(x, bv, pv, pt.signed_);
    const std::array<double, 3> w0{pt.x, pt.b, pt.p};
    CHECK(vec(q)[0] == doctest::Approx(relaxed(pt.k, pt.signed_, w0, w0)).epsilon(1e-12));  // the reference
    sum(q).backward();
    const std::array<double, 3> got{x.grad().item(), bv.grad().item(), pv.grad().item()};
    for (size_t j = 0; j < 3; ++j) {
      CAPTURE(j);
      std::array<double, 3> up = w0, down = w0;
      const double eps = 1e-6 * std::max(1.0, std::abs(w0[j]));
      up[j] += eps, down[j] -= eps;
      const double numeric = (relaxed(pt.k, pt.signed_, w0, up) - relaxed(pt.k, pt.signed_, w0, down)) / (2 * eps);
      CHECK(got[j] == doctest::Approx(numeric).epsilon(1e-6).scale(1));
    }
  }
}

TEST_CASE("U1 / U2 on the grid of a U3 give uniform_u3's values; P1 / P2 likewise pow2_p3's") {
  std::vector<double> xs;
  for (double t = -9; t <= 9; t += 1.0 / 1024) xs.push_back(t);
  for (double v : {0.875, -0.875, 0.75, 1.75, 4.0, -4.0, 0.5, 0.125, 0.0625}) xs.push_back(v);  // edges
  struct Same {
    Kind k;
    bool signed_;
    double b, p;    // the U1/U2/P1/P2 parameters
    double a3, b3;  // a U3 [d, q_max] or P3 [q_min, q_max] with the same grid (not powers of two)
    double lo, hi;  // that grid, by hand: {d', q'} or {q_min', q_max'}
  };
  const std::vector<Same> cases = {
      {Kind::U1, true, 3.4, 0.3, 0.3, 0.8, 0.25, 0.75},           // U3: d' = 1/4, round(3.2) = 3 steps
      {Kind::U1, true, 5, 0.1, 0.13, 1.9, 0.125, 1.875},          // n = 15
      {Kind::U1, false, 2.6, 0.3, 0.26, 1.8, 0.25, 1.75},         // n = 7
      {Kind::U1, false, 1, 2.5, 2.1, 2.4, 2, 2},                  // n = 1
      {Kind::U2, true, 3.7, 1.0, 0.13, 0.9, 0.125, 0.875},        // d' = 1/8, n = 7
      {Kind::U2, true, 4, 1.3, 0.3, 1.8, 0.25, 1.75},             // q' > q_max
      {Kind::U2, false, 2, 2.0, 0.6, 1.4, 0.5, 1.5},              // n = 3
      {Kind::U2, false, 6, 5.1, 0.07, 3.94, 0.0625, 3.9375},      // n = 63
      {Kind::P1, true, 2.6, 3, 0.45, 3.5, 0.5, 4},                // E = 3
      {Kind::P1, false, 4.2, 1.7, 0.017, 1.6, std::exp2(-6), 2},  // E = 7: 2^-6 .. 2
      {Kind::P2, true, 2, 0.1, 0.1, 0.3, 0.125, 0.25},            // E = 1
      {Kind::P2, false, 3, 0.1, 0.11, 1.2, 0.125, 1},             // E = 3
  };
  for (const Same& c : cases) {
    CAPTURE(name(c.k));
    CAPTURE(c.signed_);
    CAPTURE(c.b);
    CAPTURE(c.p);
    const bool uniform = c.k == Kind::U1 || c.k == Kind::U2;
    const bool uniform1 = c.k == Kind::U1;
    const bool pow1 = c.k == Kind::P1;
    double glo, ghi;
    if (uniform) {
      const U3Params e = uniform1 ? u1_effective(c.b, c.p, c.signed_) : u2_effective(c.b, c.p, c.signed_);
      glo = e.d, ghi = e.q_max;
      CHECK(u3_effective(c.a3, c.b3).d == c.lo);  // the U3 parameters do describe that grid
      CHECK(u3_effective(c.a3, c.b3).q_max == c.hi);
      CHECK(u3_bits(glo, ghi, c.signed_) == u12_bits(c.b, c.signed_));
    } else {
      const P3Params e = pow1 ? p1_effective(c.b, c.p, c.signed_) : p2_effective(c.b, c.p, c.signed_);
      glo = e.q_min, ghi = e.q_max;
      CHECK(p3_bits(glo, ghi, c.signed_) == p12_bits(c.b, c.signed_));
    }
    CHECK(glo == c.lo);
    CHECK(ghi == c.hi);
    for (DType dt : {DType::f64, DType::f32}) {
      CAPTURE(dt == DType::f32);
      Variable x = leaf(xs, dt);
      auto param = [dt](double v) { return Variable(Tensor::full({1}, v, dt), true); };
      const auto got = vec(quantizer(c.k)(x, param(c.b), param(c.p), c.signed_));
      const auto want = vec(uniform ? uniform_u3(x, param(c.a3), param(c.b3), c.signed_)
                                    : pow2_p3(x, param(c.a3), param(c.b3), c.signed_));
      CHECK(got == want);
      std::set<double> levels(got.begin(), got.end());
      // Every level of the b'-bit grid is met: 2^b' - 1 / 2^b' (uniform), 2^b' / 2^(b'-1) + 1 (pow-2).
      const int bits = uniform ? u12_bits(c.b, c.signed_) : p12_bits(c.b, c.signed_);
      const double count = uniform ? (c.signed_ ? std::exp2(bits) - 1 : std::exp2(bits))
                                   : (c.signed_ ? std::exp2(bits) : std::exp2(bits - 1) + 1);
      CHECK(double(levels.size()) == count);
      CHECK(*levels.rbegin() == c.hi);
    }
  }
}

TEST_CASE("U1 / U2 start where u3_init starts (spec 6.5: the start corresponds to b bits)") {
  const Tensor w = Tensor::from_list({0.1, -0.3, 0.05, 0.2}, {4}, DType::f64);
  for (int b = 2; b <= 8; ++b) {
    CAPTURE(b);
    for (const U3Params& p : {u3_init_weight(w, b), u3_init_weight(b)}) {
      const U3Params e1 = u1_effective(b, p.d), e2 = u2_effective(b, p.q_max);
      CHECK(e1.d == p.d);
      CHECK(e1.q_max == p.q_max);
      CHECK(e2.d == p.d);
      CHECK(e2.q_max == p.q_max);
      CHECK(u3_bits(e1.d, e1.q_max) == b);
    }
    const U3Params a = u3_init_activation(b);
    CHECK(u1_effective(b, a.d, false).q_max == a.q_max);
    CHECK(u2_effective(b, a.q_max, false).d == a.d);
  }
}

TEST_CASE("U1, U2, P1, P2: errors and NaN inputs") {
  for (Kind k : {Kind::U1, Kind::U2, Kind::P1, Kind::P2}) {
    CAPTURE(name(k));
    const Quantizer f = quantizer(k);
    Variable w = leaf({0.1, -0.2});
    for (bool signed_ : {true, false}) CHECK(std::isnan(vec(f(leaf({NAN}), scalar(3), scalar(0.5), signed_))[0]));
    CHECK_THROWS_AS(f(w, scalar(3), scalar(0), true), Error);
    CHECK_THROWS_AS(f(w, scalar(3), scalar(-1), true), Error);
    CHECK_THROWS_AS(f(w, scalar(3), scalar(INFINITY), true), Error);
    CHECK_THROWS_AS(f(w, scalar(NAN), scalar(0.5), true), Error);
    CHECK_THROWS_AS(f(w, leaf({3, 4}), scalar(0.5), true), Error);
    CHECK_THROWS_AS(f(w, scalar(3), leaf({0.5, 1}), true), Error);
  }
  // The derived parameter must stay a finite, normal double.
  CHECK_THROWS_AS(uniform_u1(leaf({1.0}), scalar(16), scalar(1e305)), Error);
  CHECK_THROWS_AS(pow2_p2(leaf({1.0}), scalar(8), scalar(1e300)), Error);
  CHECK_THROWS_AS(pow2_p1(leaf({1.0}), scalar(8), scalar(1e-270)), Error);
  CHECK_THROWS_AS(u12_bits(NAN), Error);
  CHECK_THROWS_AS(p12_bits(INFINITY), Error);
  CHECK_THROWS_AS(u1_effective(3, 0), Error);
  CHECK_THROWS_AS(p2_effective(3, -1), Error);
}

TEST_CASE("P3 initialisation (§6.5 [O]) and value clipping (§6.4 [O])") {
  // max|w| = 0.5 at 4 bits: U3's d = 2^floor(log2(0.5 / 7)) = 2^-4, q_max = 2^round(log2(7 / 16)) =
  // 2^-1, q_min = 2^-1 / 2^7: p3_bits = 4.
  const Tensor w = Tensor::from_vector(std::vector<float>{0.1f, -0.5f, 0.25f}, {3});
  const quant::P3Params p = quant::p3_init_weight(w, 4);
  CHECK(p.q_max == 0.5);
  CHECK(p.q_min == std::ldexp(1.0, -8));
  CHECK(quant::p3_bits(p.q_min, p.q_max, true) == 4);
  // Activations: d = 2^-3, q_max = 2^round(log2(15 / 8)) = 2, q_min = 2 / 2^7.
  const quant::P3Params a = quant::p3_init_activation(4);
  CHECK(a.q_max == 2.0);
  CHECK(a.q_min == std::ldexp(1.0, -6));
  CHECK(quant::p3_bits(a.q_min, a.q_max, false) == 4);
  auto clipped = [](double lo, double hi, bool signed_) {
    Variable l(Tensor::scalar(lo, DType::f64)), h(Tensor::scalar(hi, DType::f64));
    quant::p3_clip_parameters(l, h, signed_);
    return std::pair<double, double>{l.item(), h.item()};
  };
  CHECK(clipped(1e-9, 300, true) == std::pair<double, double>{std::ldexp(1.0, -16) + 1e-5, 127 - 1e-5});
  CHECK(clipped(1e-9, 300, false) == std::pair<double, double>{std::ldexp(1.0, -14) + 1e-5, 255 - 1e-5});
  const auto swapped = clipped(0.5, 0.25, true);  // q_min > q_max: both moved past each other
  CHECK(swapped.first == doctest::Approx(0.25 - 1e-5));
  CHECK(swapped.second == doctest::Approx(0.5 + 1e-5));
  CHECK(clipped(0.01, 0.3, true) == std::pair<double, double>{0.01, 0.3});  // inside: unchanged
}
