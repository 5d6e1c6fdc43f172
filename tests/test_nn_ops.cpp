// Forward semantics of the NN ops on logical NCHW tensors (any memory layout in, channels-last
// out) against naive loops, plus their error messages.
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/ops.h"
#include "core/math.h"
#include "core/random.h"

using namespace lowbit;

namespace {

// Naive NCHW convolution in double.
Tensor conv_naive(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, const Conv2dOptions& o) {
  const auto x = x_in.contiguous().to_vector(), w = w_in.contiguous().to_vector();
  const int64_t N = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t K = w_in.size(0), Cg = w_in.size(1), R = w_in.size(2), S = w_in.size(3);
  const int64_t P = (H + 2 * o.padding[0] - o.dilation[0] * (R - 1) - 1) / o.stride[0] + 1;
  const int64_t Q = (W + 2 * o.padding[1] - o.dilation[1] * (S - 1) - 1) / o.stride[1] + 1;
  const int64_t Kg = K / o.groups;
  std::vector<double> y(N * K * P * Q, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          double s = b_in.defined() ? b_in.to_vector()[k] : 0;
          const int64_t grp = k / Kg;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t r = 0; r < R; ++r)
              for (int64_t t = 0; t < S; ++t) {
                const int64_t h = p * o.stride[0] - o.padding[0] + r * o.dilation[0];
                const int64_t ww = q * o.stride[1] - o.padding[1] + t * o.dilation[1];
                if (h < 0 || h >= H || ww < 0 || ww >= W) continue;
                s += x[((n * C + grp * Cg + c) * H + h) * W + ww] * w[((k * Cg + c) * R + r) * S + t];
              }
          y[((n * K + k) * P + p) * Q + q] = s;
        }
  Tensor out = Tensor::from_vector(y, {N, K, P, Q});
  return out;
}

}  // namespace

TEST_CASE("conv2d matches a naive NCHW convolution, whatever the input layout") {
  Generator gen(1);
  struct Case {
    Shape x, w;
    Conv2dOptions o;
  };
  const std::vector<Case> cases = {
      {{2, 3, 7, 6}, {5, 3, 3, 3}, {.padding = {1, 1}}},
      {{1, 4, 9, 9}, {6, 2, 3, 3}, {.stride = {2, 2}, .padding = {1, 0}, .groups = 2}},
      {{2, 6, 8, 8}, {6, 1, 3, 3}, {.padding = {1, 1}, .groups = 6}},  // depthwise
      {{1, 3, 8, 8}, {6, 1, 3, 3}, {.stride = {2, 1}, .groups = 3}},   // depthwise, multiplier 2
      {{1, 2, 9, 9}, {3, 2, 3, 3}, {.padding = {2, 2}, .dilation = {2, 2}}},
      {{3, 5, 4, 4}, {7, 5, 1, 1}, {}},
      {{1, 1, 28, 28}, {20, 1, 5, 5}, {}},  // LeNet conv1
  };
  for (const Case& c : cases) {
    for (DType dt : {DType::f64, DType::f32}) {
      Tensor x = Tensor::randn(c.x, gen, dt), w = Tensor::randn(c.w, gen, dt), b = Tensor::randn({c.w[0]}, gen, dt);
      const Tensor expect = conv_naive(x, w, b, c.o);
      for (bool cl : {false, true}) {
        Tensor xin = cl ? x.contiguous(MemoryFormat::channels_last) : x;
        Variable y = conv2d(Variable(xin), Variable(w), Variable(b), c.o);
        CHECK(y.shape() == expect.shape());
        CHECK(y.data().is_contiguous(MemoryFormat::channels_last));
        const double tol = dt == DType::f64 ? 1e-10 : 1e-4;
        CHECK(allclose(y.data(), expect, tol, tol));
      }
    }
  }
}

// A parameter (a weight that requires grad) under NoGradGuard: float conv2d runs from a per-thread
// cache of prepared weights (autograd/ops_conv.cpp). It must give the uncached result bit for bit and
// follow every change of the weight, whichever way it is made.
TEST_CASE("conv2d inference weight cache: same result as without, follows weight changes") {
  Generator gen(3);
  const Conv2dOptions o{.padding = {1, 1}};
  for (const Shape& ws : {Shape{64, 64, 3, 3}, Shape{32, 32, 3, 3}, Shape{16, 3, 3, 3}, Shape{32, 16, 1, 1}}) {
    const int64_t hw = ws[0] == 64 ? 8 : 16;
    for (int64_t n : {1, 8}) {
      CAPTURE(shape_str(ws));
      CAPTURE(n);
      const Tensor x = Tensor::randn({n, ws[1], hw, hw}, gen).contiguous(MemoryFormat::channels_last);
      Variable w(Tensor::randn(ws, gen), /*requires_grad=*/true);
      const Variable b(Tensor::randn({ws[0]}, gen));
      auto uncached = [&] {  // grad mode on and a weight that requires grad: never cached
        return conv2d(Variable(x), w, b, o).data().contiguous().to_vector();
      };
      auto cached = [&] {
        NoGradGuard ng;
        return conv2d(Variable(x), w, b, o).data().contiguous().to_vector();
      };
      CHECK(cached() == uncached());
      CHECK(cached() == uncached());  // a hit
      // In place through the Variable, and through a second handle on the same storage.
      float* wd = w.mutable_data().data<float>();
      for (int64_t i = 0; i < w.numel(); ++i) wd[i] *= 0.5f;
      CHECK(cached() == uncached());
      Tensor alias = w.data();
      alias.data<float>()[ws[1] * 9 / 2] += 1.0f;
      CHECK(cached() == uncached());
      // A weight in another memory format, and a new weight tensor.
      w = Variable(w.data().contiguous(MemoryFormat::channels_last), true);
      CHECK(cached() == uncached());
      w = Variable(Tensor::randn(ws, gen), true);
      CHECK(cached() == uncached());
    }
  }
}

TEST_CASE("pooling forward matches naive windows") {
  Generator gen(2);
  Tensor x = Tensor::randn({2, 3, 7, 7}, gen, DType::f64);
  const auto xv = x.to_vector();
  Variable y = max_pool2d(Variable(x), {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}});
  REQUIRE(y.shape() == Shape{2, 3, 4, 4});
  const auto yv = y.data().contiguous().to_vector();
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t p = 0; p < 4; ++p)
        for (int64_t q = 0; q < 4; ++q) {
          double m = -INFINITY;
          for (int64_t r = 0; r < 3; ++r)
            for (int64_t s = 0; s < 3; ++s) {
              const int64_t h = 2 * p - 1 + r, w = 2 * q - 1 + s;
              if (h >= 0 && h < 7 && w >= 0 && w < 7) m = std::max(m, xv[((n * 3 + c) * 7 + h) * 7 + w]);
            }
          CHECK(yv[((n * 3 + c) * 4 + p) * 4 + q] == m);
        }
  Variable a = avg_pool2d(Variable(x), {.kernel = {2, 2}});
  CHECK(a.shape() == Shape{2, 3, 3, 3});
  CHECK(a.data().contiguous().to_vector()[0] == doctest::Approx((xv[0] + xv[1] + xv[7] + xv[8]) / 4));
  Variable gp = global_avg_pool2d(Variable(x));
  CHECK(gp.shape() == Shape{2, 3});
  CHECK(allclose(gp.data(), math::mean(x, {2, 3}), 1e-12, 1e-12));
}

TEST_CASE("batch_norm: normalises with batch statistics, updates running averages, evaluates with them") {
  Generator gen(3);
  Tensor x = math::add(math::mul(Tensor::randn({8, 3, 4, 4}, gen), 2.0), 5.0);
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
  Variable gamma(Tensor::from_list({1, 2, 0.5}, {3}), true), beta(Tensor::from_list({0, 1, -1}, {3}), true);
  Variable y = batch_norm(Variable(x), gamma, beta, rm, rv, /*training=*/true, 0.1, 1e-5);
  // Per-channel mean = beta, std = |gamma|.
  const Tensor m = math::mean(y.data(), {0, 2, 3}), v = math::var(y.data(), {0, 2, 3}, false);
  CHECK(allclose(m, beta.data(), 1e-4, 1e-4));
  CHECK(allclose(math::sqrt(v), gamma.data(), 1e-3, 1e-3));
  // running = 0.9 * old + 0.1 * batch (unbiased variance).
  CHECK(allclose(rm, math::mul(math::mean(x, {0, 2, 3}), 0.1), 1e-4, 1e-4));
  CHECK(allclose(rv, math::add(math::mul(math::var(x, {0, 2, 3}, true), 0.1), 0.9), 1e-4, 1e-4));
  Variable ye = batch_norm(Variable(x), gamma, beta, rm, rv, /*training=*/false);
  const Tensor expect = math::add(math::mul(math::div(math::sub(x, rm.reshape({1, 3, 1, 1})),
                                                      math::sqrt(math::add(rv, 1e-5)).reshape({1, 3, 1, 1})),
                                            gamma.data().reshape({1, 3, 1, 1})),
                                  beta.data().reshape({1, 3, 1, 1}));
  CHECK(allclose(ye.data(), expect, 1e-4, 1e-4));
  CHECK_THROWS_AS(batch_norm(Variable(Tensor::ones({1, 3})), Variable(), Variable(), Tensor(), Tensor(), true), Error);
}

TEST_CASE("sync_batch_norm in one process equals batch_norm: values, gradients, running statistics") {
  Generator gen(5);
  const Tensor x0 =
      math::add(math::mul(Tensor::randn({6, 3, 5, 5}, gen), 3.0), 2.0).contiguous(MemoryFormat::channels_last);
  const Tensor dy = Tensor::randn({6, 3, 5, 5}, gen);
  std::vector<Tensor> grads[2], running[2], outs;
  for (int sync = 0; sync < 2; ++sync) {
    Variable x(x0.clone(), true);
    Variable gamma(Tensor::from_list({1, 2, 0.5}, {3}), true), beta(Tensor::from_list({0, 1, -1}, {3}), true);
    Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
    Variable y = sync ? sync_batch_norm(x, gamma, beta, rm, rv, 0.1, 1e-5)
                      : batch_norm(x, gamma, beta, rm, rv, /*training=*/true, 0.1, 1e-5);
    y.backward(Variable(dy));
    outs.push_back(y.data());
    grads[sync] = {x.grad().data(), gamma.grad().data(), beta.grad().data()};
    running[sync] = {rm, rv};
  }
  CHECK(allclose(outs[0], outs[1], 1e-5, 1e-5));
  for (int i = 0; i < 3; ++i) CHECK(allclose(grads[0][i], grads[1][i], 1e-4, 1e-4));
  for (int i = 0; i < 2; ++i) CHECK(allclose(running[0][i], running[1][i], 1e-5, 1e-5));
}

TEST_CASE("dropout: keeps expectation, zeroes about p, identity in eval") {
  Generator gen(4);
  Tensor x = Tensor::ones({100000});
  Variable y = dropout(Variable(x), 0.25, true, gen);
  const double zero_share = 1 - math::mean(math::gt(y.data(), 0.0)).item();
  CHECK(std::abs(zero_share - 0.25) < 0.01);
  CHECK(std::abs(math::mean(y.data()).item() - 1) < 0.02);
  CHECK(dropout(Variable(x), 0.25, false, gen).data().shares_storage(x));
}

TEST_CASE("NN op errors name the op and the shapes") {
  auto msg = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string m1 = msg([] {
    conv2d(Variable(Tensor::zeros({1, 3, 8, 8})), Variable(Tensor::zeros({4, 2, 3, 3})));
  });
  CHECK(m1.find("conv2d") != std::string::npos);
  CHECK(m1.find("[4, 2, 3, 3]") != std::string::npos);
  const std::string m2 = msg([] { max_pool2d(Variable(Tensor::zeros({3, 8, 8})), {}); });
  CHECK(m2.find("max_pool2d") != std::string::npos);
  CHECK(m2.find("[3, 8, 8]") != std::string::npos);
  const std::string m3 = msg([] {
    conv2d(Variable(Tensor::zeros({1, 1, 2, 2})), Variable(Tensor::zeros({1, 1, 3, 3})));
  });
  CHECK(m3.find("smaller") != std::string::npos);
}
