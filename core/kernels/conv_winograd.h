// Internal: Winograd F(m x m, 3x3) convolution, m = 2 or 4 (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016) behind core/kernels/conv.h. Float, AVX-512, NHWC
// activations, KRSC weights.
//
// Applies to 3x3 kernels, stride 1, dilation 1, groups 1, padding 0..2, C and K multiples of 16
// (winograd_applicable). Each m x m output tile is
//     Y = A^T [ (G w G^T) (.) (B^T d B) ] A      (d: the (m+2) x (m+2) input tile, (.) elementwise,
// summed over input channels), i.e. (m+2)^2 independent GEMMs over channels, one per point xi of
// the transform domain, instead of 9 taps: F(2x2) does 16 multiplies per 4 outputs instead of 36,
// F(4x4) 36 per 16 instead of 144 (at a larger rounding error: its transforms have entries up to 8).
//   forward          y  = conv(x, w) + b
//   backward_data    dx = the same algorithm over dy with w flipped (rot180) and C/K swapped,
//                         padding 2 - pad (exact for stride 1)
//   backward_weight  dw = G^T [ sum_tiles (A dY A^T) (.) (B^T d B) ] G   (the adjoint of the
//                         forward in w), db = sum dy; the batch is split into chunks fixed by the
//                         shape whose partials are summed in chunk order
// Results are bit-identical for any thread count. They differ from the direct convolution by
// rounding only (relative to the output's scale ~3e-7 for F(2x2), ~2e-6 for F(4x4));
// tests/test_kernels_conv.cpp pins them to the `_ref` loops of conv.h over the model-zoo shapes
// and odd sizes.
#pragma once

#include "core/kernels/shapes.h"

namespace lowbit::kernels {

// Shape test only (the caller checks the CPU for AVX-512).
bool winograd_applicable(const Conv2dGeometry& g);

// Loop order. kTileBlocks: blocks of a few tiles, each taken through every transform point with
// AVX-512 micro-kernels while its data stays in L1/L2 (the transformed weights, alpha^2 C K floats,
// must stay in cache too). kPoints: a chunk of the batch is transformed, then one GEMM per transform
// point over all its tiles (lowbit's GEMM), then transformed back: the transformed weights are read
// once per chunk, for layers whose weights do not fit in cache.
enum class WinogradOrder { kTileBlocks, kPoints };

// m: output tile size, 2 or 4.
void conv2d_forward_winograd(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y, int m,
                             WinogradOrder order = WinogradOrder::kTileBlocks);
// The forward in two steps, for weights reused across calls: U = winograd_transform_weights(g, w, m)
// (winograd_weight_size(g, m) = (m + 2)^2 C K floats), then conv2d_forward_winograd_transformed(g, x,
// U, ...), which gives conv2d_forward_winograd(g, x, w, ...) bit for bit.
int64_t winograd_weight_size(const Conv2dGeometry& g, int m);
void winograd_transform_weights(const Conv2dGeometry& g, const float* w, int m, float* U);
void conv2d_forward_winograd_transformed(const Conv2dGeometry& g, const float* x, const float* U, const float* b,
                                         float* y, int m, WinogradOrder order = WinogradOrder::kTileBlocks);
void conv2d_backward_data_winograd(const Conv2dGeometry& g, const float* dy, const float* w, float* dx, int m,
                                   WinogradOrder order = WinogradOrder::kTileBlocks);
void conv2d_backward_weight_winograd(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* db,
                                     int m, WinogradOrder order = WinogradOrder::kTileBlocks);

}  // namespace lowbit::kernels
