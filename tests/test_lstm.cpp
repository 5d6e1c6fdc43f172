// LSTM (layers/lstm.h): float64 gradient checks with respect to the input, the initial state and
// every parameter; one step against the gate equations written out in plain doubles; forward over
// T steps against T calls of step(); names, shapes, initialisation and shape errors.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "core/random.h"
#include "layers/lstm.h"
#include "test_util.h"

using namespace lowbit;

namespace {

// Gradient check of [outputs, h_T, c_T] (flattened, concatenated) with respect to x, h0, c0 and every
// parameter, in float64.
void check_lstm_grad(LSTM& m, int64_t T, int64_t N, uint64_t seed) {
  m.to(DType::f64);
  Generator gen(seed);
  const int64_t I = m.input_size(), H = m.hidden_size();
  Variable x(Tensor::randn({T, N, I}, gen, DType::f64), true);
  Variable h0(Tensor::randn({N, H}, gen, DType::f64), true);
  Variable c0(Tensor::randn({N, H}, gen, DType::f64), true);
  std::vector<Variable> inputs{x, h0, c0};
  for (auto& p : m.parameters()) inputs.push_back(p);
  const auto res = gradcheck(
      [&](const std::vector<Variable>& in) {
        auto [ys, s] = m.forward(in[0], LSTMState{in[1], in[2]});
        return cat({reshape(ys, {-1}), reshape(s.h, {-1}), reshape(s.c, {-1})}, 0);
      },
      inputs);
  INFO(m.str(), ": ", res.message);
  CHECK(res.ok);
}

double sigmoid_d(double v) { return 1.0 / (1.0 + std::exp(-v)); }

}  // namespace

TEST_CASE("LSTM: parameter names, shapes, PyTorch init bound, repr") {
  Generator g(1);
  LSTM m(5, 3, true, g);
  const auto named = m.named_parameters();
  REQUIRE(named.size() == 4);
  CHECK(named[0].first == "weight_ih");
  CHECK(named[1].first == "weight_hh");
  CHECK(named[2].first == "bias_ih");
  CHECK(named[3].first == "bias_hh");
  CHECK(named[0].second.shape() == Shape{12, 5});
  CHECK(named[1].second.shape() == Shape{12, 3});
  CHECK(named[2].second.shape() == Shape{12});
  CHECK(named[3].second.shape() == Shape{12});
  const double bound = 1.0 / std::sqrt(3.0);
  double lo = 1, hi = -1;
  for (auto& [_, p] : named)
    for (double v : p.data().to_vector()) lo = std::min(lo, v), hi = std::max(hi, v);
  CHECK(lo >= -bound);
  CHECK(hi <= bound);
  CHECK(hi - lo > bound);  // spread over the range, not a constant
  CHECK(m.str().find("LSTM(5, 3)") != std::string::npos);

  LSTM nb(4, 2, false, g);
  CHECK(nb.parameters().size() == 2);
  CHECK(!nb.has_bias());

  // Same seed, same weights.
  Generator g1(9), g2(9);
  CHECK(max_abs_diff(LSTM(4, 6, true, g1).param("weight_hh").data(), LSTM(4, 6, true, g2).param("weight_hh").data()) ==
        0);
}

TEST_CASE("gradcheck: LSTM w.r.t. input, initial state and every parameter (T=3, N=2, I=5, H=3)") {
  Generator g(2);
  LSTM m(5, 3, true, g);
  check_lstm_grad(m, 3, 2, 11);
  LSTM nb(2, 1, false, g);  // no bias, H = 1
  check_lstm_grad(nb, 4, 3, 12);
}

TEST_CASE("gradcheck: LSTM forward(x) from the zero state, through the module call") {
  Generator g(3);
  LSTM m(3, 2, true, g);
  m.to(DType::f64);
  Variable x(Tensor::randn({2, 1, 3}, g, DType::f64), true);
  std::vector<Variable> inputs{x};
  for (auto& p : m.parameters()) inputs.push_back(p);
  const auto res = gradcheck([&](const std::vector<Variable>& in) { return m(in[0]); }, inputs);
  INFO(res.message);
  CHECK(res.ok);
}

TEST_CASE("LSTM: one step equals the gate equations in plain doubles") {
  const int64_t I = 2, H = 2, N = 1;
  LSTM m(I, H);
  m.to(DType::f64);
  // Rows in gate order i, f, g, o (H rows each).
  const std::vector<double> w_ih = {0.1,  -0.2, /**/ 0.3,  0.4,    // i
                                    -0.5, 0.6,  /**/ 0.7,  -0.8,   // f
                                    0.9,  0.1,  /**/ -0.3, 0.2,    // g
                                    0.05, -0.6, /**/ 0.25, 0.35};  // o
  const std::vector<double> w_hh = {0.2,  0.1,  /**/ -0.1, 0.3,    // i
                                    0.4,  -0.2, /**/ 0.1,  0.1,    // f
                                    -0.3, 0.5,  /**/ 0.2,  -0.4,   // g
                                    0.6,  0.2,  /**/ -0.5, 0.15};  // o
  const std::vector<double> b_ih = {0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08};
  const std::vector<double> b_hh = {-0.1, 0.2, -0.3, 0.4, 0.0, -0.2, 0.1, 0.3};
  m.param("weight_ih").mutable_data().copy_(Tensor::from_vector(w_ih, {4 * H, I}));
  m.param("weight_hh").mutable_data().copy_(Tensor::from_vector(w_hh, {4 * H, H}));
  m.param("bias_ih").mutable_data().copy_(Tensor::from_vector(b_ih, {4 * H}));
  m.param("bias_hh").mutable_data().copy_(Tensor::from_vector(b_hh, {4 * H}));
  const std::vector<double> x = {0.5, -1.5}, h = {0.3, -0.7}, c = {1.2, -0.4};

  auto [out, s] = m.step(Variable(Tensor::from_vector(x, {N, I})),
                         LSTMState{Variable(Tensor::from_vector(h, {N, H})), Variable(Tensor::from_vector(c, {N, H}))});

  // z_r = sum_k W_ih[r][k] x_k + b_ih[r] + sum_k W_hh[r][k] h_k + b_hh[r]
  std::vector<double> z(4 * H);
  for (int64_t r = 0; r < 4 * H; ++r) {
    z[r] = b_ih[r] + b_hh[r];
    for (int64_t k = 0; k < I; ++k) z[r] += w_ih[r * I + k] * x[k];
    for (int64_t k = 0; k < H; ++k) z[r] += w_hh[r * H + k] * h[k];
  }
  const auto hv = s.h.data().to_vector(), cv = s.c.data().to_vector(), ov = out.data().to_vector();
  for (int64_t j = 0; j < H; ++j) {
    const double i = sigmoid_d(z[j]), f = sigmoid_d(z[H + j]), g = std::tanh(z[2 * H + j]), o = sigmoid_d(z[3 * H + j]);
    const double c1 = f * c[j] + i * g, h1 = o * std::tanh(c1);
    CHECK(cv[j] == doctest::Approx(c1).epsilon(1e-14));
    CHECK(hv[j] == doctest::Approx(h1).epsilon(1e-14));
    CHECK(ov[j] == hv[j]);
  }
  // The same numbers written out for the first unit: z_i = 0.01 - 0.1 + 0.1*0.5 - 0.2*(-1.5) + 0.2*0.3 + 0.1*(-0.7).
  CHECK(z[0] == doctest::Approx(0.01 - 0.1 + 0.05 + 0.3 + 0.06 - 0.07));
}

TEST_CASE("LSTM: forward over T equals T calls of step, from zero and from a given state") {
  Generator g(4);
  LSTM m(5, 3, true, g);
  m.to(DType::f64);
  const int64_t T = 4, N = 2;
  const Tensor x = Tensor::randn({T, N, 5}, g, DType::f64);
  for (bool from_zero : {true, false}) {
    LSTMState s0 = m.zero_state(N);
    if (!from_zero)
      s0 = {Variable(Tensor::randn({N, 3}, g, DType::f64)), Variable(Tensor::randn({N, 3}, g, DType::f64))};
    auto [ys, sT] = m.forward(Variable(x), s0);
    REQUIRE(ys.shape() == Shape{T, N, 3});
    LSTMState s = s0;
    for (int64_t t = 0; t < T; ++t) {
      auto [y, next] = m.step(Variable(x.select(0, t)), s);
      s = next;
      CHECK(max_abs_diff(y.data(), ys.data().select(0, t)) < 1e-14);
    }
    CHECK(max_abs_diff(s.h.data(), sT.h.data()) < 1e-14);
    CHECK(max_abs_diff(s.c.data(), sT.c.data()) < 1e-14);
    if (from_zero) CHECK(max_abs_diff(m(Variable(x)).data(), ys.data()) == 0);
  }
  // float32 too (the agent's dtype).
  LSTM f(5, 3, true, g);
  const Tensor xf = Tensor::randn({T, N, 5}, g);
  const Variable ys = f(Variable(xf));
  CHECK(ys.dtype() == DType::f32);
  LSTMState s = f.zero_state(N);
  CHECK(s.h.dtype() == DType::f32);
  for (int64_t t = 0; t < T; ++t) {
    auto [y, next] = f.step(Variable(xf.select(0, t)), s);
    s = next;
    CHECK(max_abs_diff(y.data(), ys.data().select(0, t)) < 1e-6);
  }
}

TEST_CASE("LSTM: gradients reach parameters through backward (float32 training use)") {
  Generator g(5);
  LSTM m(3, 4, true, g);
  const Variable y = m(Variable(Tensor::randn({3, 2, 3}, g)));
  sum(y).backward();
  for (auto& [name, p] : m.named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
    CHECK(p.grad().shape() == p.shape());
  }
}

TEST_CASE("LSTM: shape errors name the expected shapes") {
  LSTM m(5, 3);
  testing::expect_error([&] { m(Variable(Tensor::zeros({2, 4}))); }, {"LSTM::forward", "[T, N, 5]"});
  testing::expect_error([&] { m.step(Variable(Tensor::zeros({2, 4})), m.zero_state(2)); }, {"LSTM::step", "[N, 5]"});
  testing::expect_error([&] { m.step(Variable(Tensor::zeros({2, 5})), m.zero_state(3)); }, {"LSTM::step", "[2, 3]"});
  testing::expect_error([&] { m.forward(Variable(Tensor::zeros({1, 2, 5})), LSTMState{}); }, {"must be defined"});
}
