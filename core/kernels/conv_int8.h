// Integer convolutions for quantized inference: uint8 NHWC activations x int8 weights -> int32
// NHWC accumulators (no bias, no zero-point correction; core/kernels/requant.h turns them into the
// next layer's uint8 codes).
//
// Geometry: Conv2dGeometry (core/kernels/shapes.h), any stride, padding and dilation.
//   x  [N][H][W][C]          uint8 codes
//   y  [N][P][Q][K]          int32, y[n][p][q][k] = sum_{r,s,c} xpad(n, p*sh - ph + r*dh, q*sw - pw + s*dw, c)
//                                                               * w[k][r][s][c]
// where xpad is x inside the image and x_zero_point outside it: padding stands for the real value 0,
// whose code is the activation zero point (0 for the unsigned codes after a ReLU). A caller whose
// zero point za is not 0 subtracts za * (sum of the weights of channel k) from y itself
// (PackedS8::column_sums for the packed weights).
//
//   pack_conv_weights_s8     w [K][R][S][C] int8 (groups 1) -> the GEMM's packed B (R S C' x K, C' =
//                            C rounded up to a multiple of 4 with zero weights when the layer runs
//                            as an implicit GEMM with C >= 3, else C; column_sums are w's).
//   conv2d_u8s8s32           groups 1, through the int8 GEMM's kernels (core/kernels/gemm_int8.h).
//                            No dilation along W and C >= 3 (every layer of the zoo but the grey
//                            first layers): implicit GEMM, parallel over output rows; the S taps of a
//                            kernel row are S C' contiguous bytes of an input row (of a copy of x
//                            with the zero point around it and C' channels when there is padding or
//                            C' != C), read in place as one segment of K. Otherwise (C = 1 or 2, or
//                            dilation along W) im2col (uint8, the zero point in the padding), fused
//                            per block of output pixels: each parallel task builds its block's rows
//                            in its own buffer and multiplies them at once.
//   conv2d_u8s8u8            the same with the requantization (core/kernels/requant.h) fused.
//   depthwise_conv2d_u8s8s32 groups == C == K (channel multiplier 1), w [K][R][S] int8: direct over a
//                            copy of x with the zero point around it (when there is padding), 16
//                            channels per AVX-512 vector when avx512_enabled(), else portable;
//                            parallel over output rows.
//   depthwise_conv2d_u8s8u8  the same with the requantization fused.
// All are exact integer arithmetic: bit-identical to their `_ref` twins (plain 7-loop direct
// convolutions, int64 accumulation, throwing lowbit::Error if a result does not fit int32; the
// fused ones: that, then requantize_u8_ref), on every path (VNNI or portable GEMM kernels as
// int8_vnni_enabled() says) and for any thread count. Results always fit for R S C <= 65793
// (|sum| <= 255 * 128 * R S C).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/kernels/gemm_int8.h"
#include "core/kernels/requant.h"
#include "core/kernels/shapes.h"

namespace lowbit::kernels {

PackedS8 pack_conv_weights_s8(const Conv2dGeometry& g, const int8_t* w);

void conv2d_u8s8s32(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const PackedS8& w, int32_t* y);

// conv2d_u8s8s32 handed out block by block, for epilogues requantize_u8 alone does not cover (a
// caller's own combination of the results): for each block of output pixels [r0, r0 + rows) (rows of
// y, (n P + p) Q + q; the blocks partition [0, N P Q)) it calls epilogue(r0, rows, acc) with acc
// [rows][K] int32 in a buffer of the calling thread, valid during the call, on the thread that
// computed it (blocks in parallel, in no particular order). The reference twin is conv2d_u8s8s32_ref
// followed by epilogue(0, N P Q, y).
using ConvBlockEpilogue = std::function<void(int64_t r0, int64_t rows, const int32_t* acc)>;
void conv2d_u8s8s32_blocks(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const PackedS8& w,
                           const ConvBlockEpilogue& epilogue);
// w unpacked, [K][R][S][C].
void conv2d_u8s8s32_ref(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const int8_t* w, int32_t* y);

// conv2d_u8s8s32 with requantize_u8 (core/kernels/requant.h) fused as its epilogue: every block of
// output pixels is requantized on the thread that computed it, while its int32 results are in
// cache, into y [N][P][Q][K] uint8 codes. The residual, when q has one, is [N][P][Q][K] (int32 or
// uint8 as q.residual says, the other pointer null). Bit-identical to conv2d_u8s8s32 followed by
// requantize_u8 (the `_ref` twin is exactly that, with the `_ref` functions).
void conv2d_u8s8u8(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const PackedS8& w,
                   const Requantization& q, const int32_t* residual_s32, const uint8_t* residual_u8, uint8_t* y);
void conv2d_u8s8u8_ref(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const int8_t* w,
                       const Requantization& q, const int32_t* residual_s32, const uint8_t* residual_u8, uint8_t* y);

void depthwise_conv2d_u8s8s32(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const int8_t* w,
                              int32_t* y);
void depthwise_conv2d_u8s8s32_ref(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const int8_t* w,
                                  int32_t* y);

// depthwise_conv2d_u8s8s32 with requantize_u8 fused, as conv2d_u8s8u8.
void depthwise_conv2d_u8s8u8(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const int8_t* w,
                             const Requantization& q, const int32_t* residual_s32, const uint8_t* residual_u8,
                             uint8_t* y);
void depthwise_conv2d_u8s8u8_ref(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const int8_t* w,
                                 const Requantization& q, const int32_t* residual_s32, const uint8_t* residual_u8,
                                 uint8_t* y);

namespace detail {

// The convolutions' fused epilogue: rows [r0, r0 + rows) of an [M][K] uint8 output y, requantized
// (requantize_u8) from acc [rows][K]; the residuals, when given, are [M][K] like y.
void requantize_block(const Requantization& q, int64_t K, int64_t r0, int64_t rows, const int32_t* acc,
                      const int32_t* residual_s32, const uint8_t* residual_u8, uint8_t* y);

// x with x_zero_point around it and cp >= C channels per pixel (the added ones 0), [N][Hp][Wp][cp]:
// pad_h rows above and pad_w columns left of x, the zero point in the rest (Hp >= H + pad_h,
// Wp >= W + pad_w), for the int8 convolutions (direct and Winograd). The buffer is cached per calling
// thread; a call nested in another's parallel region on the same thread (work stealing) finds it
// busy and allocates its own. Valid while this object lives.
class PaddedU8 {
 public:
  PaddedU8() = default;
  PaddedU8(const PaddedU8&) = delete;
  PaddedU8& operator=(const PaddedU8&) = delete;
  ~PaddedU8() {
    if (busy_) *busy_ = false;
  }
  const uint8_t* fill(const Conv2dGeometry& g, const uint8_t* x, uint8_t zp, int64_t cp, int64_t Hp, int64_t Wp);

 private:
  std::vector<uint8_t, Aligned64Allocator<uint8_t>> own_;
  bool* busy_ = nullptr;
};

}  // namespace detail

}  // namespace lowbit::kernels
