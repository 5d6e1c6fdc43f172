#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/kernels/cpu.h"
#include "core/kernels/depthwise.h"
#include "core/parallel.h"
#include "kernel_test_util.h"

using namespace lowbit;
using namespace lowbit::kernels;

using lowbit::test::bit_equal;
using lowbit::test::random_vec;
using lowbit::test::rel_err;

namespace {

Conv2dGeometry dw_geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t stride, int64_t R = 3, int64_t pad = 1,
                       int64_t mult = 1, int64_t dil = 1) {
  Conv2dGeometry g;
  g.N = N;
  g.C = C;
  g.H = H;
  g.W = W;
  g.K = C * mult;
  g.R = g.S = R;
  g.stride_h = g.stride_w = stride;
  g.pad_h = g.pad_w = pad;
  g.dil_h = g.dil_w = dil;
  g.groups = C;
  return g;
}

struct Outputs {
  std::vector<float> y, dx, dw, db;
};

Outputs run_fast(const Conv2dGeometry& g, const std::vector<float>& x, const std::vector<float>& w,
                 const std::vector<float>& b, const std::vector<float>& dy) {
  Outputs o;
  o.y.assign(size_t(g.N * g.P() * g.Q() * g.K), -7.f);
  o.dx.assign(size_t(g.N * g.H * g.W * g.C), -7.f);
  o.dw.assign(size_t(g.K * g.R * g.S), -7.f);
  o.db.assign(size_t(g.K), -7.f);
  depthwise_conv2d_forward(g, x.data(), w.data(), b.data(), o.y.data());
  depthwise_conv2d_backward_data(g, dy.data(), w.data(), o.dx.data());
  depthwise_conv2d_backward_weight(g, x.data(), dy.data(), o.dw.data(), o.db.data());
  return o;
}

// Pins the fast float path (AVX-512 and portable) and double to the references; checks that 1 and
// 2 threads give bit-identical results.
void check_shape(const Conv2dGeometry& g) {
  CAPTURE(g.N);
  CAPTURE(g.C);
  CAPTURE(g.H);
  CAPTURE(g.W);
  CAPTURE(g.K);
  CAPTURE(g.R);
  CAPTURE(g.stride_h);
  CAPTURE(g.pad_h);
  CAPTURE(g.dil_h);
  const int64_t nx = g.N * g.H * g.W * g.C, ny = g.N * g.P() * g.Q() * g.K, nw = g.K * g.R * g.S;
  const auto x = random_vec<float>(nx, 1), w = random_vec<float>(nw, 2), b = random_vec<float>(g.K, 3),
             dy = random_vec<float>(ny, 4);

  Outputs ref;
  ref.y.resize(static_cast<size_t>(ny));
  ref.dx.resize(static_cast<size_t>(nx));
  ref.dw.resize(static_cast<size_t>(nw));
  ref.db.resize(size_t(g.K));
  depthwise_conv2d_forward_ref(g, x.data(), w.data(), b.data(), ref.y.data());
  depthwise_conv2d_backward_data_ref(g, dy.data(), w.data(), ref.dx.data());
  depthwise_conv2d_backward_weight_ref(g, x.data(), dy.data(), ref.dw.data(), ref.db.data());

  for (bool simd : {true, false}) {
    CAPTURE(simd);
    const Avx512Guard avx512(simd);
    set_num_threads(1);
    const Outputs one = run_fast(g, x, w, b, dy);
    set_num_threads(2);
    const Outputs two = run_fast(g, x, w, b, dy);
    CHECK(rel_err(one.y, ref.y) < 1e-5);
    CHECK(rel_err(one.dx, ref.dx) < 1e-5);
    CHECK(rel_err(one.dw, ref.dw) < 2e-5);
    CHECK(rel_err(one.db, ref.db) < 2e-5);
    CHECK(bit_equal(one.y, two.y));
    CHECK(bit_equal(one.dx, two.dx));
    CHECK(bit_equal(one.dw, two.dw));
    CHECK(bit_equal(one.db, two.db));
  }

  // Without bias / bias gradient.
  std::vector<float> y_nb(static_cast<size_t>(ny)), y_ref_nb(static_cast<size_t>(ny)), dw_nb(static_cast<size_t>(nw)),
      dw_ref(static_cast<size_t>(nw));
  depthwise_conv2d_forward(g, x.data(), w.data(), nullptr, y_nb.data());
  depthwise_conv2d_forward_ref(g, x.data(), w.data(), nullptr, y_ref_nb.data());
  CHECK(rel_err(y_nb, y_ref_nb) < 1e-5);
  depthwise_conv2d_backward_weight(g, x.data(), dy.data(), dw_nb.data(), nullptr);
  CHECK(bit_equal(dw_nb, run_fast(g, x, w, b, dy).dw));

  // Double: the portable path against the long-double reference.
  std::vector<double> xd(x.begin(), x.end()), wd(w.begin(), w.end()), bd(b.begin(), b.end()), dyd(dy.begin(), dy.end());
  std::vector<double> yd(static_cast<size_t>(ny)), yr(static_cast<size_t>(ny)), dxd(static_cast<size_t>(nx)),
      dxr(static_cast<size_t>(nx)), dwd(static_cast<size_t>(nw)), dwr(static_cast<size_t>(nw)), dbd(size_t(g.K)),
      dbr(size_t(g.K));
  depthwise_conv2d_forward(g, xd.data(), wd.data(), bd.data(), yd.data());
  depthwise_conv2d_forward_ref(g, xd.data(), wd.data(), bd.data(), yr.data());
  depthwise_conv2d_backward_data(g, dyd.data(), wd.data(), dxd.data());
  depthwise_conv2d_backward_data_ref(g, dyd.data(), wd.data(), dxr.data());
  depthwise_conv2d_backward_weight(g, xd.data(), dyd.data(), dwd.data(), dbd.data());
  depthwise_conv2d_backward_weight_ref(g, xd.data(), dyd.data(), dwr.data(), dbr.data());
  CHECK(rel_err(yd, yr) < 1e-13);
  CHECK(rel_err(dxd, dxr) < 1e-13);
  CHECK(rel_err(dwd, dwr) < 1e-12);
  CHECK(rel_err(dbd, dbr) < 1e-12);
}

}  // namespace

TEST_CASE("depthwise: MobileNet-v1/v2 CIFAR layers (batch 2)") {
  // {C, H, stride}: v1 then v2 (expanded planes).
  const int64_t layers[][3] = {{32, 32, 1},  {64, 32, 2}, {128, 16, 1}, {128, 16, 2}, {256, 8, 1},  {256, 8, 2},
                               {512, 4, 1},  {512, 4, 2}, {1024, 2, 1}, {96, 32, 1},  {144, 32, 1}, {144, 32, 2},
                               {192, 16, 2}, {384, 8, 1}, {576, 8, 2},  {960, 4, 1}};
  for (const auto& l : layers) check_shape(dw_geom(2, l[0], l[1], l[1], l[2]));
}

TEST_CASE("depthwise: MobileNet-v1/v2 ImageNet layers (batch 1)") {
  const int64_t layers[][3] = {{32, 112, 1}, {64, 112, 2}, {128, 56, 1}, {128, 56, 2}, {256, 28, 1},
                               {256, 28, 2}, {512, 14, 1}, {512, 14, 2}, {1024, 7, 1}, {96, 112, 2},
                               {144, 56, 1}, {192, 28, 2}, {576, 14, 2}, {960, 7, 1}};
  for (const auto& l : layers) check_shape(dw_geom(1, l[0], l[1], l[1], l[2]));
}

TEST_CASE("depthwise: odd tails, multipliers, padding, dilation") {
  for (int64_t C : {1, 3, 17, 33}) {
    check_shape(dw_geom(2, C, 7, 9, 1));
    check_shape(dw_geom(3, C, 15, 13, 2));
    check_shape(dw_geom(1, C, 5, 6, 2, 3, 0));
    check_shape(dw_geom(2, C, 1, 1, 1));
    check_shape(dw_geom(1, C, 1, 11, 1));
    check_shape(dw_geom(1, C, 11, 1, 2));
    check_shape(dw_geom(2, C, 9, 10, 1, 5, 2));
    check_shape(dw_geom(1, C, 12, 11, 3, 5, 1));
    check_shape(dw_geom(1, C, 10, 9, 1, 3, 2, 1, 2));
    check_shape(dw_geom(2, C, 6, 7, 2, 1, 0));
  }
  for (int64_t mult : {2, 3}) {
    check_shape(dw_geom(2, 3, 9, 7, 1, 3, 1, mult));
    check_shape(dw_geom(1, 17, 8, 11, 2, 3, 1, mult));
    check_shape(dw_geom(1, 8, 16, 16, 1, 3, 1, mult));
    check_shape(dw_geom(2, 5, 7, 7, 2, 5, 2, mult, 2));
  }
  // Asymmetric geometry.
  Conv2dGeometry g = dw_geom(2, 19, 9, 14, 1);
  g.R = 3;
  g.S = 5;
  g.stride_h = 2;
  g.stride_w = 1;
  g.pad_h = 0;
  g.pad_w = 2;
  check_shape(g);
}

TEST_CASE("depthwise: rejects non-depthwise geometry") {
  Conv2dGeometry g = dw_geom(1, 4, 5, 5, 1);
  g.groups = 2;
  std::vector<float> x(100), w(36), y(100);
  CHECK_THROWS(depthwise_conv2d_forward(g, x.data(), w.data(), nullptr, y.data()));
}
