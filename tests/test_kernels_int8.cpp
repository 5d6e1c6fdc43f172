// Integer inference kernels: the u8 x s8 -> s32 GEMM, convolution and depthwise convolution pinned
// bit for bit to their `_ref` twins over the zoo's layer shapes (LeNet-5, ResNet-20, MobileNet-v1)
// and odd tails, with extreme values, on the VNNI and portable paths, for 1 and 2 threads; the
// requantization pinned to its twin and measured against the double formula it implements; the
// int8 peak probe.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "bench/conv_layers.h"
#include "core/error.h"
#include "core/kernels/conv_int8.h"
#include "core/kernels/conv_int8_winograd.h"
#include "core/kernels/cpu.h"
#include "core/kernels/gemm_int8.h"
#include "core/kernels/peak.h"
#include "core/kernels/requant.h"
#include "core/parallel.h"
#include "test_skip.h"

using namespace lowbit;
using namespace lowbit::kernels;

namespace {

// Values of a test operand: uniform in [lo, hi], or one constant when lo == hi.
template <class T>
std::vector<T> random_ints(int64_t n, uint32_t seed, int lo, int hi) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<T> v(static_cast<size_t>(n));
  for (auto& e : v) e = T(d(rng));
  return v;
}

class ThreadGuard {
 public:
  ThreadGuard() : saved_(num_threads()) {}
  ~ThreadGuard() { set_num_threads(saved_); }
  ThreadGuard(const ThreadGuard&) = delete;
  ThreadGuard& operator=(const ThreadGuard&) = delete;

 private:
  int saved_;
};

// Calls run() on every path this CPU has (VNNI when it has it, portable always) with 1 and 2
// threads; run's result must equal `want`.
template <class T, class Run>
void check_all_paths(const std::vector<T>& want, Run&& run) {
  ThreadGuard threads;
  for (bool vnni : {true, false}) {
    if (vnni && !cpu_has_avx512_vnni()) continue;
    const Avx512Guard guard(vnni);
    REQUIRE(int8_vnni_enabled() == vnni);
    for (int t : {1, 2}) {
      CAPTURE(vnni);
      CAPTURE(t);
      set_num_threads(t);
      const std::vector<T> got = run();
      REQUIRE(got.size() == want.size());
      int64_t bad = 0, first = -1;
      for (size_t i = 0; i < got.size(); ++i)
        if (got[i] != want[i] && bad++ == 0) first = int64_t(i);
      CHECK_MESSAGE(bad == 0, bad, " of ", got.size(), " differ, first at ", first, ": ",
                    first >= 0 ? int64_t(got[size_t(first)]) : 0, " vs ",
                    first >= 0 ? int64_t(want[size_t(first)]) : 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// GEMM
// ---------------------------------------------------------------------------------------------

struct GemmCase {
  int64_t M, N, K;
  bool trans_b = false, accumulate = false;
  int64_t pad = 0;                                    // extra elements on every leading dimension
  int a_lo = 0, a_hi = 255, b_lo = -128, b_hi = 127;  // value ranges (lo == hi: constant)
};

void check_gemm(const GemmCase& c, uint32_t seed = 1) {
  CAPTURE(c.M);
  CAPTURE(c.N);
  CAPTURE(c.K);
  CAPTURE(c.trans_b);
  CAPTURE(c.accumulate);
  CAPTURE(c.pad);
  const int64_t lda = c.K + c.pad, ldc = c.N + c.pad;
  const int64_t ldb = (c.trans_b ? c.K : c.N) + c.pad, b_rows = c.trans_b ? c.N : c.K;
  const auto A = random_ints<uint8_t>(c.M * lda, seed, c.a_lo, c.a_hi);
  const auto B = random_ints<int8_t>(b_rows * ldb, seed + 1, c.b_lo, c.b_hi);
  const auto C0 = random_ints<int32_t>(c.M * ldc, seed + 2, -100000, 100000);
  std::vector<int32_t> want = C0;
  gemm_u8s8s32_ref(c.M, c.N, c.K, A.data(), lda, B.data(), ldb, c.trans_b, want.data(), ldc, c.accumulate);
  const PackedS8 packed = pack_b_s8(c.K, c.N, B.data(), ldb, c.trans_b);
  for (int64_t j = 0; j < c.N; ++j) {
    int64_t s = 0;
    for (int64_t k = 0; k < c.K; ++k) s += c.trans_b ? B[size_t(j * ldb + k)] : B[size_t(k * ldb + j)];
    REQUIRE(packed.column_sums[size_t(j)] == s);
  }
  for (bool serial : {false, true}) {
    CAPTURE(serial);
    check_all_paths(want, [&] {
      std::vector<int32_t> got = C0;
      GemmU8S8Args g;
      g.M = c.M;
      g.A = A.data();
      g.lda = lda;
      g.B = &packed;
      g.C = got.data();
      g.ldc = ldc;
      g.accumulate = c.accumulate;
      serial ? gemm_u8s8s32_serial(g) : gemm_u8s8s32(g);
      return got;  // includes the padding columns: they must be untouched
    });
  }
}

TEST_CASE("gemm_u8s8s32: odd tails of M, N and K (K % 4 != 0), padded strides, accumulate, transposed B") {
  const int64_t Ms[] = {1, 5, 23, 24, 25, 61};
  const int64_t Ns[] = {1, 10, 16, 17, 33, 48, 50, 64, 65, 100};
  const int64_t Ks[] = {1, 2, 3, 4, 5, 13, 27, 64, 147};
  uint32_t seed = 1;
  for (int64_t M : Ms)
    for (int64_t N : Ns)
      for (int64_t K : Ks) {
        GemmCase c{M, N, K};
        c.trans_b = (seed % 2) == 0;
        c.accumulate = (seed % 3) == 0;
        c.pad = (seed % 5) == 0 ? 3 : 0;
        check_gemm(c, seed++);
      }
}

TEST_CASE("gemm_u8s8s32: K and M spanning several cache blocks, wide N") {
  check_gemm({300, 64, 600, false, false, 1});  // K blocks of 512 at nr 64, M blocks of 252 rows
  check_gemm({50, 16, 2100, true, true, 0});    // K blocks of 2048 at nr 16
  check_gemm({30, 200, 1030, true, false, 2});  // 4 panels, the last one of 8 columns
  check_gemm({1000, 33, 70, false, true, 0});   // many row blocks
  check_gemm({0, 16, 8, false, false, 0});      // empty
  check_gemm({7, 20, 0, false, false, 0});      // K == 0: C = 0
  check_gemm({7, 20, 0, false, true, 1});       // K == 0, accumulate: C unchanged
}

TEST_CASE("gemm_u8s8s32: extreme values (A = 255, B = -128 or 127 everywhere)") {
  for (int b : {-128, 127}) {
    CAPTURE(b);
    check_gemm({13, 70, 1001, true, false, 0, 255, 255, b, b});
    check_gemm({25, 64, 576, false, false, 0, 255, 255, b, b});
    // The largest K whose result always fits int32: 255 * 128 * 65793 = 2^31 - 128.
    check_gemm({2, 17, 65793, true, false, 0, 255, 255, b, b});
  }
  // One more k and the reference refuses; the fast path wraps modulo 2^32.
  const int64_t K = 65794;
  const std::vector<uint8_t> A(size_t(K), 255);
  const std::vector<int8_t> B(size_t(K), -128);
  int32_t c = 0;
  CHECK_THROWS_AS(gemm_u8s8s32_ref(1, 1, K, A.data(), K, B.data(), 1, false, &c, 1, false), lowbit::Error);
  const PackedS8 packed = pack_b_s8(K, 1, B.data(), 1, false);
  GemmU8S8Args g;
  g.M = 1;
  g.A = A.data();
  g.lda = K;
  g.B = &packed;
  g.C = &c;
  g.ldc = 1;
  gemm_u8s8s32(g);
  CHECK(uint32_t(c) == uint32_t(int64_t(-255 * 128) * K));
}

TEST_CASE("gemm_u8s8s32: LeNet-5 fully connected layers at batch 1 and 7") {
  for (int64_t batch : {1, 7}) {
    CAPTURE(batch);
    check_gemm({batch, 500, 800, true, false, 0});  // fc1 800 -> 500 (Linear weight [out][in])
    check_gemm({batch, 10, 500, true, false, 0});   // fc2 500 -> 10
  }
}

// ---------------------------------------------------------------------------------------------
// Convolution
// ---------------------------------------------------------------------------------------------

std::string describe(const Conv2dGeometry& g) {
  return "N=" + std::to_string(g.N) + " C=" + std::to_string(g.C) + " H=" + std::to_string(g.H) +
         " W=" + std::to_string(g.W) + " K=" + std::to_string(g.K) + " R=" + std::to_string(g.R) +
         " S=" + std::to_string(g.S) + " stride=" + std::to_string(g.stride_h) + "," + std::to_string(g.stride_w) +
         " pad=" + std::to_string(g.pad_h) + "," + std::to_string(g.pad_w) + " dil=" + std::to_string(g.dil_h) +
         " groups=" + std::to_string(g.groups);
}

void check_conv(const Conv2dGeometry& g, uint8_t zp, uint32_t seed = 11, int x_lo = 0, int x_hi = 255, int w_lo = -128,
                int w_hi = 127) {
  INFO(describe(g));
  CAPTURE(int(zp));
  const auto x = random_ints<uint8_t>(g.N * g.H * g.W * g.C, seed, x_lo, x_hi);
  const auto w = random_ints<int8_t>(g.K * g.R * g.S * g.C_per_group(), seed + 1, w_lo, w_hi);
  std::vector<int32_t> want(size_t(g.N * g.P() * g.Q() * g.K));
  if (g.groups == 1) {
    conv2d_u8s8s32_ref(g, x.data(), zp, w.data(), want.data());
    const PackedS8 packed = pack_conv_weights_s8(g, w.data());
    check_all_paths(want, [&] {
      std::vector<int32_t> got(want.size(), -1);
      conv2d_u8s8s32(g, x.data(), zp, packed, got.data());
      return got;
    });
    check_all_paths(want, [&] {  // block by block: the blocks partition the output rows
      const int64_t M = g.N * g.P() * g.Q();
      std::vector<int32_t> got(want.size(), -1);
      std::vector<std::atomic<int>> visits(static_cast<size_t>(M));
      conv2d_u8s8s32_blocks(g, x.data(), zp, packed, [&](int64_t r0, int64_t rows, const int32_t* acc) {
        for (int64_t r = r0; r < r0 + rows; ++r) visits[size_t(r)]++;
        std::copy(acc, acc + rows * g.K, got.begin() + r0 * g.K);
      });
      for (int64_t r = 0; r < M; ++r) REQUIRE(visits[size_t(r)] == 1);
      return got;
    });
  } else {
    depthwise_conv2d_u8s8s32_ref(g, x.data(), zp, w.data(), want.data());
    check_all_paths(want, [&] {
      std::vector<int32_t> got(want.size(), -1);
      depthwise_conv2d_u8s8s32(g, x.data(), zp, w.data(), got.data());
      return got;
    });
  }
}

Conv2dGeometry geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t stride, int64_t pad,
                    int64_t groups = 1, int64_t dil = 1) {
  Conv2dGeometry g = bench::conv_geom(N, C, H, W, K, R, stride, pad, groups);
  g.dil_h = g.dil_w = dil;
  return g;
}

TEST_CASE("conv2d_u8s8s32: LeNet-5 conv1 and conv2 at batch 1 and 7") {
  for (int64_t batch : {1, 7})
    for (const auto& l : bench::lenet5_conv_layers(batch)) {
      CAPTURE(l.name);
      check_conv(l.geom, 0);
    }
}

TEST_CASE("conv2d_u8s8s32: ResNet-20 layers (3x3 stride 1 and 2, 1x1 shortcuts), zero points 0 and 7") {
  for (int64_t batch : {1, 2})
    for (const auto& l : bench::resnet20_conv_layers(batch)) {
      CAPTURE(l.name);
      check_conv(l.geom, 0, uint32_t(batch));
      if (batch == 1) check_conv(l.geom, 7, 5);
    }
}

TEST_CASE("conv2d_u8s8s32: MobileNet pointwise layers (1x1 read in place), padded channels, im2col, odd geometries") {
  for (const auto& l : bench::mobilenet_pointwise_layers(1)) {
    if (l.geom.C > 256) continue;  // the reference is slow; the bigger ones add nothing new
    CAPTURE(l.name);
    check_conv(l.geom, 0);
  }
  // C = K = 16 (ResNet-20 stage 1): row tails of 5 and 1 pixels, 1x1 and 5x5, dilation along H
  check_conv(geom(2, 16, 9, 21, 16, 3, 1, 1), 3);
  check_conv(geom(1, 16, 4, 17, 16, 1, 1, 0), 0);
  check_conv(geom(1, 16, 7, 7, 16, 5, 1, 2), 250);
  Conv2dGeometry c16 = geom(1, 16, 12, 19, 16, 3, 1, 2);
  c16.dil_h = 2;
  check_conv(c16, 5);
  check_conv(geom(2, 5, 9, 11, 7, 3, 1, 1), 3);          // C % 4 != 0 (padded to 8), odd everything
  check_conv(geom(2, 2, 9, 11, 7, 3, 1, 1), 3);          // C = 2: im2col
  check_conv(geom(1, 3, 13, 10, 33, 3, 2, 1), 0);        // RGB stem, K = 33 (one column past a panel)
  check_conv(geom(3, 6, 7, 7, 65, 1, 1, 0), 0);          // 1x1, C = 6 padded to 8, K = 65
  check_conv(geom(1, 4, 10, 12, 19, 3, 1, 2, 1, 2), 9);  // dilation 2, padding 2: im2col
  Conv2dGeometry dh = geom(1, 3, 11, 9, 20, 3, 1, 2);
  dh.dil_h = 2;  // dilation along H only: implicit, C padded to 4
  check_conv(dh, 4);
  check_conv(geom(1, 2, 6, 6, 3, 5, 3, 4), 200);  // padding wider than the stride, zero point 200
  Conv2dGeometry g = geom(1, 8, 9, 12, 24, 3, 1, 0);
  g.R = 2, g.stride_w = 2, g.pad_w = 1;  // R != S, strides and padding per axis
  check_conv(g, 1);
}

TEST_CASE("conv2d_u8s8s32: extreme values (x = 255, w = -128 or 127, zero point 255)") {
  for (int w : {-128, 127}) {
    CAPTURE(w);
    check_conv(geom(1, 64, 8, 8, 64, 3, 1, 1), 255, 3, 255, 255, w, w);
    check_conv(geom(2, 50, 6, 6, 50, 5, 1, 2), 255, 3, 255, 255, w, w);
  }
}

// Per-channel requantization scales s (a typical accumulator swing onto [0, 1]), offsets t and
// residual scales sr, drawn from seed.
struct RequantScales {
  std::vector<double> s, t, sr;
};
RequantScales random_requant_scales(int64_t K, double swing, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  RequantScales r{std::vector<double>(size_t(K)), std::vector<double>(size_t(K)), std::vector<double>(size_t(K))};
  for (int64_t k = 0; k < K; ++k) {
    r.s[size_t(k)] = u(rng) / swing;
    r.t[size_t(k)] = u(rng) - 1.0;
    r.sr[size_t(k)] = u(rng) / 40000.0;
  }
  return r;
}

// conv2d_u8s8u8 (requantization fused) against conv2d_u8s8u8_ref, without a residual and with an
// int32 (projection) or uint8 (identity) residual.
void check_conv_requant(const Conv2dGeometry& g, uint8_t zp, int qmax, uint32_t seed = 21) {
  INFO(describe(g));
  const auto x = random_ints<uint8_t>(g.N * g.H * g.W * g.C, seed, 0, qmax);
  const auto w = random_ints<int8_t>(g.K * g.R * g.S * g.C_per_group(), seed + 1, -127, 127);
  const int64_t ny = g.N * g.P() * g.Q() * g.K;
  const bool dw = g.groups > 1;
  const auto res32 = random_ints<int32_t>(ny, seed + 2, -20000, 20000);
  const auto res8 = random_ints<uint8_t>(ny, seed + 3, 0, qmax);
  const PackedS8 packed = dw ? PackedS8{} : pack_conv_weights_s8(g, w.data());
  // Scales that map a typical accumulator swing onto [0, 1].
  const double swing = double(qmax) * 127.0 * double(g.R * g.S * g.C_per_group()) * 0.05;
  auto [s, t, sr] = random_requant_scales(g.K, swing, seed);
  for (RequantResidual kind : {RequantResidual::none, RequantResidual::s32, RequantResidual::u8}) {
    CAPTURE(int(kind));
    if (kind == RequantResidual::u8)
      for (auto& v : sr) v = v * 40000.0 / (2.0 * qmax);
    const Requantization q = requantization_from_double(g.K, s.data(), t.data(), qmax, kind,
                                                        kind == RequantResidual::none ? nullptr : sr.data());
    const int32_t* r32 = kind == RequantResidual::s32 ? res32.data() : nullptr;
    const uint8_t* r8 = kind == RequantResidual::u8 ? res8.data() : nullptr;
    std::vector<uint8_t> want(static_cast<size_t>(ny));
    if (dw)
      depthwise_conv2d_u8s8u8_ref(g, x.data(), zp, w.data(), q, r32, r8, want.data());
    else
      conv2d_u8s8u8_ref(g, x.data(), zp, w.data(), q, r32, r8, want.data());
    int64_t inside = 0;
    for (uint8_t v : want) inside += v > 0 && v < qmax;
    CHECK(inside > ny / 16);  // the scales exercise the unclamped range
    check_all_paths(want, [&] {
      std::vector<uint8_t> got(want.size(), 0xAB);
      if (dw)
        depthwise_conv2d_u8s8u8(g, x.data(), zp, w.data(), q, r32, r8, got.data());
      else
        conv2d_u8s8u8(g, x.data(), zp, packed, q, r32, r8, got.data());
      return got;
    });
  }
}

TEST_CASE("conv2d_u8s8u8, depthwise_conv2d_u8s8u8: fused requantization, with residuals") {
  for (const auto& l : bench::resnet20_conv_layers(2)) {
    CAPTURE(l.name);
    check_conv_requant(l.geom, 0, 15);
  }
  check_conv_requant(geom(1, 5, 9, 11, 7, 3, 1, 1), 2, 255);          // channels padded to 8
  check_conv_requant(geom(1, 2, 9, 11, 7, 3, 1, 1), 2, 255);          // im2col
  check_conv_requant(geom(2, 8, 6, 6, 65, 1, 1, 0), 0, 3);            // in place, two panels
  check_conv_requant(geom(2, 32, 16, 16, 32, 3, 1, 1, 32), 0, 15);    // MobileNet depthwise
  check_conv_requant(geom(1, 136, 9, 9, 136, 3, 2, 1, 136), 3, 255);  // depthwise, stride 2, channel tail
  const std::vector<uint8_t> x(64);
  const std::vector<int8_t> w(16);
  std::vector<uint8_t> y(64);
  const Conv2dGeometry g = geom(1, 4, 4, 4, 4, 1, 1, 0);
  const PackedS8 packed = pack_conv_weights_s8(g, w.data());
  const double s1[] = {1, 1, 1, 1}, t1[] = {0, 0, 0, 0};
  const Requantization q = requantization_from_double(4, s1, t1, 255);
  CHECK_THROWS_AS(conv2d_u8s8u8(g, x.data(), 0, packed, q, nullptr, x.data(), y.data()), lowbit::Error);
  const Requantization q3 = requantization_from_double(3, s1, t1, 255);
  CHECK_THROWS_AS(conv2d_u8s8u8(g, x.data(), 0, packed, q3, nullptr, nullptr, y.data()), lowbit::Error);
}

TEST_CASE("depthwise_conv2d_u8s8s32: MobileNet-v1 depthwise 3x3 layers and tails") {
  const struct {
    int64_t C, H, stride;
  } layers[] = {{32, 32, 1}, {64, 32, 2}, {128, 16, 1}, {128, 16, 2}, {256, 8, 1},
                {256, 8, 2}, {512, 4, 1}, {512, 4, 2},  {1024, 2, 1}};
  for (const auto& l : layers) {
    CAPTURE(l.C);
    check_conv(geom(2, l.C, l.H, l.H, l.C, 3, l.stride, 1, l.C), 0);
  }
  check_conv(geom(1, 13, 7, 9, 13, 3, 1, 1, 13), 5);                             // channel tail
  check_conv(geom(3, 40, 5, 6, 40, 3, 2, 1, 40), 0);                             // stride 2, odd sizes
  check_conv(geom(1, 17, 9, 9, 17, 5, 1, 2, 17), 11);                            // 5x5
  check_conv(geom(1, 24, 9, 9, 24, 3, 1, 2, 24, 2), 3);                          // dilation 2
  check_conv(geom(1, 48, 6, 6, 48, 3, 1, 1, 48), 255, 4, 255, 255, -128, -128);  // extremes
  check_conv(geom(1, 48, 6, 6, 48, 3, 1, 1, 48), 255, 4, 255, 255, 127, 127);
}

TEST_CASE("conv_int8: geometry errors") {
  const std::vector<uint8_t> x(64);
  const std::vector<int8_t> w(64);
  std::vector<int32_t> y(256);
  const Conv2dGeometry dw = geom(1, 4, 4, 4, 4, 3, 1, 1, 4);
  CHECK_THROWS_AS(pack_conv_weights_s8(dw, w.data()), lowbit::Error);
  const Conv2dGeometry g = geom(1, 4, 4, 4, 4, 1, 1, 0);
  const PackedS8 wrong = pack_b_s8(3, 4, w.data(), 4, false);
  CHECK_THROWS_AS(conv2d_u8s8s32(g, x.data(), 0, wrong, y.data()), lowbit::Error);
  CHECK_THROWS_AS(depthwise_conv2d_u8s8s32(g, x.data(), 0, w.data(), y.data()), lowbit::Error);
}

// ---------------------------------------------------------------------------------------------
// Winograd F(2x2, 3x3)
// ---------------------------------------------------------------------------------------------

// 3x3 weights as 4-bit DoReFa codes (odd, in [-15, 15]), with `hot` (k, c = h mod C) filters all +15 or all -15
// (U' = +-135 at the centre: the clamped entries' correction path).
std::vector<int8_t> dorefa_weights(const Conv2dGeometry& g, uint32_t seed, int hot) {
  std::vector<int8_t> w = random_ints<int8_t>(g.K * 9 * g.C, seed, -8, 7);
  for (auto& v : w) v = int8_t(2 * v + 1);
  std::mt19937 rng(seed);
  for (int h = 0; h < hot; ++h) {
    // channel h mod C: the corrections reach the first channels, not only wherever the draws land;
    // +-15 constant, or alternating in sign over r + s, s or r: U' = +-135 at position (1, 1), (2, 2),
    // (1, 2) or (2, 1), so the output transform's negative coefficients meet clamped entries too
    const int64_t k = int64_t(rng() % uint32_t(g.K)), c = h % g.C;
    for (int64_t t = 0; t < 9; ++t) {
      const int64_t r = t / 3, sc = t % 3, flips = h % 4 == 1 ? r + sc : h % 4 == 2 ? sc : h % 4 == 3 ? r : 0;
      w[size_t((k * 9 + t) * g.C + c)] = int8_t((h % 2 ? -15 : 15) * (flips % 2 ? -1 : 1));
    }
  }
  return w;
}

// conv2d_winograd_u8s8s32 (and _blocks, and inside a SerialScope) == conv2d_u8s8s32_ref on every path,
// for inputs in [0, max_code]; conv2d_winograd_u8s8s32_ref too.
void check_winograd(const Conv2dGeometry& g, uint8_t zp, int max_code, uint32_t seed, int hot = 2) {
  INFO(describe(g));
  CAPTURE(int(zp));
  CAPTURE(max_code);
  const auto x = random_ints<uint8_t>(g.N * g.H * g.W * g.C, seed, 0, max_code);
  const auto w = dorefa_weights(g, seed + 1, hot);
  std::vector<int32_t> want(size_t(g.N * g.P() * g.Q() * g.K));
  conv2d_u8s8s32_ref(g, x.data(), zp, w.data(), want.data());
  std::vector<int32_t> wref(want.size(), -1);
  conv2d_winograd_u8s8s32_ref(g, x.data(), zp, w.data(), wref.data());
  CHECK(wref == want);
  WinogradPackedS8 packed;
  REQUIRE(pack_conv_weights_winograd_s8(g, w.data(), max_code, packed));
  if (hot > 0) CHECK(!packed.overflow.empty());
  check_all_paths(want, [&] {
    std::vector<int32_t> got(want.size(), -1);
    conv2d_winograd_u8s8s32(g, x.data(), zp, packed, got.data());
    return got;
  });
  check_all_paths(want, [&] {  // block by block (the blocks partition the output rows), and serial
    const int64_t M = g.N * g.P() * g.Q();
    std::vector<int32_t> got(want.size(), -1);
    std::vector<std::atomic<int>> visits(static_cast<size_t>(M));
    conv2d_winograd_u8s8s32_blocks(g, x.data(), zp, packed, [&](int64_t r0, int64_t rows, const int32_t* acc) {
      for (int64_t r = r0; r < r0 + rows; ++r) visits[size_t(r)]++;
      std::copy(acc, acc + rows * g.K, got.begin() + r0 * g.K);
    });
    for (int64_t r = 0; r < M; ++r) REQUIRE(visits[size_t(r)] == 1);
    const SerialScope serial;
    std::vector<int32_t> again(want.size(), -1);
    conv2d_winograd_u8s8s32(g, x.data(), zp, packed, again.data());
    CHECK(again == got);
    return got;
  });
  set_winograd_fused_vnni(false);  // VNNI: the 16 GEMMs through memory instead of the fused kernel
  check_all_paths(want, [&] {
    std::vector<int32_t> got(want.size(), -1);
    conv2d_winograd_u8s8s32(g, x.data(), zp, packed, got.data());
    return got;
  });
  set_winograd_fused_vnni(true);
}

TEST_CASE("conv2d_winograd_u8s8s32: ResNet-20 3x3 stride-1 layers, batch 1 to 3, 4-bit codes") {
  for (int64_t batch : {1, 2, 3})
    for (const auto& l : bench::resnet20_conv_layers(batch)) {
      if (!conv_winograd_geometry(l.geom) || l.geom.C < 16) continue;
      CAPTURE(l.name);
      check_winograd(l.geom, 0, 15, uint32_t(batch));
    }
  check_winograd(geom(2, 64, 8, 8, 64, 3, 1, 1), 9, 42, 7, 40);  // many clamped entries, 5-bit codes
  // 8 images: blocks of 4 tile rows, so the direct lanes inputs reuse staged rows of x (32 channels: a
  // second pair of tile rows; 16 channels: 2 tile rows a block from batch 1 on)
  check_winograd(geom(8, 32, 16, 16, 32, 3, 1, 1), 0, 15, 8);
}

TEST_CASE("conv2d_winograd_u8s8s32: odd sizes, channels, padding, zero points and codes up to 63") {
  const int64_t sizes[][2] = {{1, 1}, {2, 3}, {3, 3}, {3, 5}, {5, 7}, {7, 9}, {9, 13}, {13, 2}, {2, 1}};
  const int64_t Cs[] = {3, 5, 16, 17, 32};
  const int64_t Ks[] = {1, 7, 33, 16};
  const int codes[] = {15, 42, 63};
  uint32_t seed = 100;
  for (const auto& hw : sizes)
    for (int64_t pad : {0, 1}) {
      if (hw[0] + 2 * pad < 3 || hw[1] + 2 * pad < 3) continue;
      ++seed;
      const int64_t C = Cs[seed % 5], K = Ks[seed % 4];
      const int M = codes[seed % 3];
      check_winograd(geom(1 + seed % 2, C, hw[0], hw[1], K, 3, 1, pad), uint8_t(seed % 3 == 0 ? 0 : M / 2 + 1), M, seed,
                     int(seed % 3));
    }
  check_winograd(geom(2, 24, 6, 10, 20, 3, 1, 2), 63, 63, 3);    // padding 2, zero point = max code
  check_winograd(geom(1, 64, 5, 5, 65, 3, 1, 1), 0, 15, 4);      // K past a 64-column panel
  check_winograd(geom(1, 16, 3, 3, 16, 3, 1, 0), 15, 15, 5, 0);  // one tile, no clamped entries
  // C = 16 (the lanes kernel, groups of 16 tiles across tile rows): 4, 7 (8), 8 and 17 (20) tiles per row
  check_winograd(geom(3, 16, 7, 7, 16, 3, 1, 1), 5, 15, 41);
  check_winograd(geom(2, 16, 12, 13, 7, 3, 1, 1), 0, 42, 42);
  check_winograd(geom(3, 16, 16, 16, 33, 3, 1, 1), 3, 15, 43);
  check_winograd(geom(1, 16, 9, 34, 16, 3, 1, 1), 0, 63, 44, 5);
  check_winograd(geom(1, 16, 32, 32, 16, 3, 1, 1), 15, 15, 6, 16);  // extremes: all-15 inputs and padding
  const Conv2dGeometry g = geom(1, 16, 6, 6, 8, 3, 1, 1);
  const auto w = dorefa_weights(g, 9, 0);
  std::vector<uint8_t> x(size_t(g.N * g.H * g.W * g.C), 63);
  std::vector<int32_t> want(size_t(g.N * g.P() * g.Q() * g.K));
  conv2d_u8s8s32_ref(g, x.data(), 63, w.data(), want.data());
  WinogradPackedS8 packed;
  REQUIRE(pack_conv_weights_winograd_s8(g, w.data(), 63, packed));
  check_all_paths(want, [&] {
    std::vector<int32_t> got(want.size(), -1);
    conv2d_winograd_u8s8s32(g, x.data(), 63, packed, got.data());
    return got;
  });
}

TEST_CASE("pack_conv_weights_winograd_s8: what does not qualify") {
  const Conv2dGeometry g = geom(1, 16, 8, 8, 16, 3, 1, 1);
  const auto w = dorefa_weights(g, 1, 0);
  WinogradPackedS8 p;
  CHECK(pack_conv_weights_winograd_s8(g, w.data(), 63, p));
  CHECK_FALSE(pack_conv_weights_winograd_s8(g, w.data(), 64, p));  // V + o beyond uint8
  CHECK_FALSE(pack_conv_weights_winograd_s8(geom(1, 16, 8, 8, 16, 3, 2, 1), w.data(), 15, p));
  CHECK_FALSE(pack_conv_weights_winograd_s8(geom(1, 16, 8, 8, 16, 3, 1, 1, 16), w.data(), 15, p));
  CHECK_FALSE(pack_conv_weights_winograd_s8(geom(1, 16, 8, 8, 16, 3, 1, 1, 1, 2), w.data(), 15, p));
  CHECK_FALSE(pack_conv_weights_winograd_s8(geom(1, 16, 8, 8, 16, 1, 1, 0), w.data(), 15, p));
  const auto big = random_ints<int8_t>(16 * 9 * 16, 3, -128, 127);  // 8-bit weights: U' mostly beyond int8
  CHECK_FALSE(pack_conv_weights_winograd_s8(g, big.data(), 15, p));
  const std::vector<uint8_t> x(size_t(8 * 8 * 16));
  std::vector<int32_t> y(size_t(8 * 8 * 16));
  REQUIRE(pack_conv_weights_winograd_s8(g, w.data(), 15, p));
  CHECK_THROWS_AS(conv2d_winograd_u8s8s32(g, x.data(), 16, p, y.data()), lowbit::Error);  // zero point > max code
  CHECK_THROWS_AS(conv2d_winograd_u8s8s32(geom(1, 16, 8, 8, 17, 3, 1, 1), x.data(), 0, p, y.data()), lowbit::Error);
}

// With C = 16 and whole groups of 16 tiles the lanes kernel requantizes in its registers (the float
// path, without clamped entries: hot = 0), else the blocks' epilogue does.
TEST_CASE("conv2d_winograd_u8s8u8: fused requantization, with residuals") {
  auto check = [](const Conv2dGeometry& g, uint8_t zp, int qmax, uint32_t seed, int hot = 4) {
    INFO(describe(g));
    CAPTURE(hot);
    const auto x = random_ints<uint8_t>(g.N * g.H * g.W * g.C, seed, 0, qmax);
    const auto w = dorefa_weights(g, seed + 1, hot);
    const int64_t ny = g.N * g.P() * g.Q() * g.K;
    const auto res32 = random_ints<int32_t>(ny, seed + 2, -20000, 20000);
    const auto res8 = random_ints<uint8_t>(ny, seed + 3, 0, qmax);
    WinogradPackedS8 packed;
    REQUIRE(pack_conv_weights_winograd_s8(g, w.data(), qmax, packed));
    CHECK(packed.overflow.empty() == (hot == 0));
    const double swing = double(qmax) * 15.0 * double(9 * g.C) * 0.05;
    auto [s, t, sr] = random_requant_scales(g.K, swing, seed);
    for (RequantResidual kind : {RequantResidual::none, RequantResidual::s32, RequantResidual::u8}) {
      CAPTURE(int(kind));
      if (kind == RequantResidual::u8)
        for (auto& v : sr) v = v * 40000.0 / (2.0 * qmax);
      Requantization q = requantization_from_double(g.K, s.data(), t.data(), qmax, kind,
                                                    kind == RequantResidual::none ? nullptr : sr.data());
      bound_accumulators(q, 135 * 9 * g.C * qmax, kind == RequantResidual::s32 ? 20000 : qmax);
      // The float requantization for ResNet-20's 4-bit layers (with 6-bit codes and residuals a channel
      // may find no float constants: the double path then, which this covers too).
      if (qmax == 15) CHECK(q.offset_f32.empty() == (kind == RequantResidual::s32));
      const int32_t* r32 = kind == RequantResidual::s32 ? res32.data() : nullptr;
      const uint8_t* r8 = kind == RequantResidual::u8 ? res8.data() : nullptr;
      std::vector<uint8_t> want(static_cast<size_t>(ny));
      conv2d_u8s8u8_ref(g, x.data(), zp, w.data(), q, r32, r8, want.data());
      int64_t inside = 0;
      for (uint8_t v : want) inside += v > 0 && v < qmax;
      CHECK(inside > ny / 16);
      check_all_paths(want, [&] {
        std::vector<uint8_t> got(want.size(), 0xAB);
        conv2d_winograd_u8s8u8(g, x.data(), zp, packed, q, r32, r8, got.data());
        return got;
      });
    }
  };
  for (const auto& l : bench::resnet20_conv_layers(2))
    if (conv_winograd_geometry(l.geom) && l.geom.C >= 16)
      for (int hot : {4, 0}) check(l.geom, 0, 15, 31, hot);
  check(geom(2, 16, 31, 31, 20, 3, 1, 1), 3, 15, 34, 0);  // lanes: the last tiles half outside, K % 16 = 4
  check(geom(1, 16, 16, 16, 33, 3, 1, 1), 0, 15, 35, 0);  // K % 16 = 1
  check(geom(1, 5, 9, 11, 7, 3, 1, 1), 2, 42, 32);
  check(geom(3, 17, 7, 5, 33, 3, 1, 0), 0, 63, 33);
}

// ---------------------------------------------------------------------------------------------
// Requantization
// ---------------------------------------------------------------------------------------------

// The float formula the integer path implements (requant.h (1)), evaluated in double.
int double_formula(double s, double t, double sr, double acc, double res, int qmax) {
  const double y = s * acc + sr * res + t;
  return int(std::nearbyint(std::clamp(y, 0.0, 1.0) * qmax));
}

std::vector<uint8_t> run_requant(const Requantization& q, const RequantArgs& a0, bool ref) {
  std::vector<uint8_t> out(size_t(a0.rows * a0.ld_out), 0xAB);
  RequantArgs a = a0;
  a.out = out.data();
  ref ? requantize_u8_ref(q, a) : requantize_u8(q, a);
  return out;
}

// requantize_wide_u8 (or its _ref) into a fresh output of a's rows (0xAB where nothing is written).
std::vector<uint8_t> run_wide(const Requantization& q, const WideRequantArgs& a, bool ref) {
  std::vector<uint8_t> out(size_t(a.rows * a.ld_out), 0xAB);
  WideRequantArgs b = a;
  b.out = out.data();
  ref ? requantize_wide_u8_ref(q, b) : requantize_wide_u8(q, b);
  return out;
}

// Fast path (AVX-512 and portable, 1 and 2 threads) == the __int128 reference.
void check_requant_paths(const Requantization& q, const RequantArgs& a) {
  const std::vector<uint8_t> want = run_requant(q, a, true);
  ThreadGuard threads;
  for (bool simd : {true, false}) {
    const Avx512Guard guard(simd);
    for (int t : {1, 2}) {
      set_num_threads(t);
      CAPTURE(simd);
      CAPTURE(t);
      CHECK(run_requant(q, a, false) == want);
    }
  }
}

TEST_CASE("requantize_u8: fast paths equal the reference, extreme constants and accumulators") {
  std::mt19937 rng(5);
  const int64_t C = 37, rows = 300, ld = 41;
  for (int residual = 0; residual < 3; ++residual) {  // none, int32, uint8
    CAPTURE(residual);
    Requantization q;
    q.qmax = residual == 1 ? 15 : 255;
    q.residual = residual == 1 ? RequantResidual::s32 : residual == 2 ? RequantResidual::u8 : RequantResidual::none;
    std::uniform_int_distribution<int64_t> mult_u8(-(int64_t(1) << 54) + 1, (int64_t(1) << 54) - 1);
    std::uniform_int_distribution<int32_t> mult(-(INT32_MAX), INT32_MAX);
    std::uniform_int_distribution<int> shift(1, 52);
    std::uniform_int_distribution<int64_t> off(-(int64_t(1) << 61), int64_t(1) << 61);
    for (int64_t c = 0; c < C; ++c) {
      const int kind = int(c % 6);
      q.multiplier.push_back(kind == 0 ? INT32_MAX : kind == 1 ? -INT32_MAX : mult(rng));
      q.shift.push_back(kind == 2 ? 1 : kind == 3 ? 52 : shift(rng));
      q.offset.push_back(kind == 4 ? int64_t(1) << 61 : kind == 5 ? -(int64_t(1) << 61) : off(rng) >> (c % 40));
      if (residual == 1) q.residual_multiplier.push_back(kind == 1 ? INT32_MAX : mult(rng) >> (c % 20));
      if (residual == 2) q.residual_multiplier.push_back(kind == 1 ? (int64_t(1) << 54) - 1 : mult_u8(rng) >> (c % 40));
    }
    auto acc = random_ints<int32_t>(rows * ld, 9, INT32_MIN, INT32_MAX);
    for (int64_t i = 0; i < rows; i += 3) acc[size_t(i * ld + i % C)] = i % 2 ? INT32_MIN : INT32_MAX;
    // Small accumulators too, where the outputs are not all saturated.
    for (int64_t i = 1; i < rows; i += 2)
      for (int64_t c = 0; c < C; ++c) acc[size_t(i * ld + c)] >>= int(c % 31);
    const auto res32 = random_ints<int32_t>(rows * ld, 10, INT32_MIN, INT32_MAX);
    const auto res8 = random_ints<uint8_t>(rows * ld, 11, 0, 255);
    RequantArgs a;
    a.rows = rows;
    a.acc = acc.data();
    a.ld_acc = ld;
    a.residual_s32 = residual == 1 ? res32.data() : nullptr;
    a.residual_u8 = residual == 2 ? res8.data() : nullptr;
    a.ld_residual = ld;
    a.ld_out = ld + 2;
    check_requant_paths(q, a);
  }
}

// bound_accumulators: the double-precision fast path (exact below 2^53) against the __int128
// reference, with ties (dyadic constants), the three residual modes, channel counts around its 16-
// and 8-lane steps, and accumulators at their declared bounds.
TEST_CASE("requantize_u8 after bound_accumulators: the double path equals the reference bit for bit") {
  std::mt19937 rng(77);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  for (int64_t C : {1, 7, 8, 9, 16, 17, 37, 64}) {
    for (int residual = 0; residual < 3; ++residual) {
      for (bool dyadic : {false, true}) {
        CAPTURE(C);
        CAPTURE(residual);
        CAPTURE(dyadic);
        const int qmax = dyadic ? 16 : 15;  // 16: y qmax is a half-integer for dyadic y (ties)
        const int64_t acc_bound = 100000, res_bound = residual == 2 ? 255 : 300000, rows = 257;
        std::vector<double> s(static_cast<size_t>(C)), t(static_cast<size_t>(C)), sr(static_cast<size_t>(C));
        for (int64_t c = 0; c < C; ++c) {  // y = s acc + sr res + t spans a few units around [0, 1]
          const double sign = c % 5 == 3 ? -1 : 1;
          s[size_t(c)] = dyadic ? sign * std::ldexp(1.0, -14 - int(c % 3)) : sign * (0.5 + u01(rng)) / 20000;
          t[size_t(c)] = dyadic ? std::ldexp(double(c * 37 % 64), -6) - 0.25 : u01(rng) - 0.3;
          sr[size_t(c)] = residual == 2 ? (dyadic ? std::ldexp(1.0, -9) : u01(rng) / 255)
                                        : (dyadic ? std::ldexp(1.0, -16) : (u01(rng) - 0.5) / 50000);
        }
        const RequantResidual kind = residual == 1   ? RequantResidual::s32
                                     : residual == 2 ? RequantResidual::u8
                                                     : RequantResidual::none;
        Requantization q =
            requantization_from_double(C, s.data(), t.data(), qmax, kind, residual ? sr.data() : nullptr);
        bound_accumulators(q, acc_bound, residual ? res_bound : 0);
        REQUIRE(int64_t(q.offset_f64.size()) == C);  // the double path is on
        std::vector<int32_t> acc(static_cast<size_t>(rows * C)), res32(static_cast<size_t>(rows * C));
        std::vector<uint8_t> res8(static_cast<size_t>(rows * C));
        for (size_t i = 0; i < acc.size(); ++i) {
          acc[i] = int32_t(int64_t(rng() % uint32_t(2 * acc_bound + 1)) - acc_bound);
          if (i % 97 == 0) acc[i] = i % 2 ? int32_t(acc_bound) : -int32_t(acc_bound);
          res32[i] = int32_t(int64_t(rng() % uint32_t(2 * res_bound + 1)) - res_bound);
          res8[i] = uint8_t(rng() % 256);
          const int64_t c = int64_t(i) % C, row = int64_t(i) / C;
          if (dyadic && row % 5 == 0) {  // an exact tie: y qmax = k + 1/2
            const double want = (double(row % 16) + 0.5) / qmax;
            acc[i] = int32_t((want - t[size_t(c)]) / s[size_t(c)]);
          }
        }
        RequantArgs a;
        a.rows = rows;
        a.acc = acc.data();
        a.ld_acc = C;
        a.residual_s32 = residual == 1 ? res32.data() : nullptr;
        a.residual_u8 = residual == 2 ? res8.data() : nullptr;
        a.ld_residual = C;
        a.ld_out = C;
        check_requant_paths(q, a);  // the float path where it was verified (none with an int32 residual)
        if (residual == 1) CHECK(q.offset_f32.empty());
        q.multiplier_f32.clear(), q.residual_multiplier_f32.clear(), q.offset_f32.clear();  // the double path
        check_requant_paths(q, a);
        const std::vector<uint8_t> out = run_requant(q, a, false);
        CHECK(std::count_if(out.begin(), out.end(), [&](uint8_t v) { return v > 0 && v < qmax; }) >
              int64_t(out.size()) / 25);
        if (dyadic && residual == 0) {  // ties occur and go to even, as in the double formula
          int64_t ties = 0, bad = 0;
          for (int64_t i = 0; i < rows * C; ++i) {
            const int64_t c = i % C;
            const double r = std::clamp(s[size_t(c)] * acc[size_t(i)] + t[size_t(c)], 0.0, 1.0) * qmax;
            ties += r - std::floor(r) == 0.5;
            bad += out[size_t(i)] != double_formula(s[size_t(c)], t[size_t(c)], 0, acc[size_t(i)], 0, qmax);
          }
          CHECK(bad == 0);
          if (C >= 8) CHECK(ties > 0);
        }
      }
    }
  }
  // A value beyond the declared bound: the reference refuses (so the tests catch a wrong bound).
  const double s1 = 1e-4, t1 = 0.1;
  Requantization q = requantization_from_double(1, &s1, &t1, 15);
  bound_accumulators(q, 1000);
  const int32_t acc = 1001;
  uint8_t out = 0;
  RequantArgs a;
  a.rows = 1, a.acc = &acc, a.ld_acc = 1, a.out = &out, a.ld_out = 1;
  CHECK_THROWS_WITH_AS(requantize_u8_ref(q, a), doctest::Contains("beyond the declared bound 1000"), lowbit::Error);
  // Too wide for doubles: the int64 path stays.
  bound_accumulators(q, int64_t(1) << 31);
  const double big_t = 1e6;
  Requantization wide = requantization_from_double(1, &s1, &big_t, 255);
  bound_accumulators(wide, (int64_t(1) << 31) - 1);
  CHECK(wide.offset_f64.empty());
}

// bound_accumulators' float path (requant.h (2f)): wherever it is switched on, it equals the
// __int128 reference at every accumulator in [-A, A] and every uint8 residual in [0, R] (checked
// exhaustively here, not only at the steps the verification looks at), for random 4-bit-like
// constants, dyadic ones (exact ties), and near-ties built so that the nearest floats round the
// wrong way (u / 2^S = k + 1/2 + ~2^-26 at every step: the verification must move b~).
TEST_CASE("requantize_u8 after bound_accumulators: the float path equals the reference on the whole range") {
  std::mt19937 rng(91);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  const int64_t A = 3000;
  for (int kind = 0; kind < 3; ++kind) {  // random, dyadic, near-tie
    for (int64_t C : {1, 16, 19}) {
      for (bool residual : {false, true}) {
        CAPTURE(kind);
        CAPTURE(C);
        CAPTURE(residual);
        const int qmax = kind == 1 ? 16 : 15;
        const int64_t R = residual ? 15 : 0;
        Requantization q;
        if (kind == 2) {  // m = 2^30 + 1 (not a float), S = 40: steps ~1024 apart, each ~2^-26 past a tie
          q.qmax = qmax;
          q.residual = residual ? RequantResidual::u8 : RequantResidual::none;
          for (int64_t c = 0; c < C; ++c) {
            const int64_t m = (int64_t(1) << 30) + 1, at = 100 + 37 * c;  // acc `at` is just past the 2.5 tie
            q.multiplier.push_back(int32_t(m));
            q.shift.push_back(40);
            q.offset.push_back((int64_t(1) << 39) * 5 + (int64_t(1) << 14) - at * m);  // u(at) = 2.5 2^40 + 2^14
            if (residual) q.residual_multiplier.push_back(int64_t(1) << 40);           // one code per residual unit
            // The trap is real: the nearest floats give the tie, rounded to even (2), where (2) gives 3.
            const float near =
                std::fma(float(at), float(std::ldexp(double(m), -40)), float(std::ldexp(double(q.offset.back()), -40)));
            CHECK(std::nearbyint(near) == 2);
          }
        } else {
          std::vector<double> sc(static_cast<size_t>(C)), t(static_cast<size_t>(C)), sr(static_cast<size_t>(C));
          for (int64_t c = 0; c < C; ++c) {
            const double sign = c % 4 == 3 ? -1 : 1;
            sc[size_t(c)] = kind == 1 ? sign * std::ldexp(1.0, -11 - int(c % 3)) : sign * (0.5 + u01(rng)) / 3000;
            t[size_t(c)] = kind == 1 ? std::ldexp(double(c * 37 % 64), -6) - 0.25 : u01(rng) - 0.3;
            sr[size_t(c)] = kind == 1 ? std::ldexp(1.0, -5) : u01(rng) / 15;
          }
          q = requantization_from_double(C, sc.data(), t.data(), qmax,
                                         residual ? RequantResidual::u8 : RequantResidual::none,
                                         residual ? sr.data() : nullptr);
        }
        bound_accumulators(q, A, residual ? R : 0);
        // On for the random and dyadic constants, and for the near-ties by a moved b~. With a residual
        // the near-ties may be refused (its second rounding can swallow a one-ulp move): the double path.
        if (kind < 2 || !residual) CHECK(!q.offset_f32.empty());
        // Every (acc, residual) pair: row (r (2A + 1) + acc + A), the same acc in every channel.
        const int64_t rows = (R + 1) * (2 * A + 1);
        std::vector<int32_t> acc(size_t(rows * C));
        std::vector<uint8_t> res(size_t(rows * C));
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t c = 0; c < C; ++c) {
            acc[size_t(i * C + c)] = int32_t(i % (2 * A + 1) - A);
            res[size_t(i * C + c)] = uint8_t(i / (2 * A + 1));
          }
        RequantArgs a;
        a.rows = rows;
        a.acc = acc.data();
        a.ld_acc = C;
        a.residual_u8 = residual ? res.data() : nullptr;
        a.ld_residual = C;
        a.ld_out = C;
        const std::vector<uint8_t> want = run_requant(q, a, true), got = run_requant(q, a, false);
        CHECK(std::count_if(want.begin(), want.end(), [&](uint8_t v) { return v > 0 && v < qmax; }) >
              int64_t(want.size()) / 10);
        int64_t bad = 0;
        for (size_t i = 0; i < want.size(); ++i) bad += want[i] != got[i];
        CHECK(bad == 0);
      }
    }
  }
  // Refused: an int32 residual, accumulators beyond float's exact integers, a too-long check.
  const double s1 = 1e-3, t1 = 0.1;
  Requantization s32 = requantization_from_double(1, &s1, &t1, 15, RequantResidual::s32, &s1);
  bound_accumulators(s32, 1000, 1000);
  CHECK(s32.offset_f32.empty());
  Requantization wide = requantization_from_double(1, &s1, &t1, 15);
  bound_accumulators(wide, (int64_t(1) << 24) + 1);
  CHECK(wide.offset_f32.empty());
  bound_accumulators(wide, int64_t(1) << 24);
  CHECK(!wide.offset_f32.empty());
  std::vector<double> s64(64, 1e-3), t64(64, 0.1);
  Requantization eight = requantization_from_double(64, s64.data(), t64.data(), 255, RequantResidual::u8, s64.data());
  bound_accumulators(eight, 1000, 255);  // 64 x 256 x 255 steps
  CHECK(eight.offset_f32.empty());
  CHECK(!eight.offset_f64.empty());
}

// The float path's single rounding matters: (2f) is verified with fma(acc, m~, b~), and a product
// rounded on its own before the addition (x m~ + b~ in two steps) gives other codes at some
// accumulators. Wide accumulators (|acc| <= 2^20, 256 codes) make such accumulators frequent; the
// test finds them with the two formulas in scalar code and checks the fast path there (it fails if
// requant_f32.h's fma is split into a multiply and an add: checked).
TEST_CASE("requantize_u8's float path: one rounding per fma, as verified") {
  std::mt19937 rng(92);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  const int64_t C = 16, A = int64_t(1) << 14;
  int64_t verified = 0, found = 0;
  for (int trial = 0; trial < 32; ++trial) {
    CAPTURE(trial);
    std::vector<double> sc(static_cast<size_t>(C)), t(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) sc[size_t(c)] = (0.5 + u01(rng)) / double(A), t[size_t(c)] = 0.3 + 0.4 * u01(rng);
    Requantization q = requantization_from_double(C, sc.data(), t.data(), 255);
    bound_accumulators(q, A);
    if (q.offset_f32.empty()) continue;  // refused (a channel without verified floats): the double path
    ++verified;
    std::vector<int32_t> rows_acc;  // accumulators where the two formulas disagree in some channel
    for (int64_t c = 0; c < C; ++c) {
      const float m = q.multiplier_f32[size_t(c)], b = q.offset_f32[size_t(c)];
      auto code = [](float u) { return std::nearbyint(std::clamp(u, 0.0f, 255.0f)); };
      for (int64_t x = -A; x <= A; ++x) {
        volatile float product = float(x) * m;  // rounded on its own (volatile: no contraction into an fma)
        if (code(product + b) != code(std::fma(float(x), m, b))) rows_acc.push_back(int32_t(x));
      }
    }
    found += int64_t(rows_acc.size());
    const int64_t rows = int64_t(rows_acc.size());
    std::vector<int32_t> acc(size_t(rows * C));
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t c = 0; c < C; ++c) acc[size_t(i * C + c)] = rows_acc[size_t(i)];
    RequantArgs a;
    a.rows = rows, a.acc = acc.data(), a.ld_acc = C, a.ld_out = C;
    CHECK(run_requant(q, a, false) == run_requant(q, a, true));
  }
  MESSAGE("verified ", verified, " of 32 requantizations; ", found, " accumulators where the rounding order matters");
  CHECK(verified >= 16);
  CHECK(found >= 10);
}

// requantize_wide_u8 (a wide layer's epilogue: 256 hi + lo and res_a + res_b formed in the
// registers) against its reference (the combined values through requantize_u8_ref), AVX-512 and
// portable, over channel counts around the 8-lane step, every residual combination, first-layer-like
// accumulators (|256 hi + lo| up to 2^27.7, hi and lo at their int8-weight extremes) and near-full
// multipliers (the int64 rule, 2^59 products).
TEST_CASE("requantize_wide_u8: the one-pass wide epilogue equals the reference") {
  std::mt19937 rng(404);
  for (int64_t C : {1, 7, 8, 16, 19}) {
    for (int mode = 0; mode < 4; ++mode) {  // residual_a, residual_b: none, a, b, both
      CAPTURE(C);
      CAPTURE(mode);
      const bool has_a = mode & 1, has_b = mode & 2;
      std::vector<double> sc(static_cast<size_t>(C)), t(static_cast<size_t>(C)), sr(static_cast<size_t>(C));
      std::uniform_real_distribution<double> u01(0.0, 1.0);
      for (int64_t c = 0; c < C; ++c) {  // y = s acc + s' res + t spans a few units around [0, 1]
        sc[size_t(c)] = (c % 3 == 2 ? -1 : 1) * (0.5 + u01(rng)) / 3e7;
        t[size_t(c)] = u01(rng) - 0.3;
        sr[size_t(c)] = sc[size_t(c)] * 8;  // residual values of ~1e6 move the codes by units
      }
      Requantization q = requantization_from_double(C, sc.data(), t.data(), 15, RequantResidual::s32, sr.data());
      const int64_t rows = 300, ld = 2 * C + 3;
      std::vector<int32_t> acc(size_t(rows * ld)), ra(size_t(rows * C)), rb(size_t(rows * (C + 1)));
      const int32_t hi_max = 255 * 27 * 127, lo_max = 255 * 27 * 128;  // a 3x3x3 first layer's int8 halves
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t c = 0; c < C; ++c) {
          const bool extreme = (i + c) % 23 == 0;
          const int32_t h = extreme ? ((i / 23) % 2 ? hi_max : -hi_max) : int32_t(rng() % 200001) - 100000;
          acc[size_t(i * ld + c)] = h;
          acc[size_t(i * ld + C + c)] = extreme ? -lo_max : int32_t(rng() % 100001) - 50000;
          ra[size_t(i * C + c)] = int32_t(rng() % 2000001) - 1000000;
          rb[size_t(i * (C + 1) + c)] = int32_t(rng() % 2000001) - 1000000;
        }
      WideRequantArgs a;
      a.rows = rows, a.hi = acc.data(), a.lo = acc.data() + C, a.ld_acc = ld;
      if (has_a) a.residual_a = ra.data(), a.ld_a = C;
      if (has_b) a.residual_b = rb.data(), a.ld_b = C + 1;
      a.ld_out = C + 2;
      const std::vector<uint8_t> want = run_wide(q, a, true);
      int64_t inside = 0;
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t c = 0; c < C; ++c)
          inside += want[size_t(i * a.ld_out + c)] > 0 && want[size_t(i * a.ld_out + c)] < 15;
      CHECK(inside > rows * C / 10);
      for (bool simd : {true, false}) {
        CAPTURE(simd);
        const Avx512Guard guard(simd);
        CHECK(run_wide(q, a, false) == want);
      }
    }
  }
  const double one = 1, zero = 0;
  Requantization none = requantization_from_double(1, &one, &zero, 15);
  CHECK_THROWS_WITH_AS(requantize_wide_u8(none, WideRequantArgs{}), doctest::Contains("int32 residual"), lowbit::Error);
}

// The AVX-512 wide epilogue rounds in floats and hands lanes near a half-integer to the exact rule:
// constants built so that exact ties (odd numerators over 2^1, 2^2) and near-ties (one unit of 2^-12
// from a half-integer) are frequent, accumulators up to ~2^28, residuals both signs; and channels
// u / 2^28 = (acc + res) / 2^28 with acc = (2k + 1) 2^27 + d, |d| <= 3, where float(acc) drops d and
// lands on the tie itself (the test fails without the exact fallback: checked); and channels where
// acc m / 2^S ~ 1,450 codes cancels against the offset, so float's error (~1e-3 codes) decides some
// roundings (the test fails with eps = 0: checked).
TEST_CASE("requantize_wide_u8: exact ties and near-ties equal the reference") {
  std::mt19937 rng(405);
  const int64_t C = 21, rows = 20000;
  const int shifts[] = {1, 2, 12, 28};
  Requantization q;
  q.qmin = 0, q.qmax = 255, q.residual = RequantResidual::s32;
  for (int64_t c = 0; c < C; ++c) {
    const int s = shifts[c % 4];
    if (c % 8 == 7) {  // cancellation: m / 2^48 ~ 2^-17.5, B = -2^28 m + 128 2^48
      const int32_t m = int32_t((int64_t(1) << 30) + int64_t(rng() % (uint32_t(1) << 30)));
      q.shift.push_back(48), q.multiplier.push_back(m);
      q.offset.push_back(-(int64_t(m) << 28) + (int64_t(128) << 48));
      q.residual_multiplier.push_back(int32_t(rng() % 1000) - 500);
      continue;
    }
    q.shift.push_back(s);
    // scale m / 2^s ~ 2^-24 .. 1 per accumulator unit, odd multipliers: u / 2^s has every fraction
    const bool trap = c % 8 == 3;  // s = 28: the near-tie channels
    q.multiplier.push_back(s <= 2 || trap ? 1 : s == 12 ? 2 * int32_t(rng() % 64) + 1 : 2 * int32_t(rng() % 8) + 9);
    q.offset.push_back(trap ? 0 : (int64_t(100) << s) + (c % 2 ? 1 : -1) * int64_t(rng() % 1000));
    q.residual_multiplier.push_back(trap ? 1 : c % 3 == 0 ? 0 : (c % 2 ? 1 : -1));
  }
  std::vector<int32_t> hi(size_t(rows * C)), lo(size_t(rows * C)), res(size_t(rows * C));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < C; ++c) {
      const int s = shifts[c % 4];
      // s <= 12: small accumulators (u / 2^s spans ~[-50, 300]); s = 28: up to ~2^28
      const int32_t span = s == 1 ? 300 : s == 2 ? 600 : s == 12 ? 8000 : 1 << 20;
      hi[size_t(i * C + c)] = s == 28 ? int32_t(rng() % uint32_t(span)) - span / 8 : 0;
      lo[size_t(i * C + c)] = int32_t(rng() % uint32_t(s == 28 ? 256 : span)) - (s == 28 ? 128 : span / 8);
      res[size_t(i * C + c)] = int32_t(rng() % 64) - 32;
      if (c % 8 == 7) {  // acc = 2^28 +- 2^25
        const int32_t acc = (int32_t(1) << 28) + int32_t(rng() % (uint32_t(1) << 26)) - (int32_t(1) << 25);
        hi[size_t(i * C + c)] = acc >> 8, lo[size_t(i * C + c)] = acc & 255;
      }
      if (c % 8 == 3) {  // acc = (2k + 1) 2^27 + d, residual 0 or +-1
        const int32_t acc = (2 * int32_t(i % 8) + 1) * (int32_t(1) << 27) + int32_t((i / 8) % 7) - 3;
        hi[size_t(i * C + c)] = acc >> 8, lo[size_t(i * C + c)] = acc & 255;
        res[size_t(i * C + c)] = int32_t(i % 3) - 1;
      }
    }
  WideRequantArgs a;
  a.rows = rows, a.hi = hi.data(), a.lo = lo.data(), a.ld_acc = C, a.residual_a = res.data(), a.ld_a = C;
  a.ld_out = C;
  const std::vector<uint8_t> want = run_wide(q, a, true);
  int64_t inside = 0;
  for (uint8_t v : want) inside += v > 0 && v < 255;
  CHECK(inside > rows * C / 2);
  for (bool simd : {true, false}) {
    CAPTURE(simd);
    const Avx512Guard guard(simd);
    CHECK(run_wide(q, a, false) == want);
  }
}

// Dyadic scales and offsets (exact in both arithmetics): the integer path equals the double
// formula everywhere, exact ties included (both round half to even).
TEST_CASE("requantize_u8: dyadic scales reproduce the double formula exactly, ties to even") {
  const int64_t C = 8, rows = 4096;
  std::vector<double> s(C), t(C), sr(C);
  for (int64_t c = 0; c < C; ++c) {
    s[size_t(c)] = std::ldexp(c % 2 ? -1.0 : 1.0, -4 - int(c));  // 2^-4 ... 2^-11, mixed signs
    t[size_t(c)] = std::ldexp(double(c * 37 % 64), -6) - 0.25;   // multiples of 2^-6
    sr[size_t(c)] = std::ldexp(1.0, -9);
  }
  std::vector<int32_t> acc(size_t(rows * C));
  std::mt19937 rng(3);
  for (int64_t i = 0; i < rows * C; ++i) {
    const int32_t amp = int32_t(1) << (5 + i % C);  // y spans about [-2, 2.5]
    acc[size_t(i)] = int32_t(rng() % uint32_t(2 * amp + 1)) - amp;
  }
  const auto res = random_ints<uint8_t>(rows * C, 4, 0, 255);
  for (int qmax : {255, 16, 1}) {
    CAPTURE(qmax);
    const Requantization q = requantization_from_double(C, s.data(), t.data(), qmax, RequantResidual::u8, sr.data());
    RequantArgs a;
    a.rows = rows;
    a.acc = acc.data();
    a.ld_acc = C;
    a.residual_u8 = res.data();
    a.ld_residual = C;
    a.ld_out = C;
    const std::vector<uint8_t> out = run_requant(q, a, false);
    int64_t bad = 0, ties = 0, inside = 0;
    for (int64_t i = 0; i < rows * C; ++i) {
      const int64_t c = i % C;
      const double y = s[size_t(c)] * acc[size_t(i)] + sr[size_t(c)] * res[size_t(i)] + t[size_t(c)];
      const double r = std::clamp(y, 0.0, 1.0) * qmax;
      ties += r - std::floor(r) == 0.5;
      inside += y > 0 && y < 1;
      bad += out[size_t(i)] !=
             double_formula(s[size_t(c)], t[size_t(c)], sr[size_t(c)], acc[size_t(i)], res[size_t(i)], qmax);
    }
    CHECK(bad == 0);
    CHECK(inside > rows * C / 8);
    CHECK(ties > 0);  // exact ties occurred and were resolved alike
    check_requant_paths(q, a);
  }
}

// Signed codes (requant.h (1s)): 128 + round(clip(y, -1, 1) qmax), with dyadic constants so the double
// formula is exact: equal everywhere, ties to even (128 is even: the zero point moves no tie), both
// clamps reached; every path, the double one (bound_accumulators) included, equal to the reference.
TEST_CASE("requantize_u8, signed codes: 128 + round(clip(y, -1, 1) qmax) exactly, ties to even, every path") {
  const int64_t C = 9, rows = 4096;
  std::vector<double> s(C), t(C), sr(C);
  for (int64_t c = 0; c < C; ++c) {
    s[size_t(c)] = std::ldexp(c % 2 ? -1.0 : 1.0, -4 - int(c));  // mixed signs
    t[size_t(c)] = std::ldexp(double(c * 37 % 64), -6) - 0.5;    // multiples of 2^-6 around 0
    sr[size_t(c)] = std::ldexp(1.0, -9);
  }
  std::vector<int32_t> acc(size_t(rows * C));
  std::mt19937 rng(8);
  for (int64_t i = 0; i < rows * C; ++i) {
    const int32_t amp = int32_t(1) << (5 + i % C);  // y spans about [-2.5, 2.5]
    acc[size_t(i)] = int32_t(rng() % uint32_t(2 * amp + 1)) - amp;
  }
  const auto res = random_ints<uint8_t>(rows * C, 5, 100, 156);  // signed codes around 128
  for (int qmax : {127, 7, 1}) {
    for (bool bounded : {false, true}) {
      CAPTURE(qmax);
      CAPTURE(bounded);
      Requantization q =
          requantization_from_double(C, s.data(), t.data(), qmax, RequantResidual::u8, sr.data(), /*signed=*/true);
      CHECK((q.qmin == 128 - qmax && q.qmax == 128 + qmax));
      if (bounded) {
        bound_accumulators(q, int64_t(1) << 13, 255);
        REQUIRE(int64_t(q.offset_f64.size()) == C);
      }
      RequantArgs a;
      a.rows = rows;
      a.acc = acc.data();
      a.ld_acc = C;
      a.residual_u8 = res.data();
      a.ld_residual = C;
      a.ld_out = C;
      const std::vector<uint8_t> out = run_requant(q, a, false);
      int64_t bad = 0, ties = 0, low = 0, high = 0;
      for (int64_t i = 0; i < rows * C; ++i) {
        const int64_t c = i % C;
        const double y = s[size_t(c)] * acc[size_t(i)] + sr[size_t(c)] * res[size_t(i)] + t[size_t(c)];
        const double r = std::clamp(y, -1.0, 1.0) * qmax;
        ties += r - std::floor(r) == 0.5;
        low += out[size_t(i)] == 128 - qmax, high += out[size_t(i)] == 128 + qmax;
        bad += out[size_t(i)] != 128 + std::nearbyint(r);
      }
      CHECK(bad == 0);
      CHECK(ties > 0);
      CHECK((low > 0 && high > 0));
      check_requant_paths(q, a);
    }
  }
  const double one = 1, zero = 0;
  CHECK_THROWS_WITH_AS(requantization_from_double(1, &one, &zero, 128, RequantResidual::none, nullptr, true),
                       doctest::Contains("qmax 128 outside [1, 127] (signed codes)"), lowbit::Error);
}

// Realistic scales: the integer path against the double formula over millions of random
// accumulators; every disagreement must lie within the header's bound of a half-integer. Residual
// modes: none; int32 (a projection shortcut's accumulators, of a swing within 4x of the main one's);
// uint8 (an identity shortcut's codes, scale ~ 1/255); and, as a stress case, int32 residuals whose
// real multiplier is up to 2^19 times the main one (the shared shift then costs the smaller
// multiplier its precision, and the bound grows accordingly).
TEST_CASE("requantize_u8: disagreement with the double formula only at near-ties (measured rate)") {
  std::mt19937 rng(2024);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  const int64_t C = 64, rows = 8192;
  const char* names[] = {"no residual", "int32 residual", "uint8 residual", "int32 residual, wide ratio"};
  for (int mode = 0; mode < 4; ++mode) {
    CAPTURE(mode);
    const int residual = mode == 3 ? 1 : mode;
    int64_t total = 0, disagree = 0, unexplained = 0;
    double worst_ratio = 0;  // max |u / 2^S - qmax y| / bound
    for (int qmax : {255, 15, 3}) {
      CAPTURE(qmax);
      std::vector<double> s(C), t(C), sr(C);
      std::vector<int32_t> amp(C), ramp(C);
      for (int64_t c = 0; c < C; ++c) {
        amp[size_t(c)] = int32_t(std::ldexp(1.0, 4 + int(u01(rng) * 20)));  // accumulator swing 2^4 .. 2^23
        ramp[size_t(c)] = mode == 1   ? std::max(1, int32_t(amp[size_t(c)] * std::ldexp(1.0, int(u01(rng) * 5) - 2)))
                          : mode == 3 ? int32_t(std::ldexp(1.0, 4 + int(u01(rng) * 20)))
                                      : 255;
        s[size_t(c)] = (0.25 + 2 * u01(rng)) / amp[size_t(c)] * (u01(rng) < 0.1 ? -1 : 1);
        t[size_t(c)] = 2 * u01(rng) - 1;
        sr[size_t(c)] = (0.25 + u01(rng)) / ramp[size_t(c)];
      }
      const Requantization q = requantization_from_double(C, s.data(), t.data(), qmax,
                                                          residual == 1   ? RequantResidual::s32
                                                          : residual == 2 ? RequantResidual::u8
                                                                          : RequantResidual::none,
                                                          residual ? sr.data() : nullptr);
      std::vector<int32_t> acc(size_t(rows * C)), res32(size_t(rows * C));
      std::vector<uint8_t> res8(size_t(rows * C));
      for (int64_t i = 0; i < rows * C; ++i) {
        const int64_t c = i % C;
        acc[size_t(i)] = int32_t(std::llround((2 * u01(rng) - 1) * amp[size_t(c)]));
        res32[size_t(i)] = int32_t(std::llround((2 * u01(rng) - 1) * ramp[size_t(c)]));
        res8[size_t(i)] = uint8_t(rng() % 256);
      }
      RequantArgs a;
      a.rows = rows;
      a.acc = acc.data();
      a.ld_acc = C;
      a.residual_s32 = residual == 1 ? res32.data() : nullptr;
      a.residual_u8 = residual == 2 ? res8.data() : nullptr;
      a.ld_residual = C;
      a.ld_out = C;
      const std::vector<uint8_t> out = run_requant(q, a, false);
      for (int64_t i = 0; i < rows * C; ++i) {
        const int64_t c = i % C;
        const double res = residual == 1 ? double(res32[size_t(i)]) : residual == 2 ? double(res8[size_t(i)]) : 0.0;
        const double srr = residual ? sr[size_t(c)] : 0.0;
        // The exact real value qmax * y (long double: error far below the bound) and the bound.
        const long double r = (static_cast<long double>(s[size_t(c)]) * acc[size_t(i)] +
                               static_cast<long double>(srr) * res + t[size_t(c)]) *
                              qmax;
        const long double u = (static_cast<long double>(acc[size_t(i)]) * q.multiplier[size_t(c)] +
                               (residual ? res * static_cast<long double>(q.residual_multiplier[size_t(c)]) : 0.0L) +
                               static_cast<long double>(q.offset[size_t(c)])) /
                              std::ldexp(1.0L, q.shift[size_t(c)]);
        const long double bound = (std::fabs(static_cast<long double>(acc[size_t(i)])) + std::fabs(res) + 1) *
                                  std::ldexp(1.0L, -q.shift[size_t(c)] - 1);
        worst_ratio = std::max(worst_ratio, double(std::fabs(u - r) / bound));
        ++total;
        if (out[size_t(i)] != double_formula(s[size_t(c)], t[size_t(c)], srr, acc[size_t(i)], res, qmax)) {
          ++disagree;
          const long double tie_distance = std::fabs(r - (std::floor(r) + 0.5L));
          if (tie_distance > bound * 1.001L + 1e-12L) ++unexplained;
        }
      }
    }
    MESSAGE("requantization vs the double formula, ", std::string(names[mode]), ": ", disagree, " disagreements in ",
            total, " values (rate ", double(disagree) / double(total),
            "), worst |integer - exact| / bound = ", worst_ratio);
    CHECK(unexplained == 0);
    CHECK(worst_ratio <= 1.0 + 1e-9);
    if (mode != 3) CHECK(double(disagree) / double(total) < 2e-6);
  }
}

TEST_CASE("requantization_from_double: ranges and errors") {
  const double s[] = {1.0 / 3000, -2.5e-9, 0.0, 0.5, 3e-12};
  const double t[] = {0.3, -0.5, 0.75, 1e6, 0.0};
  const double sr[] = {1.0 / 255, 0.0, 1e-3, 0.25, 0.0};
  const Requantization q = requantization_from_double(5, s, t, 255, RequantResidual::s32, sr);
  for (int c = 0; c < 5; ++c) {
    CAPTURE(c);
    const int64_t top =
        std::max<int64_t>(std::abs(q.multiplier[size_t(c)]), std::abs(q.residual_multiplier[size_t(c)]));
    CHECK(q.shift[size_t(c)] >= 1);
    CHECK(q.shift[size_t(c)] <= 52);
    CHECK(std::llabs(q.offset[size_t(c)]) <= (int64_t(1) << 61));
    // Normalized unless a limit was hit: the tiny scale of channel 4 (S = 52) and the offset of
    // channel 3 (|t / s| = 2e6 accumulator units still fits: normalized too).
    if (c != 4) CHECK(top >= (int64_t(1) << 30));
  }
  CHECK(q.shift[4] == 52);
  const double big[] = {1e8}, zero[] = {0.0}, inf[] = {INFINITY}, huge_t[] = {1e17};
  CHECK_THROWS_AS(requantization_from_double(1, big, zero, 255), lowbit::Error);
  CHECK_THROWS_AS(requantization_from_double(1, inf, zero, 255), lowbit::Error);
  CHECK_THROWS_AS(requantization_from_double(1, zero, huge_t, 255), lowbit::Error);
  CHECK_THROWS_AS(requantization_from_double(1, zero, zero, 256), lowbit::Error);
  CHECK_THROWS_AS(requantization_from_double(1, zero, zero, 255, RequantResidual::u8), lowbit::Error);
  CHECK_THROWS_AS(requantization_from_double(1, zero, zero, 255, RequantResidual::s32, big), lowbit::Error);
  // A uint8 residual may have a real multiplier far above the main one: m' is not limited to int32,
  // so m stays normalized.
  const double small[] = {1e-6}, one[] = {1.0};
  const Requantization qu = requantization_from_double(1, small, zero, 255, RequantResidual::u8, one);
  CHECK(std::abs(qu.multiplier[0]) >= (int32_t(1) << 30));
  CHECK(qu.residual_multiplier[0] > INT32_MAX);
  // A residual tensor must match the residual term.
  std::vector<int32_t> acc(5, 0);
  std::vector<uint8_t> out(5);
  RequantArgs a;
  a.rows = 1;
  a.acc = acc.data();
  a.ld_acc = 5;
  a.out = out.data();
  a.ld_out = 5;
  CHECK_THROWS_AS(requantize_u8(q, a), lowbit::Error);
}

// ---------------------------------------------------------------------------------------------
// Peak probe
// ---------------------------------------------------------------------------------------------

TEST_CASE("measure_peak_int8_gops: positive on a VNNI CPU") {
  if (!cpu_has_avx512_vnni()) LOWBIT_SKIP("no AVX-512 VNNI");
  const double gops = measure_peak_int8_gops(1);
  MESSAGE("int8 peak, 1 thread: ", gops, " GOP/s");
  CHECK(gops > 0);
}

}  // namespace
