// Engine semantics: accumulation, retain_graph, no-grad, functional grad, higher order.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/kink_tape.h"
#include "autograd/ops.h"
#include "autograd/ops_nn.h"
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

// autograd/kink_tape.h: a recorded pass and its replay at the same inputs agree bit for bit (values and
// gradients); replayed at moved inputs, every piecewise-linear op keeps the recorded branch, where the
// plain op switches.
TEST_CASE("kink tape: replay takes the recorded branches of relu, add_relu, batch_norm_relu, clamp, max_pool2d") {
  Generator gen(7);
  const Tensor x0 = Tensor::randn({2, 3, 4, 4}, gen, DType::f64);
  const Tensor b0 = Tensor::randn({2, 3, 4, 4}, gen, DType::f64);
  const Tensor gamma0 = Tensor::randn({3}, gen, DType::f64), beta0 = Tensor::randn({3}, gen, DType::f64);
  const Tensor dx = math::mul(Tensor::randn({2, 3, 4, 4}, gen, DType::f64), 0.7);  // moves many units across 0
  const Pool2dOptions pool{};
  // Every op once; returns the sum of the outputs' weighted sums and the gradients to x.
  auto run = [&](const Tensor& xt, std::vector<Tensor>* outs) {
    Variable x(xt.clone(), true), b(b0.clone(), false), gamma(gamma0.clone(), true), beta(beta0.clone(), true);
    const std::vector<Variable> ys = {relu(x), add_relu(x, b),
                                      batch_norm_relu(x, gamma, beta, Tensor(), Tensor(), true), clamp(x, -0.3, 0.4),
                                      max_pool2d(x, pool)};
    Variable total;
    for (size_t i = 0; i < ys.size(); ++i) {
      outs->push_back(ys[i].data().clone());
      Generator wgen(100 + i);
      const Variable w(Tensor::randn(ys[i].shape(), wgen, DType::f64));
      const Variable t = sum(mul(ys[i], w));
      total = total.defined() ? add(total, t) : t;
    }
    return grad({total}, {x, gamma, beta});
  };
  KinkTape tape;
  std::vector<Tensor> rec_out, rep_out, moved_out, plain_moved_out;
  std::vector<Variable> rec_g, rep_g;
  {
    KinkTape::Scope s(tape, KinkTape::Mode::record);
    rec_g = run(x0, &rec_out);
  }
  CHECK(tape.size() == 5);
  {
    KinkTape::Scope s(tape, KinkTape::Mode::replay);
    rep_g = run(x0, &rep_out);
  }
  for (size_t i = 0; i < rec_out.size(); ++i) {
    CAPTURE(i);
    CHECK(math::amax(math::abs(math::sub(rec_out[i], rep_out[i]))).item() == 0.0);
  }
  for (size_t i = 0; i < rec_g.size(); ++i)
    CHECK(math::amax(math::abs(math::sub(rec_g[i].data(), rep_g[i].data()))).item() < 1e-14);
  // At x0 + dx: the replayed outputs are the recorded branches' linear pieces at the new input.
  const Tensor x1 = math::add(x0, dx);
  {
    KinkTape::Scope s(tape, KinkTape::Mode::replay);
    run(x1, &moved_out);
  }
  run(x1, &plain_moved_out);  // no tape: the ops choose their branches again
  const Tensor mask = math::gt(x0, 0.0);
  CHECK(math::amax(math::abs(math::sub(moved_out[0], math::mul(x1, mask)))).item() == 0.0);
  const Tensor mask_sum = math::gt(math::add(x0, b0), 0.0);
  CHECK(math::amax(math::abs(math::sub(moved_out[1], math::mul(math::add(x1, b0), mask_sum)))).item() == 0.0);
  const Tensor inside = math::mul(math::ge(x0, -0.3), math::le(x0, 0.4));
  const Tensor clamp_expect = math::add(
      math::mul(x1, inside), math::sub(math::clamp(x0, -0.3, 0.4), math::mul(math::clamp(x0, -0.3, 0.4), inside)));
  CHECK(math::amax(math::abs(math::sub(moved_out[3], clamp_expect))).item() < 1e-15);
  // The plain ops switched somewhere (else the case above tests nothing).
  CHECK(math::amax(math::abs(math::sub(moved_out[0], plain_moved_out[0]))).item() > 0.0);
  CHECK(math::amax(math::abs(math::sub(moved_out[2], plain_moved_out[2]))).item() > 0.0);
  CHECK(math::amax(math::abs(math::sub(moved_out[4], plain_moved_out[4]))).item() > 0.0);
  // Max pooling at the recorded winners: every output is one of its window's inputs, the recorded one.
  {
    KinkTape::Scope s(tape, KinkTape::Mode::replay);
    std::vector<Tensor> again;
    run(x0, &again);
    CHECK(math::amax(math::abs(math::sub(again[4], rec_out[4]))).item() == 0.0);
  }
  // A replay that differs from the recording is an error naming both ops.
  {
    KinkTape::Scope s(tape, KinkTape::Mode::replay);
    Variable x(x0.clone(), true);
    const std::string msg = [&] {
      try {
        clamp(x, 0, 1);
      } catch (const Error& e) {
        return std::string(e.what());
      }
      return std::string();
    }();
    CHECK(msg.find("recorded by relu") != std::string::npos);
    CHECK(msg.find("replayed by clamp") != std::string::npos);
  }
  {
    KinkTape::Scope s(tape, KinkTape::Mode::replay);
    Variable x(x0.clone(), true);
    std::vector<Tensor> outs;
    run(x0, &outs);
    CHECK_THROWS_AS(relu(x), Error);  // the tape has run out
  }
  CHECK(KinkTape::current() == nullptr);
}
