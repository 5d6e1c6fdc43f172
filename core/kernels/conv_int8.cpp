// Integer convolutions (contract: core/kernels/conv_int8.h).
#include "core/kernels/conv_int8.h"

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/kernels/cpu.h"
#include "core/kernels/requant.h"
#include "core/parallel.h"

namespace lowbit::kernels {
namespace {

void check_geometry(const Conv2dGeometry& g, const char* op) {
  LOWBIT_CHECK(g.N >= 0 && g.C >= 1 && g.H >= 1 && g.W >= 1 && g.K >= 1 && g.R >= 1 && g.S >= 1 && g.stride_h >= 1 &&
                   g.stride_w >= 1 && g.pad_h >= 0 && g.pad_w >= 0 && g.dil_h >= 1 && g.dil_w >= 1 && g.groups >= 1 &&
                   g.C % g.groups == 0 && g.K % g.groups == 0,
               op, ": invalid geometry");
  LOWBIT_CHECK(g.P() >= 1 && g.Q() >= 1, op, ": empty output (P=", g.P(), ", Q=", g.Q(), ")");
}

// Channels per pixel of the packed weights and of the implicit GEMM's input: C rounded up to a
// multiple of 4 (zero weights on the added channels) when the implicit GEMM applies (no dilation
// along W) and C >= 3 (an RGB first layer: 4/3 of the MACs, no im2col); C itself otherwise (1 or 2
// channels, or dilation along W: im2col).
int64_t packed_channels(const Conv2dGeometry& g) {
  if (g.C % 4 == 0 || g.dil_w != 1 || g.C < 3) return g.C;
  return (g.C + 3) / 4 * 4;
}

// This thread's byte buffer of at least n bytes (64-byte aligned; grown on demand, never shrunk).
uint8_t* byte_scratch(int64_t n) {
  thread_local std::vector<uint8_t, Aligned64Allocator<uint8_t>> buf;
  if (int64_t(buf.size()) < n) buf.resize(size_t(n));
  return buf.data();
}

// This thread's int32 buffer of at least n elements (the fused epilogue's block of results).
int32_t* acc_scratch(int64_t n) {
  thread_local std::vector<int32_t, Aligned64Allocator<int32_t>> buf;
  if (int64_t(buf.size()) < n) buf.resize(size_t(n));
  return buf.data();
}

// Copies n bytes in 16-byte pieces (the im2col segments are short: inline moves beat memcpy calls).
inline void copy_bytes(uint8_t* __restrict dst, const uint8_t* __restrict src, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) std::memcpy(dst + i, src + i, 16);
  for (; i < n; ++i) dst[i] = src[i];
}

// cols[(row - r0) * ld + (r S + s) C + c] = xpad(pixel `row`, tap (r, s), channel c) for output pixels
// [r0, r1) (row = (n P + p) Q + q); the ld - R S C bytes past each row are zeroed.
void im2col_u8(const Conv2dGeometry& g, const uint8_t* x, uint8_t zp, int64_t r0, int64_t r1, uint8_t* cols,
               int64_t ld) {
  const int64_t P = g.P(), Q = g.Q(), C = g.C, SC = g.S * C, L = g.R * SC;
  for (int64_t row = r0; row < r1; ++row) {
    const int64_t n = row / (P * Q), p = row / Q % P, q = row % Q;
    uint8_t* dst = cols + (row - r0) * ld;
    const int64_t iw0 = q * g.stride_w - g.pad_w;
    const bool row_inside = g.dil_w == 1 && iw0 >= 0 && iw0 + g.S <= g.W;
    for (int64_t r = 0; r < g.R; ++r, dst += SC) {
      const int64_t ih = p * g.stride_h - g.pad_h + r * g.dil_h;
      if (ih < 0 || ih >= g.H) {
        std::memset(dst, zp, size_t(SC));
        continue;
      }
      const uint8_t* xrow = x + (n * g.H + ih) * g.W * C;
      if (row_inside) {
        copy_bytes(dst, xrow + iw0 * C, SC);
        continue;
      }
      for (int64_t s = 0; s < g.S; ++s) {
        const int64_t iw = iw0 + s * g.dil_w;
        if (iw < 0 || iw >= g.W)
          std::memset(dst + s * C, zp, size_t(C));
        else
          copy_bytes(dst + s * C, xrow + iw * C, C);
      }
    }
    if (ld > L) std::memset(cols + (row - r0) * ld + L, 0, size_t(ld - L));
  }
}

// One output row of the depthwise convolution over a padded input (no bounds checks): xrow points
// at the padded input row of the output row's first kernel row, tap (r, s) of output q at
// xrow + (r dh Wp + q sw + s dw) C; y[q][k] for q < Q. Portable.
void depthwise_row_portable(const Conv2dGeometry& g, int64_t Wp, const uint8_t* xrow, const int32_t* wt, int32_t* y) {
  const int64_t K = g.K, Q = g.Q();
  for (int64_t q = 0; q < Q; ++q) {
    int32_t* yq = y + q * K;
    std::fill(yq, yq + K, 0);
    for (int64_t r = 0; r < g.R; ++r)
      for (int64_t s = 0; s < g.S; ++s) {
        const uint8_t* xp = xrow + (r * g.dil_h * Wp + q * g.stride_w + s * g.dil_w) * K;
        const int32_t* wp = wt + (r * g.S + s) * K;
        for (int64_t k = 0; k < K; ++k) yq[k] += int32_t(xp[k]) * wp[k];
      }
  }
}

// The same with 16 channels per vector (u8 widened to int32; products and sums exact in int32),
// channel blocks outermost. TAPS > 0: R S == TAPS, the block's weights held in registers (3x3).
template <int TAPS>
LOWBIT_AVX512 void depthwise_row_avx512(const Conv2dGeometry& g, int64_t Wp, const uint8_t* xrow, const int32_t* wt,
                                        int32_t* y) {
  const int64_t K = g.K, Q = g.Q(), taps = TAPS > 0 ? TAPS : g.R * g.S;
  constexpr int kRegs = TAPS > 0 ? TAPS : 1;
  int64_t off[TAPS > 0 ? TAPS : 1];  // input offset of each tap (TAPS > 0)
  if constexpr (TAPS > 0)
    for (int t = 0; t < TAPS; ++t) off[t] = ((t / g.S) * g.dil_h * Wp + (t % g.S) * g.dil_w) * K;
  for (int64_t k0 = 0; k0 < K; k0 += 16) {
    const __mmask16 mask = K - k0 >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k0)) - 1u);
    __m512i wv[kRegs];
    if constexpr (TAPS > 0)
#pragma GCC unroll 9
      for (int t = 0; t < TAPS; ++t) wv[t] = _mm512_maskz_loadu_epi32(mask, wt + t * K + k0);
    for (int64_t q = 0; q < Q; ++q) {
      __m512i acc = _mm512_setzero_si512();
      const uint8_t* xq = xrow + q * g.stride_w * K + k0;
      if constexpr (TAPS > 0) {
#pragma GCC unroll 9
        for (int t = 0; t < TAPS; ++t) {
          const __m512i xv = _mm512_maskz_cvtepu8_epi32(__mmask16(0xFFFF), _mm_maskz_loadu_epi8(mask, xq + off[t]));
          acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(xv, wv[t]));
        }
      } else {
        for (int64_t r = 0; r < g.R; ++r)
          for (int64_t s = 0; s < g.S; ++s) {
            const __m512i xv = _mm512_maskz_cvtepu8_epi32(
                __mmask16(0xFFFF), _mm_maskz_loadu_epi8(mask, xq + (r * g.dil_h * Wp + s * g.dil_w) * K));
            const __m512i w = _mm512_maskz_loadu_epi32(mask, wt + (r * g.S + s) * K + k0);
            acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(xv, w));
          }
      }
      _mm512_mask_storeu_epi32(y + q * K + k0, mask, acc);
    }
  }
  (void)taps;
}

// The depthwise convolution by output rows (n, p): computes row `row` into y + row Q K (y given) or
// a buffer of the calling thread (y null), then calls epilogue(row Q, Q, results) on that thread.
template <class Epilogue>
void depthwise_rows(const Conv2dGeometry& g, const uint8_t* x, uint8_t zp, const int8_t* w, int32_t* y, const char* op,
                    Epilogue&& epilogue) {
  check_geometry(g, op);
  LOWBIT_CHECK(g.groups == g.C && g.K == g.C, op, ": need groups == C == K, got C=", g.C, " K=", g.K,
               " groups=", g.groups);
  const int64_t P = g.P(), Q = g.Q(), K = g.K, taps = g.R * g.S;
  if (g.N == 0) return;
  std::vector<int32_t> wt(static_cast<size_t>(taps * K));  // wt[t][k] = w[k][t]
  for (int64_t k = 0; k < K; ++k)
    for (int64_t t = 0; t < taps; ++t) wt[size_t(t * K + k)] = w[k * taps + t];
  const int64_t Hp = g.H + 2 * g.pad_h, Wp = g.W + 2 * g.pad_w;
  const uint8_t* src = x;
  detail::PaddedU8 padded;
  if (g.pad_h || g.pad_w) src = padded.fill(g, x, zp, g.C, Hp, Wp);
  const bool simd = avx512_enabled();
  const int64_t row_cost = Q * K * taps;
  parallel_for(0, g.N * P, std::max<int64_t>(1, 32768 / std::max<int64_t>(row_cost, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t n = row / P, p = row % P;
      const uint8_t* xrow = src + (n * Hp + p * g.stride_h) * Wp * K;
      int32_t* out = y ? y + row * Q * K : acc_scratch(Q * K);
      if (simd && taps == 9)
        depthwise_row_avx512<9>(g, Wp, xrow, wt.data(), out);
      else if (simd)
        depthwise_row_avx512<0>(g, Wp, xrow, wt.data(), out);
      else
        depthwise_row_portable(g, Wp, xrow, wt.data(), out);
      epilogue(row * Q, Q, out);
    }
  });
}

// The convolution by blocks of output pixels (rows of y: (n P + p) Q + q). For each block
// [r0, r0 + rows) it computes the int32 results into y + r0 K (y given) or into a buffer of the
// calling thread (y null), then calls epilogue(r0, rows, results) on the same thread.
//
// Implicit GEMM when C' = packed_channels(g) is a multiple of 4 and dil_w == 1: the S taps of a
// kernel row are S C' contiguous bytes of an input row (of a copy of x with the zero point around it
// and C' channels, when there is padding or C' != C), a whole number of quads, so one output row of
// Q pixels is Q GEMM rows sw C' bytes apart with R segments each, read in place. Else im2col: blocks of output pixels
// from the shape alone, about 32 of them, each block's rows within ~96 KiB, built by the task in its own buffer.
template <class Epilogue>
void conv_blocks(const Conv2dGeometry& g, const uint8_t* x, uint8_t zp, const PackedS8& w, int32_t* y, const char* op,
                 Epilogue&& epilogue) {
  check_geometry(g, op);
  LOWBIT_CHECK(g.groups == 1, op, ": groups must be 1 (depthwise: depthwise_conv2d_u8s8s32)");
  const int64_t cp = packed_channels(g), L = g.R * g.S * cp;
  LOWBIT_CHECK(w.K == L && w.N == g.K, op, ": packed weights are ", w.K, " x ", w.N, ", the geometry needs ", L, " x ",
               g.K, " (pack them with pack_conv_weights_s8)");
  const int64_t P = g.P(), Q = g.Q(), M = g.N * P * Q;
  if (M == 0) return;
  auto results = [&](int64_t r0, int64_t rows) { return y ? y + r0 * g.K : acc_scratch(rows * g.K); };
  if (cp % 4 == 0 && g.dil_w == 1) {
    const int64_t Hp = g.H + 2 * g.pad_h, Wp = g.W + 2 * g.pad_w;
    const uint8_t* src = x;
    detail::PaddedU8 padded;
    if (g.pad_h || g.pad_w || cp != g.C) src = padded.fill(g, x, zp, cp, Hp, Wp);
    // Tasks of at least ~256 K multiply-accumulates (a few microseconds): finer ones cost more in
    // fork/join than they share out at small batch sizes.
    const int64_t row_macs = std::max<int64_t>(1, Q * L * g.K);
    const int64_t grain = std::max<int64_t>({1, g.N * P / 128, (int64_t(1) << 18) / row_macs});
    parallel_for(0, g.N * P, grain, [&](int64_t lo, int64_t hi) {
      for (int64_t row = lo; row < hi; ++row) {
        const int64_t n = row / P, p = row % P;
        detail::SegmentedA a;
        a.a = src + (n * Hp + p * g.stride_h) * Wp * cp;
        a.rows = Q;
        a.lda = g.stride_w * cp;
        a.nseg = g.R;
        a.seg_len = g.S * cp;
        a.seg_stride = g.dil_h * Wp * cp;
        int32_t* out = results(row * Q, Q);
        detail::gemm_u8s8s32_segmented(a, w, out, g.K);
        epilogue(row * Q, Q, out);
      }
    });
    return;
  }
  const int64_t ld = w.k_padded;
  const int64_t max_rows = std::max<int64_t>(24, (int64_t(96) << 10) / ld);
  const int64_t mb = std::clamp<int64_t>((M + 31) / 32, 1, max_rows);
  parallel_for(0, (M + mb - 1) / mb, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t r0 = t * mb, r1 = std::min(M, r0 + mb);
      uint8_t* cols = byte_scratch((r1 - r0) * ld);
      im2col_u8(g, x, zp, r0, r1, cols, ld);
      detail::SegmentedA a;
      a.a = cols;
      a.rows = r1 - r0;
      a.lda = ld;
      a.seg_len = ld;
      int32_t* out = results(r0, r1 - r0);
      detail::gemm_u8s8s32_segmented(a, w, out, g.K);
      epilogue(r0, r1 - r0, out);
    }
  });
}

}  // namespace

PackedS8 pack_conv_weights_s8(const Conv2dGeometry& g, const int8_t* w) {
  LOWBIT_CHECK(g.groups == 1, "pack_conv_weights_s8: groups must be 1 (depthwise: depthwise_conv2d_u8s8s32)");
  const int64_t cp = packed_channels(g), L = g.R * g.S * cp;
  if (cp == g.C) return pack_b_s8(L, g.K, w, L, /*trans_b=*/true);
  std::vector<int8_t> padded(static_cast<size_t>(g.K * L), 0);
  for (int64_t i = 0; i < g.K * g.R * g.S; ++i) std::copy(w + i * g.C, w + (i + 1) * g.C, padded.begin() + i * cp);
  return pack_b_s8(L, g.K, padded.data(), L, /*trans_b=*/true);
}

void conv2d_u8s8s32(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const PackedS8& w, int32_t* y) {
  conv_blocks(g, x, x_zero_point, w, y, "conv2d_u8s8s32", [](int64_t, int64_t, const int32_t*) {});
}

void conv2d_u8s8s32_blocks(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const PackedS8& w,
                           const ConvBlockEpilogue& epilogue) {
  conv_blocks(g, x, x_zero_point, w, nullptr, "conv2d_u8s8s32_blocks", epilogue);
}

void conv2d_u8s8u8(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const PackedS8& w,
                   const Requantization& q, const int32_t* residual_s32, const uint8_t* residual_u8, uint8_t* y) {
  const char* op = "conv2d_u8s8u8";
  detail::check_requantization(q, g.K, residual_s32 != nullptr, residual_u8 != nullptr, op);
  conv_blocks(g, x, x_zero_point, w, nullptr, op, [&](int64_t r0, int64_t rows, const int32_t* acc) {
    detail::requantize_block(q, g.K, r0, rows, acc, residual_s32, residual_u8, y);
  });
}

void conv2d_u8s8s32_ref(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const int8_t* w, int32_t* y) {
  check_geometry(g, "conv2d_u8s8s32_ref");
  const int64_t P = g.P(), Q = g.Q(), Cg = g.C_per_group(), Kg = g.K_per_group();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q)
        for (int64_t k = 0; k < g.K; ++k) {
          const int64_t c0 = k / Kg * Cg;
          int64_t s = 0;
          for (int64_t r = 0; r < g.R; ++r)
            for (int64_t t = 0; t < g.S; ++t)
              for (int64_t c = 0; c < Cg; ++c) {
                const int64_t ih = p * g.stride_h - g.pad_h + r * g.dil_h, iw = q * g.stride_w - g.pad_w + t * g.dil_w;
                const bool inside = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
                const int64_t xv = inside ? x[((n * g.H + ih) * g.W + iw) * g.C + c0 + c] : x_zero_point;
                s += xv * int64_t(w[((k * g.R + r) * g.S + t) * Cg + c]);
              }
          LOWBIT_CHECK(s >= INT32_MIN && s <= INT32_MAX, "conv2d_u8s8s32_ref: y = ", s, " does not fit int32");
          y[((n * P + p) * Q + q) * g.K + k] = int32_t(s);
        }
}

namespace {
// requantize_u8_ref over a convolution's N P Q x K accumulators (the `_ref` twins' epilogue).
void requantize_output_ref(const Conv2dGeometry& g, const int32_t* acc, const Requantization& q,
                           const int32_t* residual_s32, const uint8_t* residual_u8, uint8_t* y) {
  RequantArgs a;
  a.rows = g.N * g.P() * g.Q();
  a.acc = acc;
  a.ld_acc = g.K;
  a.residual_s32 = residual_s32;
  a.residual_u8 = residual_u8;
  a.ld_residual = g.K;
  a.out = y;
  a.ld_out = g.K;
  requantize_u8_ref(q, a);
}
}  // namespace

void conv2d_u8s8u8_ref(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const int8_t* w,
                       const Requantization& q, const int32_t* residual_s32, const uint8_t* residual_u8, uint8_t* y) {
  std::vector<int32_t> acc(static_cast<size_t>(g.N * g.P() * g.Q() * g.K));
  conv2d_u8s8s32_ref(g, x, x_zero_point, w, acc.data());
  requantize_output_ref(g, acc.data(), q, residual_s32, residual_u8, y);
}

void depthwise_conv2d_u8s8s32(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const int8_t* w,
                              int32_t* y) {
  depthwise_rows(g, x, x_zero_point, w, y, "depthwise_conv2d_u8s8s32", [](int64_t, int64_t, const int32_t*) {});
}

void depthwise_conv2d_u8s8u8(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const int8_t* w,
                             const Requantization& q, const int32_t* residual_s32, const uint8_t* residual_u8,
                             uint8_t* y) {
  const char* op = "depthwise_conv2d_u8s8u8";
  detail::check_requantization(q, g.K, residual_s32 != nullptr, residual_u8 != nullptr, op);
  depthwise_rows(g, x, x_zero_point, w, nullptr, op, [&](int64_t r0, int64_t rows, const int32_t* acc) {
    detail::requantize_block(q, g.K, r0, rows, acc, residual_s32, residual_u8, y);
  });
}

void depthwise_conv2d_u8s8s32_ref(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const int8_t* w,
                                  int32_t* y) {
  LOWBIT_CHECK(g.groups == g.C && g.K == g.C, "depthwise_conv2d_u8s8s32_ref: need groups == C == K, got C=", g.C,
               " K=", g.K, " groups=", g.groups);
  conv2d_u8s8s32_ref(g, x, x_zero_point, w, y);
}

void depthwise_conv2d_u8s8u8_ref(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const int8_t* w,
                                 const Requantization& q, const int32_t* residual_s32, const uint8_t* residual_u8,
                                 uint8_t* y) {
  std::vector<int32_t> acc(static_cast<size_t>(g.N * g.P() * g.Q() * g.K));
  depthwise_conv2d_u8s8s32_ref(g, x, x_zero_point, w, acc.data());
  requantize_output_ref(g, acc.data(), q, residual_s32, residual_u8, y);
}

namespace detail {

// The fused epilogue: rows [r0, r0 + rows) of an [M][K] output, requantized from `acc` ([rows][K]).
void requantize_block(const Requantization& q, int64_t K, int64_t r0, int64_t rows, const int32_t* acc,
                      const int32_t* residual_s32, const uint8_t* residual_u8, uint8_t* y) {
  RequantArgs a;
  a.rows = rows;
  a.acc = acc;
  a.ld_acc = K;
  a.residual_s32 = residual_s32 ? residual_s32 + r0 * K : nullptr;
  a.residual_u8 = residual_u8 ? residual_u8 + r0 * K : nullptr;
  a.ld_residual = K;
  a.out = y + r0 * K;
  a.ld_out = K;
  detail::requantize_u8_rows(q, a);
}

const uint8_t* PaddedU8::fill(const Conv2dGeometry& g, const uint8_t* x, uint8_t zp, int64_t cp, int64_t Hp,
                              int64_t Wp) {
  thread_local std::vector<uint8_t, Aligned64Allocator<uint8_t>> cached;
  thread_local bool busy = false;
  const int64_t C = g.C;
  auto& buf = busy ? own_ : cached;
  if (!busy) busy_ = &busy, busy = true;
  if (int64_t(buf.size()) < g.N * Hp * Wp * cp) buf.resize(size_t(g.N * Hp * Wp * cp));
  uint8_t* out = buf.data();
  parallel_for(0, g.N * Hp, std::max<int64_t>(1, 4096 / (Wp * cp)), [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t n = row / Hp, h = row % Hp - g.pad_h;
      uint8_t* d = out + row * Wp * cp;
      if (h < 0 || h >= g.H) {
        std::memset(d, zp, size_t(Wp * cp));
        continue;
      }
      std::memset(d, zp, size_t(g.pad_w * cp));
      std::memset(d + (g.pad_w + g.W) * cp, zp, size_t((Wp - g.pad_w - g.W) * cp));
      const uint8_t* src = x + (n * g.H + h) * g.W * C;
      uint8_t* dst = d + g.pad_w * cp;
      if (cp == C) {
        std::memcpy(dst, src, size_t(g.W * C));
        continue;
      }
      int64_t w = 0;
      if constexpr (std::endian::native == std::endian::little)
        if (C == 3 && cp == 4)  // an RGB first layer: one 4-byte move per pixel, the 4th byte cleared
          for (; w + 1 < g.W; ++w) {
            uint32_t v;
            std::memcpy(&v, src + w * 3, 4);
            v &= 0x00FFFFFFu;
            std::memcpy(dst + w * 4, &v, 4);
          }
      for (; w < g.W; ++w) {
        for (int64_t c = 0; c < C; ++c) dst[w * cp + c] = src[w * C + c];
        for (int64_t c = C; c < cp; ++c) dst[w * cp + c] = 0;
      }
    }
  });
  return out;
}
}  // namespace detail

}  // namespace lowbit::kernels
