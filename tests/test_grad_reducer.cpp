// GradientReducer (train/grad_reducer.h) in one process: its buckets, the weighting, parameters without
// a gradient, and buckets started from the grad-ready hooks during backward. The sums over ranks are
// tested by scripts/test_mpi.sh (2 ranks against 1 process).
#include <doctest/doctest.h>

#include "autograd/ops.h"
#include "train/grad_reducer.h"

using namespace lowbit;

namespace {
Variable param(int64_t n, DType dtype, double start) {
  return Variable(Tensor::arange(start, start + 0.5 * double(n), 0.5, dtype), true);
}
void check_scaled(const Variable& p, const std::vector<double>& expected, double weight) {
  REQUIRE(p.grad().defined());
  const std::vector<double> g = p.grad().data().to_vector();
  REQUIRE(g.size() == expected.size());
  for (size_t i = 0; i < g.size(); ++i) CHECK(g[i] == doctest::Approx(weight * expected[i]).epsilon(1e-6));
}
}  // namespace

TEST_CASE("gradient reducer: weighted gradients back, dtype-pure buckets, parameters without gradients") {
  Variable a = param(12, DType::f32, 1), b = param(5, DType::f64, -2), c = param(2, DType::f32, 0),
           d = param(7, DType::f32, 3);
  // 32-byte buckets, filled from the last parameter: d (28 B) | c (8 B) | b (f64) | a (48 B).
  train::GradientReducer reducer({a, b, c, d}, 32);
  CHECK(reducer.num_buckets() == 4);
  std::vector<double> ga, gb, gd;  // d(loss)/dp: 2a, 3b^2, 1
  for (double v : a.data().to_vector()) ga.push_back(2 * v);
  for (double v : b.data().to_vector()) gb.push_back(3 * v * v);
  gd.assign(7, 1.0);
  for (bool hooked : {true, false}) {
    CAPTURE(hooked);
    for (Variable* p : {&a, &b, &c, &d}) p->zero_grad();
    if (hooked) reducer.start(0.25);
    // Two backward passes (one per dtype); c takes part in neither and keeps no gradient.
    (sum(a * a) + sum(d)).backward();
    sum(b * b * b).backward();
    // Hooked: only d's bucket could start during backward (c's never fills, and buckets start in order).
    if (hooked) CHECK(reducer.started_during_backward() == 1);
    reducer.finish(0.25);
    CHECK(reducer.started_during_backward() == (hooked ? 1 : 0));
    check_scaled(a, ga, 0.25);
    check_scaled(b, gb, 0.25);
    check_scaled(d, gd, 0.25);
    CHECK_FALSE(c.grad().defined());
  }
}

TEST_CASE("gradient reducer: every bucket starts during backward when every parameter gets a gradient") {
  Variable w1 = param(40, DType::f32, -1), w2 = param(40, DType::f32, 2), w3 = param(3, DType::f32, 1);
  train::GradientReducer reducer({w1, w2, w3}, 100);  // w3 (12 B) | w2 (160 B) | w1: 3 buckets
  CHECK(reducer.num_buckets() == 3);
  reducer.start(0.5);
  (sum(w1 * w2) + sum(w3 * w3)).backward();
  reducer.finish(0.5);
  CHECK(reducer.started_during_backward() == 3);
  check_scaled(w1, w2.data().to_vector(), 0.5);
  check_scaled(w2, w1.data().to_vector(), 0.5);
  std::vector<double> g3;
  for (double v : w3.data().to_vector()) g3.push_back(2 * v);
  check_scaled(w3, g3, 0.5);
  // The hooks are gone after finish: a later backward starts nothing.
  (sum(w1 * w2)).backward();
  CHECK(reducer.started_during_backward() == 3);
}
