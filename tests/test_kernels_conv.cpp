// Convolution kernels: fast paths pinned to the plain 7-loop references over the zoo's layer
// geometries (batch 1-2, spatial size reduced where the reference would be slow) and odd tails,
// float and double; results are bit-identical for 1 and 2 threads.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "bench/conv_layers.h"
#include "core/kernels/conv.h"
#include "core/kernels/conv_winograd.h"
#include "core/kernels/cpu.h"
#include "core/parallel.h"
#include "kernel_test_util.h"

using namespace lowbit;
using kernels::Conv2dGeometry;
using lowbit::test::random_vec;

namespace {

template <class T>
void check_close(const std::vector<T>& got, const std::vector<T>& want, double rel_tol, const char* what,
                 const std::string& label) {
  REQUIRE(got.size() == want.size());
  double scale = 1.0, worst = 0.0;
  for (T v : want) scale = std::max(scale, std::abs(double(v)));
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::abs(double(got[i]) - double(want[i]));
    worst = std::isnan(d) ? INFINITY : std::max(worst, d);
  }
  INFO(label, " ", what, ": max |fast - ref| = ", worst, " (scale ", scale, ")");
  CHECK(worst <= rel_tol * scale);
}

std::string describe(const Conv2dGeometry& g) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "N%ld C%ld H%ld W%ld K%ld R%ld S%ld str%ldx%ld pad%ldx%ld dil%ldx%ld g%ld", long(g.N),
                long(g.C), long(g.H), long(g.W), long(g.K), long(g.R), long(g.S), long(g.stride_h), long(g.stride_w),
                long(g.pad_h), long(g.pad_w), long(g.dil_h), long(g.dil_w), long(g.groups));
  return buf;
}

template <class T>
struct Outputs {
  std::vector<T> y, dx, dw, db;
};

template <class T>
Outputs<T> run_fast(const Conv2dGeometry& g, const std::vector<T>& x, const std::vector<T>& w, const std::vector<T>& b,
                    const std::vector<T>& dy) {
  // Outputs start as NaN: every element must be overwritten.
  Outputs<T> o{std::vector<T>(dy.size(), T(NAN)), std::vector<T>(x.size(), T(NAN)), std::vector<T>(w.size(), T(NAN)),
               std::vector<T>(b.size(), T(NAN))};
  kernels::conv2d_forward(g, x.data(), w.data(), b.data(), o.y.data());
  kernels::conv2d_backward_data(g, dy.data(), w.data(), o.dx.data());
  kernels::conv2d_backward_weight(g, x.data(), dy.data(), o.dw.data(), o.db.data());
  return o;
}

template <class T>
void check_geometry(const Conv2dGeometry& g, bool check_threads) {
  const std::string label = describe(g);
  const auto x = random_vec<T>(g.N * g.H * g.W * g.C, 11);
  const auto w = random_vec<T>(g.K * g.R * g.S * g.C_per_group(), 12);
  const auto b = random_vec<T>(g.K, 13);
  const auto dy = random_vec<T>(g.N * g.P() * g.Q() * g.K, 14);

  Outputs<T> ref{std::vector<T>(dy.size()), std::vector<T>(x.size()), std::vector<T>(w.size()),
                 std::vector<T>(b.size())};
  kernels::conv2d_forward_ref(g, x.data(), w.data(), b.data(), ref.y.data());
  kernels::conv2d_backward_data_ref(g, dy.data(), w.data(), ref.dx.data());
  kernels::conv2d_backward_weight_ref(g, x.data(), dy.data(), ref.dw.data(), ref.db.data());

  set_num_threads(2);
  const Outputs<T> fast = run_fast(g, x, w, b, dy);
  const double tol = sizeof(T) == 4 ? 2e-5 : 1e-12;
  check_close(fast.y, ref.y, tol, "forward", label);
  check_close(fast.dx, ref.dx, tol, "backward_data", label);
  check_close(fast.dw, ref.dw, tol, "backward_weight", label);
  check_close(fast.db, ref.db, tol, "backward_bias", label);

  // db may be null.
  std::vector<T> dw2(w.size());
  kernels::conv2d_backward_weight(g, x.data(), dy.data(), dw2.data(), static_cast<T*>(nullptr));
  CHECK(std::memcmp(dw2.data(), fast.dw.data(), sizeof(T) * dw2.size()) == 0);
  // No bias.
  std::vector<T> y2(dy.size());
  kernels::conv2d_forward(g, x.data(), w.data(), static_cast<const T*>(nullptr), y2.data());
  for (size_t i = 0; i < y2.size(); ++i) y2[i] += b[i % g.K];
  check_close(y2, ref.y, tol, "forward without bias", label);

  if (check_threads) {
    set_num_threads(1);
    const Outputs<T> one = run_fast(g, x, w, b, dy);
    set_num_threads(2);
    INFO(label);
    CHECK(std::memcmp(one.y.data(), fast.y.data(), sizeof(T) * one.y.size()) == 0);
    CHECK(std::memcmp(one.dx.data(), fast.dx.data(), sizeof(T) * one.dx.size()) == 0);
    CHECK(std::memcmp(one.dw.data(), fast.dw.data(), sizeof(T) * one.dw.size()) == 0);
    CHECK(std::memcmp(one.db.data(), fast.db.data(), sizeof(T) * one.db.size()) == 0);
  }
}

Conv2dGeometry geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S, int64_t sh, int64_t sw,
                    int64_t ph, int64_t pw, int64_t dh = 1, int64_t dw = 1, int64_t groups = 1) {
  Conv2dGeometry g;
  g.N = N, g.C = C, g.H = H, g.W = W, g.K = K, g.R = R, g.S = S;
  g.stride_h = sh, g.stride_w = sw, g.pad_h = ph, g.pad_w = pw, g.dil_h = dh, g.dil_w = dw, g.groups = groups;
  return g;
}

// Zoo layer at batch `n`, spatial size shrunk until one image costs at most ~8M MACs.
Conv2dGeometry shrink(Conv2dGeometry g, int64_t n) {
  g.N = n;
  while (g.macs() / n > 8'000'000 && g.H > 2 * g.R) {
    g.H = (g.H + 1) / 2;
    g.W = (g.W + 1) / 2;
  }
  return g;
}

}  // namespace

TEST_CASE("conv2d fast == ref over the model zoo's layers") {
  std::vector<bench::ConvLayer> layers;
  for (auto table : {bench::resnet20_conv_layers, bench::vgg11_conv_layers, bench::mobilenet_pointwise_layers,
                     bench::lenet5_conv_layers, bench::alexnet_conv_layers})
    for (const auto& l : table(1)) layers.push_back(l);
  int i = 0;
  for (const auto& l : layers) {
    const Conv2dGeometry g = shrink(l.geom, 1 + (i++ % 2));
    CAPTURE(l.name);
    check_geometry<float>(g, /*check_threads=*/true);
  }
}

TEST_CASE("conv2d fast == ref on odd tails, strides, dilation, groups") {
  const std::vector<Conv2dGeometry> cases = {
      geom(2, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1),              // tiny channel counts, odd H/W
      geom(1, 17, 9, 11, 33, 3, 3, 2, 2, 1, 1),           // stride 2, odd sizes, C/K tails
      geom(2, 33, 6, 5, 17, 3, 3, 1, 1, 0, 0),            // no padding
      geom(1, 5, 11, 10, 17, 5, 5, 1, 1, 2, 2),           // 5x5 pad 2
      geom(1, 7, 12, 13, 9, 3, 3, 1, 1, 2, 2, 2, 2),      // dilation 2
      geom(1, 6, 9, 8, 20, 3, 3, 2, 1, 1, 2, 1, 2),       // mixed strides / pads / dilation
      geom(2, 8, 7, 7, 12, 3, 3, 1, 1, 1, 1, 1, 1, 2),    // groups 2 (Cg 4, Kg 6)
      geom(1, 16, 9, 9, 32, 3, 3, 2, 2, 1, 1, 1, 1, 4),   // groups 4, stride 2
      geom(1, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 1, 1, 2),   // groups 2 with full vectors
      geom(2, 16, 9, 9, 16, 3, 3, 1, 1, 1, 1, 1, 1, 16),  // depthwise
      geom(1, 8, 7, 6, 16, 3, 3, 2, 2, 1, 1, 1, 1, 8),    // depthwise, multiplier 2, stride 2
      geom(1, 19, 7, 9, 21, 1, 1, 2, 2, 0, 0),            // 1x1 stride 2, odd sizes
      geom(1, 4, 10, 10, 3, 1, 1, 3, 3, 0, 0),            // stride larger than the kernel
      geom(2, 1, 5, 5, 1, 3, 3, 1, 1, 1, 1),              // one channel
      geom(1, 3, 1, 1, 4, 3, 3, 1, 1, 1, 1),              // 1x1 image, kernel larger than input
      geom(1, 5, 2, 3, 7, 3, 3, 1, 1, 1, 1),              // kernel larger than input
      geom(1, 6, 6, 7, 40, 1, 3, 1, 1, 0, 1),             // 1x3 kernel
      geom(1, 18, 13, 13, 70, 3, 3, 1, 1, 1, 1),          // 5 output vectors (4 + 1 blocks)
      geom(1, 3, 30, 31, 10, 11, 11, 4, 4, 2, 2),         // AlexNet-like 11x11 stride 4
      geom(1, 16, 35, 33, 16, 3, 3, 1, 1, 1, 1),          // rows longer than one tile
  };
  for (const auto& g : cases) {
    check_geometry<float>(g, /*check_threads=*/true);
    check_geometry<double>(g, /*check_threads=*/false);
  }
}

// Paths picked by shape: small-patch backward-weight (groups 1, unit column dilation, R*S*C <= 27),
// strided 1x1 without padding (forward on the pixel tile, backward-data memset + tile), unpadded
// backward-weight reading x in place, pointwise convs on images of <= 64 pixels as one GEMM.
// Tails in K and C, several batch chunks, asymmetric strides.
TEST_CASE("conv2d fast == ref on the shape-specific paths (small patch, strided 1x1, unpadded)") {
  const std::vector<Conv2dGeometry> cases = {
      geom(4, 3, 32, 32, 16, 3, 3, 1, 1, 1, 1),        // ResNet first conv, 4 batch chunks
      geom(3, 3, 11, 13, 21, 3, 3, 1, 1, 1, 1),        // K tail (16 + 5)
      geom(2, 2, 9, 8, 5, 3, 3, 2, 2, 1, 1),           // C 2, stride 2, K < 16
      geom(2, 1, 12, 12, 20, 5, 5, 1, 1, 0, 0),        // 5x5 on one channel, unpadded
      geom(1, 3, 8, 9, 64, 3, 3, 2, 1, 1, 0),          // mixed strides and pads, 4 K blocks
      geom(1, 3, 10, 10, 16, 3, 3, 1, 1, 2, 1, 2, 1),  // row dilation 2
      geom(2, 3, 9, 9, 16, 3, 3, 1, 1, 1, 1, 1, 2),    // column dilation: general path
      geom(2, 33, 9, 10, 70, 1, 1, 2, 3, 0, 0),        // 1x1, strides 2x3, C and K tails
      geom(1, 8, 6, 7, 5, 1, 1, 3, 1, 0, 0),           // 1x1, row stride only
      geom(2, 16, 11, 11, 32, 1, 1, 2, 2, 0, 0),       // 1x1 stride 2, odd image size
      geom(1, 16, 9, 9, 16, 1, 1, 2, 2, 1, 1),         // 1x1 stride 2 with padding: general path
      geom(2, 20, 9, 10, 24, 3, 3, 2, 2, 0, 0),        // 3x3 stride 2 unpadded
      geom(1, 16, 8, 8, 32, 2, 2, 2, 2, 0, 0),         // 2x2 stride 2 unpadded
      geom(3, 40, 4, 4, 36, 1, 1, 1, 1, 0, 0),         // pointwise on a 4x4 image: GEMM path
      geom(2, 17, 3, 3, 5, 1, 1, 1, 1, 0, 0),          // pointwise GEMM path, odd sizes
      geom(1, 20, 9, 8, 24, 1, 1, 1, 1, 0, 0),         // pointwise, 72 pixels: pixel tiles
  };
  for (const auto& g : cases) {
    check_geometry<float>(g, /*check_threads=*/true);
    check_geometry<double>(g, /*check_threads=*/false);
  }
}

// Winograd F(2x2, 3x3) and F(4x4, 3x3) kernels called directly, both tile sizes and both loop
// orders on every shape (conv2d_* picks one per geometry, so most combinations are reached through
// this test alone):
// ResNet-20 / VGG shapes, odd image sizes (partial edge tiles), padding 0 and 2, channel counts
// without a compile-time GEMM variant, several backward-weight batch chunks; bit-identical for 1
// and 2 threads.
TEST_CASE("conv2d Winograd kernels == ref") {
  if (!kernels::cpu_has_avx512()) return;
  const std::vector<Conv2dGeometry> cases = {
      geom(2, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1),  // ResNet-20 stage 2
      geom(2, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1),    // ResNet-20 stage 3
      geom(8, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1),  // stage 1; 4 backward-weight chunks
      geom(2, 16, 7, 5, 32, 3, 3, 1, 1, 1, 1),    // odd H and W, K > C
      geom(3, 32, 6, 9, 16, 3, 3, 1, 1, 0, 0),    // unpadded, K < C
      geom(1, 16, 5, 5, 16, 3, 3, 1, 1, 2, 2),    // padding 2 (output larger than input)
      geom(2, 48, 4, 3, 64, 3, 3, 1, 1, 1, 1),    // C 48: runtime-stride GEMM
      geom(1, 64, 6, 7, 128, 3, 3, 1, 1, 1, 0),   // mixed padding, K 128
      geom(1, 128, 4, 4, 48, 3, 3, 1, 1, 1, 1),   // VGG-like 4x4, K 48
      geom(20, 32, 9, 9, 32, 3, 3, 1, 1, 1, 1),   // odd size, several chunks, partial last block
      geom(2, 16, 13, 11, 16, 3, 3, 1, 1, 1, 1),  // F(4x4) edge tiles of 1 and 3 outputs
      geom(9, 16, 64, 64, 16, 3, 3, 1, 1, 1, 1),  // by point, F(2x2): 2 chunks of tiles (9216 > 8192)
  };
  for (const auto& g : cases) {
    REQUIRE(kernels::winograd_applicable(g));
    const auto x = random_vec<float>(g.N * g.H * g.W * g.C, 21);
    const auto w = random_vec<float>(g.K * 9 * g.C, 22);
    const auto b = random_vec<float>(g.K, 23);
    const auto dy = random_vec<float>(g.N * g.P() * g.Q() * g.K, 24);
    Outputs<float> ref{std::vector<float>(dy.size()), std::vector<float>(x.size()), std::vector<float>(w.size()),
                       std::vector<float>(b.size())};
    kernels::conv2d_forward_ref(g, x.data(), w.data(), b.data(), ref.y.data());
    kernels::conv2d_backward_data_ref(g, dy.data(), w.data(), ref.dx.data());
    kernels::conv2d_backward_weight_ref(g, x.data(), dy.data(), ref.dw.data(), ref.db.data());
    for (int m : {2, 4})
      for (auto order : {kernels::WinogradOrder::kTileBlocks, kernels::WinogradOrder::kPoints}) {
        const std::string label = describe(g) + " F(" + std::to_string(m) + "x" + std::to_string(m) + ") " +
                                  (order == kernels::WinogradOrder::kPoints ? "by point" : "by tile block");
        auto run = [&] {
          Outputs<float> o{std::vector<float>(dy.size(), NAN), std::vector<float>(x.size(), NAN),
                           std::vector<float>(w.size(), NAN), std::vector<float>(b.size(), NAN)};
          kernels::conv2d_forward_winograd(g, x.data(), w.data(), b.data(), o.y.data(), m, order);
          kernels::conv2d_backward_data_winograd(g, dy.data(), w.data(), o.dx.data(), m, order);
          kernels::conv2d_backward_weight_winograd(g, x.data(), dy.data(), o.dw.data(), o.db.data(), m, order);
          return o;
        };
        set_num_threads(2);
        const Outputs<float> two = run();
        // Observed error relative to the output scale: <= 6e-7 for F(2x2), <= 7e-6 for F(4x4).
        const double tol = m == 2 ? 2e-6 : 2e-5;
        check_close(two.y, ref.y, tol, "winograd forward", label);
        check_close(two.dx, ref.dx, tol, "winograd backward_data", label);
        check_close(two.dw, ref.dw, tol, "winograd backward_weight", label);
        check_close(two.db, ref.db, 2e-6, "winograd backward_bias", label);
        set_num_threads(1);
        const Outputs<float> one = run();
        set_num_threads(2);
        INFO(label);
        CHECK(std::memcmp(one.y.data(), two.y.data(), sizeof(float) * one.y.size()) == 0);
        CHECK(std::memcmp(one.dx.data(), two.dx.data(), sizeof(float) * one.dx.size()) == 0);
        CHECK(std::memcmp(one.dw.data(), two.dw.data(), sizeof(float) * one.dw.size()) == 0);
        CHECK(std::memcmp(one.db.data(), two.db.data(), sizeof(float) * one.db.size()) == 0);
      }
  }
  // Outside its domain: stride 2, 5x5, groups, channel counts not a multiple of 16.
  CHECK_FALSE(kernels::winograd_applicable(geom(1, 32, 8, 8, 32, 3, 3, 2, 2, 1, 1)));
  CHECK_FALSE(kernels::winograd_applicable(geom(1, 32, 8, 8, 32, 5, 5, 1, 1, 2, 2)));
  CHECK_FALSE(kernels::winograd_applicable(geom(1, 32, 8, 8, 32, 3, 3, 1, 1, 1, 1, 1, 1, 2)));
  CHECK_FALSE(kernels::winograd_applicable(geom(1, 24, 8, 8, 32, 3, 3, 1, 1, 1, 1)));
  // The dispatch: F(4x4) up to 128 x 128 channels, F(2x2) (by point) above, direct elsewhere.
  CHECK(std::string(kernels::conv2d_algorithm(geom(128, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1))) == "wino4x4");
  CHECK(std::string(kernels::conv2d_algorithm(geom(128, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1))) == "wino4x4");
  CHECK(std::string(kernels::conv2d_algorithm(geom(128, 64, 16, 16, 128, 3, 3, 1, 1, 1, 1))) == "wino4x4");
  CHECK(std::string(kernels::conv2d_algorithm(geom(128, 256, 8, 8, 256, 3, 3, 1, 1, 1, 1))) == "wino2x2");
  CHECK(std::string(kernels::conv2d_algorithm(geom(128, 512, 4, 4, 512, 3, 3, 1, 1, 1, 1))) == "im2col");
  CHECK(std::string(kernels::conv2d_algorithm(geom(128, 512, 2, 2, 512, 3, 3, 1, 1, 1, 1))) == "im2col");
  CHECK(std::string(kernels::conv2d_algorithm(geom(128, 16, 32, 32, 32, 3, 3, 2, 2, 1, 1))) == "direct");
}

// im2col + GEMM (output images of <= 16 pixels, >= 64 channels, kernels larger than 1x1): strides,
// dilation, K tails, and two chunks of images (a 7x7 kernel on 256 channels: 20 images per chunk).
TEST_CASE("conv2d fast == ref on the im2col path") {
  const std::vector<Conv2dGeometry> cases = {
      geom(2, 64, 4, 4, 32, 3, 3, 1, 1, 1, 1),        // VGG-like 4x4
      geom(3, 96, 2, 2, 48, 3, 3, 1, 1, 1, 1),        // 2x2 image
      geom(2, 64, 7, 7, 20, 3, 3, 2, 2, 1, 1),        // stride 2, K tail
      geom(1, 64, 4, 4, 20, 3, 3, 1, 1, 2, 2, 2, 2),  // dilation 2
      geom(21, 256, 4, 4, 16, 7, 7, 1, 1, 3, 3),      // 2 chunks of images
  };
  for (const auto& g : cases) {
    REQUIRE(std::string(kernels::conv2d_algorithm(g)) == (kernels::cpu_has_avx512() ? "im2col" : "reference"));
    check_geometry<float>(g, /*check_threads=*/true);
  }
}

// Prepared weights (inference): conv2d_forward_prepared == conv2d_forward bit for bit on every
// algorithm, at the zoo's real shapes at batch 1 and 8 (Winograd F(4x4), F(2x2) by point, im2col,
// direct) and on odd tails, for 1 and 2 threads; pinned to the reference loops where they are cheap.
// The Winograd transform alone: conv2d_forward_winograd_transformed == conv2d_forward_winograd for
// both tile sizes and orders.
TEST_CASE("conv2d_forward_prepared == conv2d_forward (bit for bit) and ref") {
  std::vector<Conv2dGeometry> cases;
  for (int64_t n : {1, 8})
    for (auto table : {bench::resnet20_conv_layers, bench::vgg11_conv_layers, bench::mobilenet_pointwise_layers,
                       bench::lenet5_conv_layers})
      for (const auto& l : table(n)) cases.push_back(l.geom);
  for (const auto& g : {geom(2, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1), geom(1, 17, 9, 11, 33, 3, 3, 2, 2, 1, 1),
                        geom(2, 16, 7, 5, 32, 3, 3, 1, 1, 1, 1), geom(3, 32, 6, 9, 16, 3, 3, 1, 1, 0, 0),
                        geom(1, 16, 5, 5, 16, 3, 3, 1, 1, 2, 2), geom(2, 16, 13, 11, 16, 3, 3, 1, 1, 1, 1),
                        geom(1, 48, 4, 3, 64, 3, 3, 1, 1, 1, 1), geom(2, 64, 7, 7, 20, 3, 3, 2, 2, 1, 1),
                        geom(2, 8, 7, 7, 12, 3, 3, 1, 1, 1, 1, 1, 1, 2), geom(1, 19, 7, 9, 21, 1, 1, 2, 2, 0, 0)})
    cases.push_back(g);
  for (const auto& g : cases) {
    const std::string label = describe(g) + " " + kernels::conv2d_algorithm(g);
    INFO(label);
    const auto x = random_vec<float>(g.N * g.H * g.W * g.C, 31);
    const auto w = random_vec<float>(g.K * g.R * g.S * g.C_per_group(), 32);
    const auto b = random_vec<float>(g.K, 33);
    std::vector<float> wp(kernels::conv2d_prepared_weight_size(g), NAN);
    std::vector<float> y(g.N * g.P() * g.Q() * g.K, NAN), yp(y.size(), NAN), y1(y.size(), NAN);
    set_num_threads(2);
    kernels::conv2d_forward(g, x.data(), w.data(), b.data(), y.data());
    kernels::conv2d_prepare_weight(g, w.data(), wp.data());
    kernels::conv2d_forward_prepared(g, x.data(), wp.data(), b.data(), yp.data());
    CHECK(std::memcmp(y.data(), yp.data(), sizeof(float) * y.size()) == 0);
    set_num_threads(1);
    std::vector<float> wp1(wp.size(), NAN);
    kernels::conv2d_prepare_weight(g, w.data(), wp1.data());
    kernels::conv2d_forward_prepared(g, x.data(), wp1.data(), nullptr, y1.data());
    set_num_threads(2);
    CHECK(std::memcmp(wp.data(), wp1.data(), sizeof(float) * wp.size()) == 0);
    for (size_t i = 0; i < y1.size(); ++i) y1[i] += b[i % g.K];
    if (g.macs() <= 20'000'000) {
      std::vector<float> ref(y.size());
      kernels::conv2d_forward_ref(g, x.data(), w.data(), b.data(), ref.data());
      check_close(yp, ref, 2e-5, "prepared forward", label);
      check_close(y1, ref, 2e-5, "prepared forward, 1 thread, bias added", label);
    }
  }
  if (!kernels::cpu_has_avx512()) return;
  for (const auto& g : {geom(1, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1), geom(8, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1),
                        geom(2, 16, 13, 11, 48, 3, 3, 1, 1, 1, 1), geom(1, 128, 4, 4, 48, 3, 3, 1, 1, 2, 0)})
    for (int m : {2, 4})
      for (auto order : {kernels::WinogradOrder::kTileBlocks, kernels::WinogradOrder::kPoints}) {
        INFO(describe(g), " F(", m, "x", m, ") order ", int(order));
        const auto x = random_vec<float>(g.N * g.H * g.W * g.C, 41);
        const auto w = random_vec<float>(g.K * 9 * g.C, 42);
        const auto b = random_vec<float>(g.K, 43);
        std::vector<float> U(kernels::winograd_weight_size(g, m), NAN), y(g.N * g.P() * g.Q() * g.K, NAN),
            yt(y.size(), NAN);
        kernels::conv2d_forward_winograd(g, x.data(), w.data(), b.data(), y.data(), m, order);
        kernels::winograd_transform_weights(g, w.data(), m, U.data());
        kernels::conv2d_forward_winograd_transformed(g, x.data(), U.data(), b.data(), yt.data(), m, order);
        CHECK(std::memcmp(y.data(), yt.data(), sizeof(float) * y.size()) == 0);
      }
}

TEST_CASE("conv2d rejects inconsistent geometry") {
  Conv2dGeometry g = geom(1, 6, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 4);  // C not divisible by groups
  std::vector<float> x(150), w(100), y(100);
  CHECK_THROWS(kernels::conv2d_forward(g, x.data(), w.data(), nullptr, y.data()));
}
