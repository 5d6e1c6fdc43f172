// Exact integer Winograd F(2x2, 3x3) convolution for quantized inference: uint8 NHWC activations x
// int8 weights -> int32 NHWC accumulators, the same integers as conv2d_u8s8s32 (conv_int8.h) with
// 16 multiplies per 2x2 output tile and channel pair instead of 36.
//
// Geometry: 3x3, stride 1, dilation 1, groups 1, any padding (the padding is x_zero_point, as in
// conv2d_u8s8s32), any P, Q (the last tile's extra outputs are discarded).
//
// Math, per output channel k, input channel c and tile (2x2 outputs from the 4x4 input patch d):
//   U'[k][c] = G2 g G2^T, G2 = [[2,0,0],[1,1,1],[1,-1,1],[0,0,2]]    (4 x the textbook U: integers)
//   V[c]     = B^T d B,   B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]
//   y        = A^T (sum_c U'[k][c] (.) V[c]) A / 4,   A^T = [[1,1,1,0],[0,1,-1,-1]]   (exact division)
// For inputs in [0, M], V is in [-2M, 2M] at every position but (1, 1), where it is in [0, 4M]: the
// kernels store V + o_pos (o = 2M, or 0 at (1, 1)) as uint8, in [0, 4M], so M <= 63 (6-bit
// activations). The 16 per-position products sum_c U' (V + o) are int8 GEMMs [tiles x C'] x [C' x K]
// (gemm_int8.h's kernels, VNNI or portable); the offsets come back out as a per-(k, output) constant
// o-compensation A^T (o (.) sum_c U'[k][c]) A. U' entries beyond int8 (|U'| <= 9 * 128; 4-bit
// DoReFa codes reach 135 at the centre) are stored clamped to [-127, 127] and the excess is added
// back per tile from a short list (acc[k][pos] += excess (V[c][pos] + o_pos)).
//
//   pack_conv_weights_winograd_s8  w [K][3][3][C] int8 -> WinogradPackedS8 for inputs whose codes
//                            (padding included) are <= max_code. Returns false (and packs nothing)
//                            when the layer does not qualify: geometry, max_code > 63, more clamped
//                            entries than 16 + 1/512 of U', or a tile sum that could leave int32.
//   conv2d_winograd_u8s8s32  y as conv2d_u8s8s32 (bit-identical), for x and x_zero_point <= the
//                            pack's max_code (x_zero_point is checked; larger codes in x give wrong
//                            results). Tiles in blocks of whole tile rows (2 output rows of an image)
//                            sized for the L2, parallel over blocks (parallel_for; serial inside a
//                            SerialScope); per block: the input transform into [16][tiles][C'] (AVX-512
//                            byte arithmetic when avx512_enabled(), else portable), then on the VNNI
//                            path for C' <= 32 kernels that keep the products in registers and apply
//                            the output transform there (C' = 16 or 32: 16 tiles in the vector lanes,
//                            the weights broadcast; else 3 tiles x 16 channels), else 16 GEMMs into
//                            [16][tiles][K] int32 and the output transform from memory; the clamped
//                            entries' corrections.
//   conv2d_winograd_u8s8s32_blocks  the same handed out block by block, as conv2d_u8s8s32_blocks
//                            (epilogue(r0, rows, acc): rows of y (n P + p) Q + q, blocks partition them).
//   conv2d_winograd_u8s8u8   the same with requantize_u8 fused, as conv2d_u8s8u8; where the float path
//                            (2f) holds without an int32 residual (requant.h), in the lanes kernel's
//                            registers before the transpose back to pixels, or in the GEMM path's
//                            output transform (no int32 block buffer).
// The `_ref` twins are conv_int8.h's direct conv2d_u8s8s32_ref / conv2d_u8s8u8_ref (the same
// integers); conv2d_winograd_u8s8s32_ref is the plain-loop Winograd (int64, U' unclamped, throws
// lowbit::Error if a tile's sum is not divisible by 4), for tests.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "core/kernels/conv_int8.h"
#include "core/kernels/gemm_int8.h"
#include "core/kernels/requant.h"
#include "core/kernels/shapes.h"

namespace lowbit::kernels {

struct WinogradPackedS8 {
  struct Overflow {
    int32_t pos = 0, c = 0, k = 0, excess = 0;  // U'[k][c][pos] = clamp + excess
  };
  int64_t C = 0, K = 0;
  int64_t max_code = 0;               // the inputs' largest code (padding included) this pack is for
  std::array<int32_t, 16> offset{};   // o_pos added to V
  std::array<PackedS8, 16> u;         // per position: clamp(U', -127, 127) [C' x K] (C' = C rounded up to 4)
  std::vector<int32_t> lane_u;        // C' = 16, 32: +-clamp(U') as [k / 4][pos][k % 4][C'/4 x 4 channels] (the
                                      // lanes kernel's broadcasts, the output transform's sign folded in)
  std::vector<int32_t> compensation;  // [4][K]: (A^T (o (.) sum_c U'[k][c]) A) per output of a tile
  std::vector<Overflow> overflow;     // the clamped entries (sorted by pos, c)
  // C' = 16, 32: the same entries sorted by k, those of channels 4i..4i+3 at [lane_overflow_start[i],
  // lane_overflow_start[i + 1]) (the lanes kernel adds them in its registers)
  std::vector<Overflow> lane_overflow;
  std::vector<int32_t> lane_overflow_start;
};

// 3x3, stride 1, dilation 1, groups 1: what the Winograd kernels compute.
bool conv_winograd_geometry(const Conv2dGeometry& g);

bool pack_conv_weights_winograd_s8(const Conv2dGeometry& g, const int8_t* w, int64_t max_code, WinogradPackedS8& out);

// Bytes per image of the zero-point-padded copy of x the kernels make (the tiles' patches; a bound:
// the AVX-512 path reads x itself when C is a multiple of 4).
int64_t conv_winograd_padded_bytes_per_image(const Conv2dGeometry& g);

void conv2d_winograd_u8s8s32(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const WinogradPackedS8& w,
                             int32_t* y);
void conv2d_winograd_u8s8s32_blocks(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point,
                                    const WinogradPackedS8& w, const ConvBlockEpilogue& epilogue);
void conv2d_winograd_u8s8u8(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const WinogradPackedS8& w,
                            const Requantization& q, const int32_t* residual_s32, const uint8_t* residual_u8,
                            uint8_t* y);

// Test/bench switch (default on, process-wide): off, the VNNI path runs the 16 GEMMs through memory
// for every C' instead of the register kernels. All give the same integers.
void set_winograd_fused_vnni(bool on);

// w unpacked, [K][3][3][C].
void conv2d_winograd_u8s8s32_ref(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const int8_t* w,
                                 int32_t* y);

}  // namespace lowbit::kernels
