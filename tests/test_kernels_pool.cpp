#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/kernels/cpu.h"
#include "core/kernels/pool.h"
#include "core/parallel.h"
#include "kernel_test_util.h"

using namespace lowbit;
using namespace lowbit::kernels;

using lowbit::test::bit_equal;
using lowbit::test::random_vec;
using lowbit::test::rel_err;
using Dist = lowbit::test::RandomSpec::Dist;

namespace {

template <class T>
std::vector<T> zeros(int64_t n) {
  return std::vector<T>(static_cast<size_t>(n), T(0));
}

Pool2dGeometry pool_geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t k, int64_t stride, int64_t pad,
                         bool ceil_mode = false) {
  Pool2dGeometry g;
  g.N = N;
  g.C = C;
  g.H = H;
  g.W = W;
  g.R = g.S = k;
  g.stride_h = g.stride_w = stride;
  g.pad_h = g.pad_w = pad;
  g.ceil_mode = ceil_mode;
  return g;
}

void check_max(const Pool2dGeometry& g) {
  const int64_t nx = g.N * g.H * g.W * g.C, ny = g.N * g.P() * g.Q() * g.C;
  for (bool specials : {false, true}) {
    CAPTURE(specials);
    const auto x = random_vec<float>(nx, 11, {.dist = Dist::quarters, .specials = specials});
    const auto dy = random_vec<float>(ny, 12);
    auto y_ref = zeros<float>(ny), dx_ref = zeros<float>(nx);
    std::vector<int32_t> i_ref(static_cast<size_t>(ny));
    max_pool2d_forward_ref(g, x.data(), y_ref.data(), i_ref.data());
    max_pool2d_backward_ref(g, dy.data(), i_ref.data(), dx_ref.data());
    for (bool simd : {true, false})
      for (int threads : {1, 2}) {
        CAPTURE(simd);
        CAPTURE(threads);
        const Avx512Guard avx512(simd);
        set_num_threads(threads);
        auto y = zeros<float>(ny), y2 = zeros<float>(ny), dx = std::vector<float>(static_cast<size_t>(nx), 5.f);
        std::vector<int32_t> idx(static_cast<size_t>(ny), -5);
        max_pool2d_forward(g, x.data(), y.data(), idx.data());
        max_pool2d_forward(g, x.data(), y2.data(), nullptr);
        max_pool2d_backward(g, dy.data(), idx.data(), dx.data());
        CHECK(bit_equal(y, y_ref));  // NaNs included: same bits
        CHECK(bit_equal(y2, y_ref));
        CHECK(idx == i_ref);
        CHECK(bit_equal(dx, dx_ref));
      }
  }
  // Double through the portable path.
  const auto xd = random_vec<double>(nx, 13, {.dist = Dist::quarters, .specials = true});
  const auto dyd = random_vec<double>(ny, 14);
  auto yd = zeros<double>(ny), yr = zeros<double>(ny), dxd = zeros<double>(nx), dxr = zeros<double>(nx);
  std::vector<int32_t> id(static_cast<size_t>(ny)), ir(static_cast<size_t>(ny));
  max_pool2d_forward(g, xd.data(), yd.data(), id.data());
  max_pool2d_forward_ref(g, xd.data(), yr.data(), ir.data());
  max_pool2d_backward(g, dyd.data(), id.data(), dxd.data());
  max_pool2d_backward_ref(g, dyd.data(), ir.data(), dxr.data());
  CHECK(bit_equal(yd, yr));
  CHECK(id == ir);
  CHECK(bit_equal(dxd, dxr));
}

void check_avg(const Pool2dGeometry& g) {
  const int64_t nx = g.N * g.H * g.W * g.C, ny = g.N * g.P() * g.Q() * g.C;
  const auto x = random_vec<float>(nx, 21), dy = random_vec<float>(ny, 22);
  for (bool include_pad : {true, false}) {
    CAPTURE(include_pad);
    auto y_ref = zeros<float>(ny), dx_ref = zeros<float>(nx);
    avg_pool2d_forward_ref(g, include_pad, x.data(), y_ref.data());
    avg_pool2d_backward_ref(g, include_pad, dy.data(), dx_ref.data());
    for (bool simd : {true, false}) {
      CAPTURE(simd);
      const Avx512Guard avx512(simd);
      std::vector<float> y[2], dx[2];
      for (int t = 0; t < 2; ++t) {
        set_num_threads(t + 1);
        y[t].assign(static_cast<size_t>(ny), 5.f);
        dx[t].assign(static_cast<size_t>(nx), 5.f);
        avg_pool2d_forward(g, include_pad, x.data(), y[t].data());
        avg_pool2d_backward(g, include_pad, dy.data(), dx[t].data());
      }
      CHECK(rel_err(y[0], y_ref) < 1e-6);
      CHECK(rel_err(dx[0], dx_ref) < 1e-6);
      CHECK(bit_equal(y[0], y[1]));
      CHECK(bit_equal(dx[0], dx[1]));
    }
    const std::vector<double> xd(x.begin(), x.end()), dyd(dy.begin(), dy.end());
    auto yd = zeros<double>(ny), yr = zeros<double>(ny), dxd = zeros<double>(nx), dxr = zeros<double>(nx);
    avg_pool2d_forward(g, include_pad, xd.data(), yd.data());
    avg_pool2d_forward_ref(g, include_pad, xd.data(), yr.data());
    avg_pool2d_backward(g, include_pad, dyd.data(), dxd.data());
    avg_pool2d_backward_ref(g, include_pad, dyd.data(), dxr.data());
    CHECK(rel_err(yd, yr) < 1e-14);
    CHECK(rel_err(dxd, dxr) < 1e-14);
  }
}

void check_pool(const Pool2dGeometry& g) {
  CAPTURE(g.N);
  CAPTURE(g.C);
  CAPTURE(g.H);
  CAPTURE(g.W);
  CAPTURE(g.R);
  CAPTURE(g.S);
  CAPTURE(g.stride_h);
  CAPTURE(g.pad_h);
  CAPTURE(g.ceil_mode);
  check_max(g);
  check_avg(g);
}

void check_global(int64_t N, int64_t H, int64_t W, int64_t C) {
  CAPTURE(N);
  CAPTURE(H);
  CAPTURE(W);
  CAPTURE(C);
  const int64_t nx = N * H * W * C;
  const auto x = random_vec<float>(nx, 31), dy = random_vec<float>(N * C, 32);
  auto y_ref = zeros<float>(N * C), dx_ref = zeros<float>(nx);
  global_avg_pool_forward_ref(N, H, W, C, x.data(), y_ref.data());
  global_avg_pool_backward_ref(N, H, W, C, dy.data(), dx_ref.data());
  for (bool simd : {true, false}) {
    CAPTURE(simd);
    const Avx512Guard avx512(simd);
    std::vector<float> y[2], dx[2];
    for (int t = 0; t < 2; ++t) {
      set_num_threads(t + 1);
      y[t].assign(static_cast<size_t>(N * C), 5.f);
      dx[t].assign(static_cast<size_t>(nx), 5.f);
      global_avg_pool_forward(N, H, W, C, x.data(), y[t].data());
      global_avg_pool_backward(N, H, W, C, dy.data(), dx[t].data());
    }
    CHECK(rel_err(y[0], y_ref) < 1e-6);
    CHECK(rel_err(dx[0], dx_ref) < 1e-6);
    CHECK(bit_equal(y[0], y[1]));
    CHECK(bit_equal(dx[0], dx[1]));
  }
  const std::vector<double> xd(x.begin(), x.end()), dyd(dy.begin(), dy.end());
  auto yd = zeros<double>(N * C), yr = zeros<double>(N * C), dxd = zeros<double>(nx), dxr = zeros<double>(nx);
  global_avg_pool_forward(N, H, W, C, xd.data(), yd.data());
  global_avg_pool_forward_ref(N, H, W, C, xd.data(), yr.data());
  global_avg_pool_backward(N, H, W, C, dyd.data(), dxd.data());
  global_avg_pool_backward_ref(N, H, W, C, dyd.data(), dxr.data());
  CHECK(rel_err(yd, yr) < 1e-14);
  CHECK(rel_err(dxd, dxr) < 1e-14);
}

}  // namespace

TEST_CASE("ceil_div rounds up for either sign of the numerator") {
  for (int64_t b : {1, 2, 3, 7})
    for (int64_t a = -20; a <= 20; ++a) {
      CAPTURE(a);
      CAPTURE(b);
      CHECK(ceil_div(a, b) == int64_t(std::ceil(double(a) / double(b))));
    }
  static_assert(ceil_div(-3, 2) == -1 && ceil_div(3, 2) == 2 && ceil_div(0, 5) == 0 && ceil_div(-4, 2) == -2);
}

TEST_CASE("pool: model layers") {
  check_pool(pool_geom(1, 64, 112, 112, 3, 2, 1));  // ResNet stem max pool
  check_pool(pool_geom(2, 64, 32, 32, 2, 2, 0));    // VGG-CIFAR
  check_pool(pool_geom(2, 128, 16, 16, 2, 2, 0));
  check_pool(pool_geom(2, 512, 4, 4, 2, 2, 0));
  check_pool(pool_geom(2, 192, 28, 28, 3, 1, 1));        // Inception branch pool
  check_pool(pool_geom(1, 480, 28, 28, 3, 2, 0, true));  // GoogLeNet ceil_mode
  check_pool(pool_geom(2, 128, 16, 16, 2, 2, 0));        // DenseNet transition avg
  check_pool(pool_geom(2, 512, 7, 7, 7, 1, 0));          // ResNet head 7x7 avg
}

TEST_CASE("pool: odd tails and ceil_mode") {
  for (int64_t C : {1, 3, 17, 33}) {
    check_pool(pool_geom(2, C, 7, 9, 3, 2, 1));
    check_pool(pool_geom(2, C, 7, 9, 3, 2, 1, true));
    check_pool(pool_geom(1, C, 6, 6, 3, 2, 1, true));
    check_pool(pool_geom(3, C, 5, 5, 2, 2, 0, true));
    check_pool(pool_geom(1, C, 1, 1, 1, 1, 0));
    check_pool(pool_geom(1, C, 1, 7, 1, 2, 0, true));
    check_pool(pool_geom(2, C, 11, 10, 5, 3, 2, true));
    check_pool(pool_geom(1, C, 8, 5, 4, 1, 2));
  }
  Pool2dGeometry g = pool_geom(2, 19, 9, 14, 3, 2, 1, true);
  g.S = 2;
  g.stride_w = 3;
  g.pad_w = 0;
  check_pool(g);
}

TEST_CASE("pool: PyTorch divisor and ceil_mode semantics") {
  // 6x6, window 3, stride 2, pad 1, ceil_mode: P = Q = 4; the last window covers input rows 5..6
  // of the padded input (one real row), so its count_include_pad divisor is 2*2 and otherwise 1.
  const Pool2dGeometry g = pool_geom(1, 1, 6, 6, 3, 2, 1, true);
  REQUIRE(g.P() == 4);
  const std::vector<float> ones(36, 1.f);
  std::vector<float> y(16);
  avg_pool2d_forward(g, true, ones.data(), y.data());
  CHECK(y[0] == doctest::Approx(4.0 / 9.0));
  CHECK(y[15] == doctest::Approx(0.25));
  CHECK(y[5] == doctest::Approx(1.0));
  avg_pool2d_forward(g, false, ones.data(), y.data());
  for (float v : y) CHECK(v == doctest::Approx(1.0));
  // 5x5, window 2, stride 2, ceil_mode: a 1-wide last window.
  const Pool2dGeometry g2 = pool_geom(1, 1, 5, 5, 2, 2, 0, true);
  REQUIRE(g2.P() == 3);
  std::vector<float> x2(25);
  for (int i = 0; i < 25; ++i) x2[size_t(i)] = float(i);
  std::vector<float> y2(9);
  std::vector<int32_t> idx(9);
  max_pool2d_forward(g2, x2.data(), y2.data(), idx.data());
  CHECK(idx == std::vector<int32_t>{6, 8, 9, 16, 18, 19, 21, 23, 24});
  avg_pool2d_forward(g2, true, x2.data(), y2.data());
  CHECK(y2[8] == 24.f);
  CHECK(y2[2] == doctest::Approx((4 + 9) / 2.0));
}

TEST_CASE("pool: max ties keep the first, NaN wins") {
  const Pool2dGeometry g = pool_geom(1, 1, 2, 2, 2, 2, 0);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (bool simd : {true, false}) {
    const Avx512Guard avx512(simd);
    float y;
    int32_t idx;
    const float ties[4] = {1.f, 3.f, 3.f, 2.f};
    max_pool2d_forward(g, ties, &y, &idx);
    CHECK(y == 3.f);
    CHECK(idx == 1);
    const float with_nan[4] = {1.f, nan, 3.f, 2.f};
    max_pool2d_forward(g, with_nan, &y, &idx);
    CHECK(std::isnan(y));
    CHECK(idx == 1);
    const float all_inf[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    max_pool2d_forward(g, all_inf, &y, &idx);
    CHECK(idx == 0);
  }
}

TEST_CASE("pool: global average") {
  check_global(4, 8, 8, 64);  // ResNet-20 head
  check_global(2, 7, 7, 512);
  check_global(2, 4, 4, 1024);
  check_global(3, 3, 5, 17);
  check_global(1, 1, 1, 33);
  check_global(2, 1, 9, 3);
}

TEST_CASE("pool: rejects padding over half the window") {
  const Pool2dGeometry g = pool_geom(1, 1, 4, 4, 2, 2, 2);
  std::vector<float> x(16), y(64);
  CHECK_THROWS(avg_pool2d_forward(g, true, x.data(), y.data()));
}
