// GEMM kernels: gemm / gemm_serial / gemm_blas pinned to gemm_ref over odd tails, all transposes,
// padded leading dimensions, alpha/beta cases, NaN-overwriting beta == 0, conv-like shapes, and
// bit-identical results for 1 vs 2 threads.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/kernels/gemm.h"
#include "core/parallel.h"

namespace {

using lowbit::kernels::GemmArgs;

struct Case {
  int64_t M, N, K;
  bool ta, tb;
  double alpha, beta;
  int64_t pad = 0;  // extra elements on every leading dimension
};

std::string describe(const Case& c) {
  return "M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
         " ta=" + std::to_string(c.ta) + " tb=" + std::to_string(c.tb) + " alpha=" + std::to_string(c.alpha) +
         " beta=" + std::to_string(c.beta) + " pad=" + std::to_string(c.pad);
}

// Operands of one case, row-major with padded leading dimensions; C's padding holds a sentinel.
template <class T>
struct Problem {
  Case c;
  int64_t lda, ldb, ldc;
  std::vector<T> A, B, C0;
  static constexpr T kSentinel = T(12345);

  explicit Problem(const Case& cs, uint32_t seed = 7) : c(cs) {
    const int64_t a_rows = c.ta ? c.K : c.M, a_cols = c.ta ? c.M : c.K;
    const int64_t b_rows = c.tb ? c.N : c.K, b_cols = c.tb ? c.K : c.N;
    lda = a_cols + c.pad;
    ldb = b_cols + c.pad;
    ldc = c.N + c.pad;
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    A.assign(size_t(a_rows * lda), T(0));
    B.assign(size_t(b_rows * ldb), T(0));
    C0.assign(size_t(c.M * ldc), kSentinel);
    for (int64_t i = 0; i < a_rows; ++i)
      for (int64_t j = 0; j < a_cols; ++j) A[size_t(i * lda + j)] = T(dist(rng));
    for (int64_t i = 0; i < b_rows; ++i)
      for (int64_t j = 0; j < b_cols; ++j) B[size_t(i * ldb + j)] = T(dist(rng));
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < c.N; ++j) C0[size_t(i * ldc + j)] = T(dist(rng));
  }

  GemmArgs<T> args(T* C) const {
    GemmArgs<T> g;
    g.trans_a = c.ta;
    g.trans_b = c.tb;
    g.M = c.M;
    g.N = c.N;
    g.K = c.K;
    g.alpha = T(c.alpha);
    g.A = A.data();
    g.lda = lda;
    g.B = B.data();
    g.ldb = ldb;
    g.beta = T(c.beta);
    g.C = C;
    g.ldc = ldc;
    return g;
  }

  // Scale of the exact result at (i, j): |alpha| * sum_k |a_ik b_kj| + |beta c_ij|.
  double magnitude(int64_t i, int64_t j) const {
    double s = 0;
    for (int64_t k = 0; k < c.K; ++k) {
      const double a = c.ta ? A[size_t(k * lda + i)] : A[size_t(i * lda + k)];
      const double b = c.tb ? B[size_t(j * ldb + k)] : B[size_t(k * ldb + j)];
      s += std::fabs(a * b);
    }
    const double c_old = c.beta == 0 ? 0.0 : std::fabs(double(C0[size_t(i * ldc + j)]));
    return std::fabs(c.alpha) * s + std::fabs(c.beta) * c_old;
  }
};

template <class T>
using GemmFn = void (*)(const GemmArgs<T>&);

// Runs fn on a copy of C0 (optionally NaN-filled when beta == 0) and checks it against gemm_ref:
// per element |got - ref| <= eps * (K + 4) * magnitude, padding untouched, no NaN.
template <class T>
void check_against_ref(const Problem<T>& p, GemmFn<T> fn, const char* name, bool nan_c = false) {
  CAPTURE(name);
  INFO(describe(p.c));
  std::vector<T> ref = p.C0, got = p.C0;
  if (nan_c) {
    for (int64_t i = 0; i < p.c.M; ++i)
      for (int64_t j = 0; j < p.c.N; ++j) {
        ref[size_t(i * p.ldc + j)] = std::numeric_limits<T>::quiet_NaN();
        got[size_t(i * p.ldc + j)] = std::numeric_limits<T>::quiet_NaN();
      }
  }
  lowbit::kernels::gemm_ref(p.args(ref.data()));
  fn(p.args(got.data()));
  const double eps = std::numeric_limits<T>::epsilon();
  int64_t bad = 0;
  for (int64_t i = 0; i < p.c.M; ++i) {
    for (int64_t j = 0; j < p.c.N; ++j) {
      const double r = ref[size_t(i * p.ldc + j)], v = got[size_t(i * p.ldc + j)];
      const double tol = eps * double(p.c.K + 4) * p.magnitude(i, j) + std::numeric_limits<T>::min();
      if (!(std::fabs(r - v) <= tol)) {
        if (bad++ < 3) FAIL_CHECK("C(" << i << "," << j << ") = " << v << ", ref " << r << ", tol " << tol);
      }
    }
    for (int64_t j = p.c.N; j < p.ldc; ++j)
      if (got[size_t(i * p.ldc + j)] != Problem<T>::kSentinel) ++bad;
  }
  CHECK(bad == 0);
}

template <class T>
void check_all_paths(const Case& c, bool nan_c = false) {
  const Problem<T> p(c);
  check_against_ref<T>(p, lowbit::kernels::gemm_serial, "gemm_serial", nan_c);
  check_against_ref<T>(p, lowbit::kernels::gemm, "gemm", nan_c);
}

const int64_t kTails[] = {1, 7, 15, 17, 31, 33, 63, 65, 129};

// Restores the thread count a test changed.
struct ThreadGuard {
  int saved = lowbit::num_threads();
  ~ThreadGuard() { lowbit::set_num_threads(saved); }
};

}  // namespace

TEST_CASE("gemm float: odd tails in M, N, K, all transposes") {
  for (int64_t M : kTails)
    for (int64_t N : kTails)
      for (int64_t K : {int64_t(1), int64_t(17), int64_t(65)})
        for (int t = 0; t < 4; ++t) check_all_paths<float>({M, N, K, bool(t & 1), bool(t & 2), 1.0, 0.0});
  for (int64_t K : kTails)
    for (int t = 0; t < 4; ++t) check_all_paths<float>({33, 47, K, bool(t & 1), bool(t & 2), 1.0, 0.0});
}

TEST_CASE("gemm float: K across several cache blocks, wide N, tall M") {
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    check_all_paths<float>({29, 70, 1100, ta, tb, 1.0, 0.5});    // 3 K blocks, beta accumulates once
    check_all_paths<float>({15, 4150, 20, ta, tb, 1.0, 0.0});    // N beyond one column slab
    check_all_paths<float>({1100, 40, 30, ta, tb, -1.0, 1.0});   // M beyond one packed row block
    check_all_paths<float>({130, 200, 513, ta, tb, 0.5, -2.0});  // parallel path, uneven K blocks
  }
}

TEST_CASE("gemm float: padded leading dimensions leave padding untouched") {
  for (int t = 0; t < 4; ++t)
    for (int64_t pad : {1, 3, 16}) {
      check_all_paths<float>({37, 45, 70, bool(t & 1), bool(t & 2), 1.0, 0.0, pad});
      check_all_paths<float>({150, 129, 140, bool(t & 1), bool(t & 2), 0.75, 0.25, pad});
    }
}

TEST_CASE("gemm float: alpha/beta cases") {
  const double ab[][2] = {{1, 0}, {0.5, 0}, {1, 1}, {-1.5, 0.25}, {2, -1}, {0, 0.5}, {0, 0}};
  for (const auto& v : ab)
    for (int t = 0; t < 4; ++t) {
      check_all_paths<float>({19, 35, 23, bool(t & 1), bool(t & 2), v[0], v[1]});
      check_all_paths<float>({140, 97, 130, bool(t & 1), bool(t & 2), v[0], v[1]});
    }
}

TEST_CASE("gemm float: beta == 0 overwrites NaN in C") {
  for (int t = 0; t < 4; ++t) {
    check_all_paths<float>({17, 33, 9, bool(t & 1), bool(t & 2), 1.0, 0.0}, /*nan_c=*/true);
    check_all_paths<float>({131, 95, 600, bool(t & 1), bool(t & 2), 2.0, 0.0}, /*nan_c=*/true);
    check_all_paths<float>({5, 6, 0, bool(t & 1), bool(t & 2), 1.0, 0.0}, /*nan_c=*/true);  // K == 0
  }
}

TEST_CASE("gemm float: degenerate sizes") {
  check_all_paths<float>({0, 5, 5, false, false, 1.0, 0.0});
  check_all_paths<float>({5, 0, 5, false, false, 1.0, 0.0});
  check_all_paths<float>({5, 7, 0, false, false, 1.0, 0.5});
  check_all_paths<float>({1, 1, 1, true, true, 1.0, 1.0});
}

TEST_CASE("gemm float: conv-like shapes (im2col x KRSC weights)") {
  // M = N*P*Q, N = output channels, K = R*S*C; weights KRSC row-major are op(B) = W^T (tb).
  const int64_t shapes[][3] = {
      {1024, 32, 27},    // stem 3x3x3 (batch-1 slice)
      {784, 64, 576},    // 3x3x64 on 28x28
      {196, 128, 1152},  // 3x3x128 on 14x14
      {49, 512, 4608},   // 3x3x512 on 7x7
      {3136, 16, 144},   // 3x3x16 on 56x56
      {200, 24, 40},     // 1x1, channel counts not a multiple of 16
      {100, 96, 80},
  };
  for (const auto& s : shapes) {
    check_all_paths<float>({s[0], s[1], s[2], false, true, 1.0, 0.0});
    check_all_paths<float>({s[0], s[1], s[2], false, false, 1.0, 1.0});
  }
  // Weight gradient dW = dY^T * X_col (ta) and data gradient dX_col = dY * W (no transposes).
  check_all_paths<float>({64, 576, 784, true, false, 1.0, 0.0});
  check_all_paths<float>({784, 576, 64, false, false, 1.0, 0.0});
}

TEST_CASE("gemm float: 1 and 2 threads give bit-identical results, equal to gemm_serial") {
  ThreadGuard guard;
  const Case cases[] = {
      {301, 257, 700, false, false, 1.0, 0.0},  {301, 257, 700, true, true, 0.5, 1.0},
      {1100, 45, 130, false, true, 1.0, 0.0},   {20, 2000, 300, false, false, 1.0, 0.25},
      {513, 129, 1030, true, false, -1.0, 0.0}, {2, 4200, 130, false, true, 1.0, 0.0},
  };
  for (const Case& c : cases) {
    INFO(describe(c));
    const Problem<float> p(c);
    std::vector<float> c1 = p.C0, c2 = p.C0, cs = p.C0;
    lowbit::set_num_threads(1);
    lowbit::kernels::gemm(p.args(c1.data()));
    lowbit::set_num_threads(2);
    lowbit::kernels::gemm(p.args(c2.data()));
    lowbit::kernels::gemm_serial(p.args(cs.data()));
    CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(c1.data(), cs.data(), c1.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("gemm_blas float matches gemm_ref") {
  for (int t = 0; t < 4; ++t) {
    const Problem<float> p({33, 65, 17, bool(t & 1), bool(t & 2), 1.5, 0.5, 2});
    check_against_ref<float>(p, lowbit::kernels::gemm_blas, "gemm_blas");
  }
}

TEST_CASE("gemm double: tails, transposes, alpha/beta, NaN overwrite") {
  for (int64_t M : {1, 7, 17, 65})
    for (int64_t N : {1, 15, 33})
      for (int t = 0; t < 4; ++t) check_all_paths<double>({M, N, 31, bool(t & 1), bool(t & 2), 1.0, 0.0});
  for (int t = 0; t < 4; ++t) {
    check_all_paths<double>({70, 40, 300, bool(t & 1), bool(t & 2), -0.5, 2.0, 3});
    check_all_paths<double>({130, 130, 70, bool(t & 1), bool(t & 2), 1.0, 0.0}, /*nan_c=*/true);
  }
  const Problem<double> p({33, 65, 17, true, false, 1.5, 0.5, 2});
  check_against_ref<double>(p, lowbit::kernels::gemm_blas, "gemm_blas");
}

TEST_CASE("gemm double: 1 and 2 threads give identical results") {
  ThreadGuard guard;
  const Problem<double> p({300, 130, 200, false, true, 1.0, 0.5});
  std::vector<double> c1 = p.C0, c2 = p.C0;
  lowbit::set_num_threads(1);
  lowbit::kernels::gemm(p.args(c1.data()));
  lowbit::set_num_threads(2);
  lowbit::kernels::gemm(p.args(c2.data()));
  CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(double)) == 0);
}
