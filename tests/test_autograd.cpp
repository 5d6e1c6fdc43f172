// Engine semantics: accumulation, retain_graph, no-grad, functional grad, higher order.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "core/math.h"

using namespace lowbit;

namespace {
Variable scalar_var(double v, bool rg = true) { return Variable(Tensor::scalar(v, DType::f64), rg); }
}  // namespace

TEST_CASE("backward from a scalar; gradients accumulate on leaves until zero_grad") {
  Variable x = scalar_var(3);
  Variable y = x * x + x * 2.0;  // dy/dx = 2x + 2 = 8
  y.backward();
  CHECK(x.grad().item() == 8);
  (x * x).backward();
  CHECK(x.grad().item() == 14);  // 8 + 6
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
  (x * 5.0).backward();
  CHECK(x.grad().item() == 5);
}

TEST_CASE("shared subexpressions sum their gradients (diamond graph)") {
  Variable x = scalar_var(2);
  Variable a = x * x;      // 4
  Variable b = a * a + a;  // a^2 + a, d/dx = (2a + 1) * 2x = 9 * 4 = 36
  b.backward();
  CHECK(x.grad().item() == 36);
}

TEST_CASE("backward with a given gradient on a non-scalar output") {
  Variable x(Tensor::from_list({1, 2, 3}, {3}, DType::f64), true);
  Variable y = x * x;
  CHECK_THROWS_AS(y.backward(), Error);  // not a scalar
  y.backward(Variable(Tensor::from_list({1, 0, 2}, {3}, DType::f64)));
  CHECK(x.grad().data().to_vector() == std::vector<double>{2, 0, 12});
}

TEST_CASE("a graph is freed after backward unless retained") {
  Variable x = scalar_var(1.5);
  Variable y = exp(x) * x;
  y.backward(Variable(), /*retain_graph=*/true);
  const double g1 = x.grad().item();
  y.backward();
  CHECK(x.grad().item() == doctest::Approx(2 * g1));
  CHECK_THROWS_AS(y.backward(), Error);  // freed now
}

TEST_CASE("no-grad scope records nothing; detach cuts the graph") {
  Variable x = scalar_var(2);
  {
    NoGradGuard guard;
    Variable y = x * x;
    CHECK_FALSE(y.requires_grad());
    CHECK(y.is_leaf());
  }
  Variable z = x.detach() * x;
  z.backward();
  CHECK(x.grad().item() == 2);  // only through the non-detached factor
  Variable c = Variable(Tensor::scalar(1.0, DType::f64)) * scalar_var(1, false);
  CHECK_FALSE(c.requires_grad());
  CHECK_THROWS_AS(c.backward(), Error);
}

TEST_CASE("functional grad leaves .grad alone and reaches intermediates") {
  Variable x = scalar_var(3);
  Variable h = x * x;  // intermediate
  Variable y = sin(h);
  auto g = grad({y}, {x, h}, {}, /*retain_graph=*/true);
  CHECK(g[0].item() == doctest::Approx(std::cos(9.0) * 6));
  CHECK(g[1].item() == doctest::Approx(std::cos(9.0)));
  CHECK_FALSE(x.grad().defined());
  Variable unused = scalar_var(1);
  CHECK_THROWS_AS(grad({y}, {unused}, {}, true), Error);
  auto g2 = grad({y}, {unused}, {}, true, false, /*allow_unused=*/true);
  CHECK_FALSE(g2[0].defined());
}

TEST_CASE("higher-order gradients: d^n/dx^n of x^4 and of sin") {
  Variable x = scalar_var(1.5);
  Variable y = pow(x, 4.0);
  Variable d1 = grad({y}, {x}, {}, true, true)[0];   // 4x^3
  Variable d2 = grad({d1}, {x}, {}, true, true)[0];  // 12x^2
  Variable d3 = grad({d2}, {x}, {}, true, true)[0];  // 24x
  CHECK(d1.item() == doctest::Approx(4 * 1.5 * 1.5 * 1.5));
  CHECK(d2.item() == doctest::Approx(12 * 1.5 * 1.5));
  CHECK(d3.item() == doctest::Approx(24 * 1.5));
  Variable s = sin(x);
  Variable s1 = grad({s}, {x}, {}, true, true)[0];
  Variable s2 = grad({s1}, {x}, {}, true, true)[0];
  CHECK(s2.item() == doctest::Approx(-std::sin(1.5)));
}

TEST_CASE("gradient-norm penalty trains through the gradient (create_graph via backward)") {
  // L = w.x, penalty = |dL/dx|_1 = sum|w|; d penalty / dw = sign(w).
  Variable w(Tensor::from_list({0.5, -2, 3}, {3}, DType::f64), true);
  Variable x(Tensor::from_list({1, 1, 1}, {3}, DType::f64), true);
  Variable L = sum(mul(w, x));
  Variable gx = grad({L}, {x}, {}, true, true)[0];
  Variable penalty = sum(abs(gx));
  penalty.backward();
  CHECK(w.grad().data().to_vector() == std::vector<double>{1, -1, 1});
}

TEST_CASE("grad-ready hooks: once per leaf and pass, as soon as its gradient is final") {
  Variable w1 = scalar_var(2), w2 = scalar_var(3);
  const Variable x = scalar_var(5, false);
  std::vector<std::string> order;
  std::vector<double> at_hook;
  bool w1_had_grad_when_w2_fired = true;
  w1.set_grad_ready_hook([&] {
    order.push_back("w1");
    at_hook.push_back(w1.grad().item());
  });
  w2.set_grad_ready_hook([&] {
    order.push_back("w2");
    at_hook.push_back(w2.grad().item());
    w1_had_grad_when_w2_fired = w1.grad().defined();
  });
  // y = (w1 x) w2 + w2: w2 is used twice (final after both), w1 only by the innermost node.
  Variable y = (w1 * x) * w2 + w2;
  y.backward();
  REQUIRE(order.size() == 2);
  CHECK(order[0] == "w2");  // the last layer's parameter is final first ...
  CHECK(order[1] == "w1");
  CHECK_FALSE(w1_had_grad_when_w2_fired);  // ... while w1's gradient is still to come
  CHECK(at_hook[0] == 11);                 // dy/dw2 = w1 x + 1, both uses summed
  CHECK(at_hook[1] == 15);                 // dy/dw1 = x w2
  ((w1 * x) * w2 + w2).backward();         // a second pass: the hook sees the accumulated gradient
  REQUIRE(order.size() == 4);
  CHECK(at_hook[2] == 22);
  grad({(w1 * w2)}, {w1, w2});  // the functional form calls no hook
  CHECK(order.size() == 4);
  w1.set_grad_ready_hook({}), w2.set_grad_ready_hook({});
  (w1 * w2).backward();
  CHECK(order.size() == 4);
  CHECK_THROWS_AS(y.set_grad_ready_hook([] {}), Error);  // not a leaf
}

TEST_CASE("errors: wrong gradient shape, requires_grad on a non-leaf or an integer tensor") {
  Variable x(Tensor::ones({2}, DType::f64), true);
  Variable y = x * 2.0;
  CHECK_THROWS_AS(y.backward(Variable(Tensor::ones({3}, DType::f64))), Error);
  CHECK_THROWS_AS(y.requires_grad_(false), Error);
  CHECK_THROWS_AS(Variable(Tensor::ones({2}, DType::i32), true), Error);
}
