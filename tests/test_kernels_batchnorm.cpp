#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/kernels/batchnorm.h"
#include "core/kernels/cpu.h"
#include "core/parallel.h"
#include "kernel_test_util.h"

using namespace lowbit;
using namespace lowbit::kernels;

using lowbit::test::bit_equal;
using lowbit::test::random_vec;
using lowbit::test::rel_err;
using Dist = lowbit::test::RandomSpec::Dist;

namespace {

// (f(v + h e_i) - f(v - h e_i)) / 2h, v[i] restored.
template <class F>
double central_difference(std::vector<double>& v, size_t i, double h, F&& f) {
  const double keep = v[i];
  v[i] = keep + h;
  const double up = f();
  v[i] = keep - h;
  const double down = f();
  v[i] = keep;
  return (up - down) / (2 * h);
}

template <class T>
std::vector<T> sized(int64_t n, T fill = T(0)) {
  return std::vector<T>(static_cast<size_t>(n), fill);
}

template <class T>
struct BnResult {
  std::vector<T> y, mean, invstd, var_unbiased, y_eval, dx, dgamma, dbeta;
};

// dx = gamma*invstd*(dy - mean(dy) - xhat*mean(dy*xhat)) cancels heavily (exactly for rows == 1), so
// its error is measured against the size of the terms, |gamma * invstd * dy|.
template <class T>
double dx_err(const BnResult<T>& a, const BnResult<T>& b, const std::vector<T>& dy, const std::vector<T>& gamma,
              bool affine) {
  const size_t C = b.invstd.size();
  double diff = 0, scale = 1e-3;
  for (size_t i = 0; i < dy.size(); ++i) {
    const size_t c = i % C;
    diff = std::max(diff, std::abs(double(a.dx[i]) - double(b.dx[i])));
    scale = std::max(scale, std::abs((affine ? double(gamma[c]) : 1.0) * double(b.invstd[c]) * double(dy[i])));
  }
  return diff / scale;
}

template <class T>
BnResult<T> run(bool ref, int64_t rows, int64_t C, const std::vector<T>& x, const std::vector<T>& gamma,
                const std::vector<T>& beta, const std::vector<T>& dy, const std::vector<T>& rmean,
                const std::vector<T>& rvar, bool affine) {
  const double eps = 1e-5;
  BnResult<T> o;
  o.y = sized<T>(rows * C, T(-7));
  o.y_eval = sized<T>(rows * C, T(-7));
  o.dx = sized<T>(rows * C, T(-7));
  o.mean = o.invstd = o.var_unbiased = o.dgamma = o.dbeta = sized<T>(C, T(-7));
  const T* g = affine ? gamma.data() : nullptr;
  const T* b = affine ? beta.data() : nullptr;
  if (ref) {
    batchnorm_forward_train_ref(rows, C, x.data(), g, b, eps, o.y.data(), o.mean.data(), o.invstd.data(),
                                o.var_unbiased.data());
    batchnorm_forward_eval_ref(rows, C, x.data(), rmean.data(), rvar.data(), g, b, eps, o.y_eval.data());
    batchnorm_backward_ref(rows, C, x.data(), dy.data(), o.mean.data(), o.invstd.data(), g, o.dx.data(),
                           o.dgamma.data(), o.dbeta.data());
  } else {
    batchnorm_forward_train(rows, C, x.data(), g, b, eps, o.y.data(), o.mean.data(), o.invstd.data(),
                            o.var_unbiased.data());
    batchnorm_forward_eval(rows, C, x.data(), rmean.data(), rvar.data(), g, b, eps, o.y_eval.data());
    batchnorm_backward(rows, C, x.data(), dy.data(), o.mean.data(), o.invstd.data(), g, o.dx.data(), o.dgamma.data(),
                       o.dbeta.data());
  }
  return o;
}

void check_shape(int64_t rows, int64_t C, double offset = 0.5, double spread = 2.0) {
  CAPTURE(rows);
  CAPTURE(C);
  CAPTURE(offset);
  const auto x = random_vec<float>(rows * C, 1, {.dist = Dist::normal, .offset = offset, .spread = spread}),
             dy = random_vec<float>(rows * C, 2, {.dist = Dist::normal});
  const auto gamma = random_vec<float>(C, 3, {.dist = Dist::normal, .offset = 1.0, .spread = 0.2}),
             beta = random_vec<float>(C, 4, {.dist = Dist::normal});
  const auto rmean = random_vec<float>(C, 5, {.dist = Dist::normal, .offset = offset, .spread = 0.1});
  auto rvar = random_vec<float>(C, 6, {.dist = Dist::normal});
  for (auto& v : rvar) v = spread * spread * (0.5f + std::abs(v));
  for (bool affine : {true, false}) {
    CAPTURE(affine);
    const BnResult<float> ref = run(true, rows, C, x, gamma, beta, dy, rmean, rvar, affine);
    for (bool simd : {true, false}) {
      CAPTURE(simd);
      const Avx512Guard avx512(simd);
      set_num_threads(1);
      const BnResult<float> one = run(false, rows, C, x, gamma, beta, dy, rmean, rvar, affine);
      set_num_threads(2);
      const BnResult<float> two = run(false, rows, C, x, gamma, beta, dy, rmean, rvar, affine);
      CHECK(rel_err(one.mean, ref.mean) < 1e-6);
      CHECK(rel_err(one.invstd, ref.invstd) < 1e-6);
      CHECK(rel_err(one.y, ref.y) < 2e-6);
      CHECK(rel_err(one.y_eval, ref.y_eval) < 2e-6);
      CHECK(dx_err(one, ref, dy, gamma, affine) < 1e-5);
      CHECK(rel_err(one.dgamma, ref.dgamma) < 1e-5);
      CHECK(rel_err(one.dbeta, ref.dbeta) < 1e-5);
      if (rows > 1) CHECK(rel_err(one.var_unbiased, ref.var_unbiased) < 1e-6);
      CHECK(bit_equal(one.y, two.y));
      CHECK(bit_equal(one.mean, two.mean));
      CHECK(bit_equal(one.invstd, two.invstd));
      CHECK(bit_equal(one.y_eval, two.y_eval));
      CHECK(bit_equal(one.dx, two.dx));
      CHECK(bit_equal(one.dgamma, two.dgamma));
      CHECK(bit_equal(one.dbeta, two.dbeta));
    }
    // Double: portable path against the long-double reference.
    const std::vector<double> xd(x.begin(), x.end()), dyd(dy.begin(), dy.end()), gd(gamma.begin(), gamma.end()),
        bd(beta.begin(), beta.end()), rmd(rmean.begin(), rmean.end()), rvd(rvar.begin(), rvar.end());
    const BnResult<double> dref = run(true, rows, C, xd, gd, bd, dyd, rmd, rvd, affine);
    const BnResult<double> dfast = run(false, rows, C, xd, gd, bd, dyd, rmd, rvd, affine);
    CHECK(rel_err(dfast.y, dref.y) < 1e-12);
    CHECK(rel_err(dfast.y_eval, dref.y_eval) < 1e-13);
    CHECK(dx_err(dfast, dref, dyd, gd, affine) < 1e-11);
    CHECK(rel_err(dfast.dgamma, dref.dgamma) < 1e-11);
    CHECK(rel_err(dfast.dbeta, dref.dbeta) < 1e-11);
  }
}

}  // namespace

TEST_CASE("batchnorm: ResNet-20 / MobileNet / BatchNorm1d shapes") {
  check_shape(4 * 32 * 32, 16);  // ResNet-20 stage 1, batch 4
  check_shape(4 * 16 * 16, 32);
  check_shape(4 * 8 * 8, 64);
  check_shape(1 * 56 * 56, 128);  // MobileNet ImageNet
  check_shape(2 * 7 * 7, 1024);
  check_shape(2 * 4 * 4, 576);
  check_shape(128, 512);  // BatchNorm1d
  check_shape(4, 10);
}

TEST_CASE("batchnorm: odd tails and large offsets") {
  for (int64_t C : {1, 3, 17, 33, 65})
    for (int64_t rows : {1, 2, 7, 67, 1031}) check_shape(rows, C);
  check_shape(3000, 17, 1000.0, 1.0);  // mean far from zero
  check_shape(5000, 3, -50.0, 1e-2);
}

TEST_CASE("batchnorm: forward_train normalizes each channel") {
  const int64_t rows = 2 * 32 * 32, C = 33;
  for (double offset : {0.0, 300.0}) {
    const auto x = random_vec<float>(rows * C, 7, {.dist = Dist::normal, .offset = offset, .spread = 3.0});
    auto y = sized<float>(rows * C);
    batchnorm_forward_train(rows, C, x.data(), nullptr, nullptr, 1e-5, y.data(), nullptr, nullptr);
    for (int64_t c = 0; c < C; ++c) {
      double sum = 0, sq = 0;
      for (int64_t r = 0; r < rows; ++r) sum += y[size_t(r * C + c)];
      const double mean = sum / double(rows);
      for (int64_t r = 0; r < rows; ++r) sq += (y[size_t(r * C + c)] - mean) * (y[size_t(r * C + c)] - mean);
      CHECK(std::abs(mean) < 1e-5);
      CHECK(std::abs(sq / double(rows) - 1.0) < 1e-4);
    }
  }
}

TEST_CASE("batchnorm: backward matches finite differences (double)") {
  const int64_t rows = 6, C = 3;
  const double eps = 1e-5, h = 1e-6;
  auto x = random_vec<double>(rows * C, 11, {.dist = Dist::normal, .offset = 0.3, .spread = 1.5});
  auto gamma = random_vec<double>(C, 12, {.dist = Dist::normal, .offset = 1.0, .spread = 0.5}),
       beta = random_vec<double>(C, 13, {.dist = Dist::normal});
  const auto g = random_vec<double>(rows * C, 14, {.dist = Dist::normal});  // loss = sum(y * g), so dy = g
  auto loss = [&]() {
    std::vector<double> y(static_cast<size_t>(rows * C));
    batchnorm_forward_train(rows, C, x.data(), gamma.data(), beta.data(), eps, y.data(), nullptr, nullptr);
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += y[i] * g[i];
    return l;
  };
  auto numeric = [&](std::vector<double>& v, size_t i) { return central_difference(v, i, h, loss); };
  std::vector<double> y(static_cast<size_t>(rows * C)), mean(static_cast<size_t>(C)), invstd(static_cast<size_t>(C));
  batchnorm_forward_train(rows, C, x.data(), gamma.data(), beta.data(), eps, y.data(), mean.data(), invstd.data());
  for (bool ref : {false, true}) {
    std::vector<double> dx(static_cast<size_t>(rows * C)), dgamma(static_cast<size_t>(C)),
        dbeta(static_cast<size_t>(C));
    if (ref)
      batchnorm_backward_ref(rows, C, x.data(), g.data(), mean.data(), invstd.data(), gamma.data(), dx.data(),
                             dgamma.data(), dbeta.data());
    else
      batchnorm_backward(rows, C, x.data(), g.data(), mean.data(), invstd.data(), gamma.data(), dx.data(),
                         dgamma.data(), dbeta.data());
    for (size_t i = 0; i < x.size(); ++i) CHECK(dx[i] == doctest::Approx(numeric(x, i)).epsilon(1e-6));
    for (size_t c = 0; c < size_t(C); ++c) {
      CHECK(dgamma[c] == doctest::Approx(numeric(gamma, c)).epsilon(1e-6));
      CHECK(dbeta[c] == doctest::Approx(numeric(beta, c)).epsilon(1e-6));
    }
  }
}

TEST_CASE("batchnorm: unbiased variance and running statistics") {
  const int64_t rows = 5, C = 2;
  const std::vector<float> x = {1, 10, 2, 20, 3, 30, 4, 40, 5, 50};
  std::vector<float> y(10), mean(2), invstd(2), var(2);
  batchnorm_forward_train(rows, C, x.data(), nullptr, nullptr, 0.0, y.data(), mean.data(), invstd.data(), var.data());
  CHECK(mean[0] == doctest::Approx(3.0));
  CHECK(mean[1] == doctest::Approx(30.0));
  CHECK(var[0] == doctest::Approx(2.5));
  CHECK(var[1] == doctest::Approx(250.0));
  CHECK(invstd[0] == doctest::Approx(1.0 / std::sqrt(2.0)));
  std::vector<float> rmean = {0.f, 0.f}, rvar = {1.f, 1.f};
  batchnorm_update_running_stats(C, 0.1, mean.data(), var.data(), rmean.data(), rvar.data());
  CHECK(rmean[0] == doctest::Approx(0.3));
  CHECK(rvar[1] == doctest::Approx(0.9 + 25.0));
}

namespace {

// Fused ReLU: forward = max(unfused y, 0) and backward = unfused backward of dy * [y > 0], bit for bit,
// for both code paths and thread counts; the reference twin agrees within rounding.
template <class T>
void check_fused_relu(int64_t rows, int64_t C) {
  CAPTURE(rows);
  CAPTURE(C);
  const double eps = 1e-5;
  const auto x = random_vec<T>(rows * C, 21, {.dist = Dist::normal, .offset = 0.2, .spread = 1.5}),
             dy = random_vec<T>(rows * C, 22, {.dist = Dist::normal});
  const auto gamma = random_vec<T>(C, 23, {.dist = Dist::normal, .offset = 1.0, .spread = 0.3}),
             beta = random_vec<T>(C, 24, {.dist = Dist::normal, .offset = 0.0, .spread = 0.5});
  const auto rmean = random_vec<T>(C, 25, {.dist = Dist::normal, .offset = 0.2, .spread = 0.1}),
             rvar = sized<T>(C, T(2));
  for (bool simd : {true, false}) {
    CAPTURE(simd);
    const Avx512Guard avx512(simd);
    auto y = sized<T>(rows * C), mean = sized<T>(C), invstd = sized<T>(C);
    batchnorm_forward_train(rows, C, x.data(), gamma.data(), beta.data(), eps, y.data(), mean.data(), invstd.data());
    auto dy_masked = dy;
    for (size_t i = 0; i < y.size(); ++i) dy_masked[i] = y[i] > T(0) ? dy[i] : T(0);
    auto dx = sized<T>(rows * C), dgamma = sized<T>(C), dbeta = sized<T>(C);
    batchnorm_backward(rows, C, x.data(), dy_masked.data(), mean.data(), invstd.data(), gamma.data(), dx.data(),
                       dgamma.data(), dbeta.data());
    auto y_eval = sized<T>(rows * C);
    batchnorm_forward_eval(rows, C, x.data(), rmean.data(), rvar.data(), gamma.data(), beta.data(), eps, y_eval.data());
    for (int threads : {1, 2}) {
      CAPTURE(threads);
      set_num_threads(threads);
      auto yr = sized<T>(rows * C, T(-7)), affine = sized<T>(2 * C), mean_r = sized<T>(C), invstd_r = sized<T>(C);
      batchnorm_forward_train(rows, C, x.data(), gamma.data(), beta.data(), eps, yr.data(), mean_r.data(),
                              invstd_r.data(), nullptr, affine.data());
      bool relu_of_y = true;
      for (size_t i = 0; i < y.size(); ++i) relu_of_y = relu_of_y && yr[i] == (y[i] > T(0) ? y[i] : T(0));
      CHECK(relu_of_y);
      CHECK(bit_equal(mean_r, mean));
      auto dxr = sized<T>(rows * C, T(-7)), dgr = sized<T>(C), dbr = sized<T>(C);
      batchnorm_backward(rows, C, x.data(), dy.data(), mean.data(), invstd.data(), gamma.data(), dxr.data(), dgr.data(),
                         dbr.data(), affine.data());
      CHECK(bit_equal(dxr, dx));
      CHECK(bit_equal(dgr, dgamma));
      CHECK(bit_equal(dbr, dbeta));
      auto yer = sized<T>(rows * C, T(-7));
      batchnorm_forward_eval(rows, C, x.data(), rmean.data(), rvar.data(), gamma.data(), beta.data(), eps, yer.data(),
                             true);
      bool eval_relu = true;
      for (size_t i = 0; i < y.size(); ++i) eval_relu = eval_relu && yer[i] == (y_eval[i] > T(0) ? y_eval[i] : T(0));
      CHECK(eval_relu);
      // Reference twin: same mask (given the same affine), wide-type formulas.
      auto y_ref = sized<T>(rows * C), affine_ref = sized<T>(2 * C);
      batchnorm_forward_train_ref(rows, C, x.data(), gamma.data(), beta.data(), eps, y_ref.data(), nullptr, nullptr,
                                  nullptr, affine_ref.data());
      const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-12;
      CHECK(rel_err(yr, y_ref) < tol);
      CHECK(rel_err(affine, affine_ref) < tol);
      auto dx_ref = sized<T>(rows * C), dg_ref = sized<T>(C), db_ref = sized<T>(C);
      batchnorm_backward_ref(rows, C, x.data(), dy.data(), mean.data(), invstd.data(), gamma.data(), dx_ref.data(),
                             dg_ref.data(), db_ref.data(), affine.data());
      BnResult<T> fast, ref;
      fast.dx = dxr, ref.dx = dx_ref, ref.invstd = invstd;
      CHECK(dx_err(fast, ref, dy, gamma, true) < 100 * tol);
      CHECK(rel_err(dgr, dg_ref) < 100 * tol);
      CHECK(rel_err(dbr, db_ref) < 100 * tol);
    }
  }
}

}  // namespace

TEST_CASE("batchnorm: fused ReLU (ResNet-20 shapes and odd tails)") {
  for (auto [rows, C] : {std::pair<int64_t, int64_t>{4 * 32 * 32, 16},
                         {4 * 16 * 16, 32},
                         {4 * 8 * 8, 64},
                         {2 * 7 * 7, 1024},
                         {1031, 17},
                         {67, 3},
                         {7, 65},
                         {2, 1}}) {
    check_fused_relu<float>(rows, C);
    check_fused_relu<double>(rows, C);
  }
}

namespace {

// Double backward (the derivatives of backward's dx, gradient-l1 training): the fast kernel against
// its `_ref` twin, with and without gamma and the fused ReLU, bit-identical for 1 and 2 threads and
// for the AVX-512 and portable paths' own results across thread counts.
template <class T>
struct Bwd2 {
  std::vector<T> ddy, ddx, dgamma;
};

template <class T>
Bwd2<T> run_bwd2(bool ref, int64_t rows, int64_t C, const std::vector<T>& x, const std::vector<T>& dy,
                 const std::vector<T>& mean, const std::vector<T>& invstd, const T* gamma, const T* affine,
                 const std::vector<T>& u) {
  Bwd2<T> o{sized<T>(rows * C, T(-7)), sized<T>(rows * C, T(-7)), sized<T>(C, T(-7))};
  auto f = ref ? static_cast<void (*)(int64_t, int64_t, const T*, const T*, const T*, const T*, const T*, const T*,
                                      const T*, T*, T*, T*)>(batchnorm_backward_backward_ref)
               : static_cast<void (*)(int64_t, int64_t, const T*, const T*, const T*, const T*, const T*, const T*,
                                      const T*, T*, T*, T*)>(batchnorm_backward_backward);
  f(rows, C, x.data(), dy.data(), mean.data(), invstd.data(), gamma, affine, u.data(), o.ddy.data(), o.ddx.data(),
    gamma ? o.dgamma.data() : nullptr);
  return o;
}

// Like dx, ddy and ddx cancel heavily (exactly for rows == 2): their errors are measured against the
// size of their terms, |gamma invstd u| and |gamma invstd^2 u g| (max over the tensor).
template <class T>
double bwd2_err(const std::vector<T>& a, const std::vector<T>& b, const std::vector<T>& invstd, const T* gamma,
                const std::vector<T>& u, const std::vector<T>& dy, bool second) {
  const size_t C = invstd.size();
  double diff = 0, scale = 1e-3, umax = 0, gmax = 0;
  for (size_t i = 0; i < u.size(); ++i)
    umax = std::max(umax, std::abs(double(u[i]))), gmax = std::max(gmax, std::abs(double(dy[i])));
  for (size_t c = 0; c < C; ++c) {
    const double k = (gamma ? std::abs(double(gamma[c])) : 1.0) * double(invstd[c]);
    scale = std::max(scale, second ? k * double(invstd[c]) * umax * gmax : k * umax);
  }
  for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
  return diff / scale;
}

// dgamma = invstd sum u (g - A - xhat B): a sum of rows terms of size |invstd u g| (random signs: sqrt(rows)).
template <class T>
double dgamma_err(const std::vector<T>& a, const std::vector<T>& b, const std::vector<T>& invstd,
                  const std::vector<T>& u, const std::vector<T>& dy, int64_t rows) {
  double diff = 0, scale = 1e-3, umax = 0, gmax = 0;
  for (size_t i = 0; i < u.size(); ++i)
    umax = std::max(umax, std::abs(double(u[i]))), gmax = std::max(gmax, std::abs(double(dy[i])));
  for (size_t c = 0; c < a.size(); ++c) {
    diff = std::max(diff, std::abs(double(a[c]) - double(b[c])));
    scale = std::max(scale, std::sqrt(double(rows)) * double(invstd[c]) * umax * gmax);
  }
  return diff / scale;
}

template <class T>
void check_bwd2(int64_t rows, int64_t C) {
  CAPTURE(rows);
  CAPTURE(C);
  const double eps = 1e-5;
  const auto x = random_vec<T>(rows * C, 31, {.dist = Dist::normal, .offset = 0.3, .spread = 1.5}),
             dy = random_vec<T>(rows * C, 32, {.dist = Dist::normal}),
             u = random_vec<T>(rows * C, 33, {.dist = Dist::normal, .offset = 0.1});
  const auto gamma = random_vec<T>(C, 34, {.dist = Dist::normal, .offset = 1.0, .spread = 0.3}),
             beta = random_vec<T>(C, 35, {.dist = Dist::normal, .spread = 0.5});
  auto y = sized<T>(rows * C), mean = sized<T>(C), invstd = sized<T>(C), affine = sized<T>(2 * C);
  batchnorm_forward_train(rows, C, x.data(), gamma.data(), beta.data(), eps, y.data(), mean.data(), invstd.data(),
                          nullptr, affine.data());
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-11;
  for (bool affine_on : {true, false})
    for (bool relu : {false, true}) {
      CAPTURE(affine_on);
      CAPTURE(relu);
      const T* g = affine_on ? gamma.data() : nullptr;
      const T* a = relu ? affine.data() : nullptr;
      const Bwd2<T> ref = run_bwd2(true, rows, C, x, dy, mean, invstd, g, a, u);
      for (bool simd : {true, false}) {
        CAPTURE(simd);
        const Avx512Guard avx512(simd);
        set_num_threads(1);
        const Bwd2<T> one = run_bwd2(false, rows, C, x, dy, mean, invstd, g, a, u);
        set_num_threads(2);
        const Bwd2<T> two = run_bwd2(false, rows, C, x, dy, mean, invstd, g, a, u);
        CHECK(bwd2_err(one.ddy, ref.ddy, invstd, g, u, dy, false) < tol);
        CHECK(bwd2_err(one.ddx, ref.ddx, invstd, g, u, dy, true) < tol);
        if (g) CHECK(dgamma_err(one.dgamma, ref.dgamma, invstd, u, dy, rows) < tol);
        CHECK(bit_equal(one.ddy, two.ddy));
        CHECK(bit_equal(one.ddx, two.ddx));
        CHECK(bit_equal(one.dgamma, two.dgamma));
        if (relu) {  // ddy is 0 exactly where the ReLU was off
          bool masked = true;
          for (size_t i = 0; i < y.size(); ++i) masked = masked && (y[i] > T(0) || one.ddy[i] == T(0));
          CHECK(masked);
        }
      }
    }
}

}  // namespace

TEST_CASE("batchnorm: double backward (ResNet-20 shapes and odd tails)") {
  for (auto [rows, C] : {std::pair<int64_t, int64_t>{4 * 32 * 32, 16},
                         {4 * 16 * 16, 32},
                         {4 * 8 * 8, 64},
                         {128, 512},
                         {1031, 17},
                         {67, 3},
                         {7, 65},
                         {2, 1}}) {
    check_bwd2<float>(rows, C);
    check_bwd2<double>(rows, C);
  }
}

TEST_CASE("batchnorm: double backward matches finite differences of backward (double)") {
  // P = <u, dx(x, dy, gamma)>: ddx, ddy, dgamma are its derivatives. dx from batchnorm_backward with the
  // statistics recomputed at every point (they are functions of x), with and without the fused ReLU.
  const int64_t rows = 7, C = 3;
  const double eps = 1e-5, h = 1e-6;
  auto x = random_vec<double>(rows * C, 41, {.dist = Dist::normal, .offset = 0.3, .spread = 1.5});
  auto dy = random_vec<double>(rows * C, 42, {.dist = Dist::normal});
  auto gamma = random_vec<double>(C, 43, {.dist = Dist::normal, .offset = 1.0, .spread = 0.5});
  const auto beta = random_vec<double>(C, 44, {.dist = Dist::normal, .spread = 0.3});
  const auto u = random_vec<double>(rows * C, 45, {.dist = Dist::normal});
  for (bool relu : {false, true}) {
    CAPTURE(relu);
    // The ReLU mask is held fixed (its derivative is 0 away from the kinks): the affine of the unperturbed point.
    auto y0 = sized<double>(rows * C), affine = sized<double>(2 * C), m0 = sized<double>(C), r0 = sized<double>(C);
    batchnorm_forward_train(rows, C, x.data(), gamma.data(), beta.data(), eps, y0.data(), m0.data(), r0.data(), nullptr,
                            affine.data());
    std::vector<double> mask(size_t(rows * C), 1.0);
    if (relu)
      for (size_t i = 0; i < mask.size(); ++i) mask[i] = y0[i] > 0 ? 1.0 : 0.0;
    auto P = [&]() {
      auto y = sized<double>(rows * C), mean = sized<double>(C), invstd = sized<double>(C),
           dx = sized<double>(rows * C);
      batchnorm_forward_train(rows, C, x.data(), gamma.data(), beta.data(), eps, y.data(), mean.data(), invstd.data());
      std::vector<double> g(dy.size());
      for (size_t i = 0; i < g.size(); ++i) g[i] = dy[i] * mask[i];
      batchnorm_backward(rows, C, x.data(), g.data(), mean.data(), invstd.data(), gamma.data(), dx.data(), nullptr,
                         nullptr);
      double p = 0;
      for (size_t i = 0; i < dx.size(); ++i) p += u[i] * dx[i];
      return p;
    };
    auto numeric = [&](std::vector<double>& v, size_t i) { return central_difference(v, i, h, P); };
    for (bool ref : {false, true}) {
      CAPTURE(ref);
      const Bwd2<double> o = run_bwd2(ref, rows, C, x, dy, m0, r0, gamma.data(), relu ? affine.data() : nullptr, u);
      for (size_t i = 0; i < x.size(); ++i) {
        CHECK(o.ddx[i] == doctest::Approx(numeric(x, i)).epsilon(1e-5));
        CHECK(o.ddy[i] == doctest::Approx(numeric(dy, i)).epsilon(1e-5));
      }
      for (size_t c = 0; c < size_t(C); ++c) CHECK(o.dgamma[c] == doctest::Approx(numeric(gamma, c)).epsilon(1e-5));
    }
  }
}

// Synchronized batch norm's pieces against their _ref twins; with the call's own sums and count = rows
// they reproduce batchnorm_forward_train's statistics and batchnorm_backward's dx.
TEST_CASE("batchnorm: stats / backward_sums / backward_dx (ResNet-20 shapes and odd tails)") {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {4 * 32 * 32, 16}, {4 * 16 * 16, 32}, {4 * 8 * 8, 64}, {128, 512}, {2, 3},
      {7, 17},           {67, 33},          {1031, 65},      {3000, 5}};
  for (const auto& [rows, C] : shapes) {
    CAPTURE(rows);
    CAPTURE(C);
    const auto x = random_vec<float>(rows * C, 11, {.offset = 3.0, .spread = 2.0});
    const auto dy = random_vec<float>(rows * C, 12);
    const auto gamma = random_vec<float>(C, 13, {.offset = 1.0, .spread = 0.5});
    auto mean = sized<double>(C), m2 = sized<double>(C), mean_r = sized<double>(C), m2_r = sized<double>(C);
    batchnorm_stats(rows, C, x.data(), mean.data(), m2.data());
    batchnorm_stats_ref(rows, C, x.data(), mean_r.data(), m2_r.data());
    CHECK(rel_err(mean, mean_r) < 1e-6);
    CHECK(rel_err(m2, m2_r) < 1e-5);
    // The forward's own statistics agree with these.
    auto y = sized<float>(rows * C), fmean = sized<float>(C), finv = sized<float>(C);
    batchnorm_forward_train(rows, C, x.data(), gamma.data(), nullptr, 1e-5, y.data(), fmean.data(), finv.data());
    for (int64_t c = 0; c < C; ++c) {
      CHECK(fmean[size_t(c)] == float(mean[size_t(c)]));
      CHECK(finv[size_t(c)] == float(1.0 / std::sqrt(m2[size_t(c)] / double(rows) + 1e-5)));
    }
    auto s = sized<double>(C), d = sized<double>(C), s_r = sized<double>(C), d_r = sized<double>(C);
    batchnorm_backward_sums(rows, C, x.data(), dy.data(), fmean.data(), s.data(), d.data());
    batchnorm_backward_sums_ref(rows, C, x.data(), dy.data(), fmean.data(), s_r.data(), d_r.data());
    CHECK(rel_err(s, s_r) < 1e-5);
    CHECK(rel_err(d, d_r) < 1e-5);
    auto dx = sized<float>(rows * C), dx_r = sized<float>(rows * C), dx_bn = sized<float>(rows * C);
    batchnorm_backward_dx(rows, C, x.data(), dy.data(), fmean.data(), finv.data(), gamma.data(), s.data(), d.data(),
                          double(rows), dx.data());
    batchnorm_backward_dx_ref(rows, C, x.data(), dy.data(), fmean.data(), finv.data(), gamma.data(), s.data(), d.data(),
                              double(rows), dx_r.data());
    batchnorm_backward(rows, C, x.data(), dy.data(), fmean.data(), finv.data(), gamma.data(), dx_bn.data(), nullptr,
                       nullptr);
    BnResult<float> a, b;
    a.dx = dx, b.dx = dx_r, b.invstd = finv;
    CHECK(dx_err(a, b, dy, gamma, true) < 1e-5);
    CHECK(bit_equal(dx, dx_bn));  // the same code path as batchnorm_backward
    // Sums over "more rows" (a second rank's): dx uses the given count.
    std::vector<double> s2(s), d2(d);
    for (auto& v : s2) v *= 2;
    for (auto& v : d2) v *= 2;
    batchnorm_backward_dx(rows, C, x.data(), dy.data(), fmean.data(), finv.data(), gamma.data(), s2.data(), d2.data(),
                          2.0 * double(rows), dx.data());
    a.dx = dx;
    CHECK(dx_err(a, b, dy, gamma, true) < 1e-5);  // twice the sums over twice the rows: the same dx
  }
}
