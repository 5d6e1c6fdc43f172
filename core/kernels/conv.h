// General 2-D convolution (any stride, padding, dilation, groups), NHWC activations, KRSC weights.
//
// Geometry: Conv2dGeometry (core/kernels/shapes.h); C and K must be multiples of `groups`.
//   x   [N][H][W][C]        input
//   w   [K][R][S][C/groups] weight (PyTorch's [K, C/groups, R, S] in channels-last order)
//   b   [K]                 bias, may be null
//   y   [N][P][Q][K]        output
// Output channel k of group g = k / (K/groups) reads input channels [g*C/groups, (g+1)*C/groups).
// Padding is zeros (cross-correlation, as PyTorch's conv2d).
//
//   conv2d_forward          y  = conv(x, w) + b                               (y overwritten)
//   conv2d_backward_data    dx = conv^T(dy, w), the gradient of y wrt x       (dx overwritten)
//   conv2d_backward_weight  dw = sum_{n,p,q} dy (x) x-patch,  db = sum dy    (dw, db overwritten;
//                           db may be null)
//
// Float runs, by geometry (conv2d_algorithm): im2col + GEMM for layers whose output has <= 16
// pixels with >= 64 channels and a kernel larger than 1x1 (core/kernels/conv_im2col.h); Winograd for
// 3x3 stride-1 layers otherwise (core/kernels/conv_winograd.h: F(4x4, 3x3) when C x K <= 128 x 128,
// F(2x2, 3x3) point by point above; the same results up to rounding); else AVX-512 direct
// convolution (register-blocked micro-kernels; special paths for RGB first layers, strided 1x1
// shortcuts, and pointwise convs on <= 8x8 images, which run as one GEMM, core/kernels/gemm.h);
// the `_ref` code without AVX-512; double runs the `_ref` code. Every path is bit-identical for
// any thread count (parallel over output rows, tiles or images; reductions over batch chunks fixed
// by the shape, summed in order). The `_ref` twins are the plain 7-loop direct convolution,
// accumulating in double (long double for double).
#pragma once

#include "core/kernels/shapes.h"

namespace lowbit::kernels {

void conv2d_forward(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y);
void conv2d_forward(const Conv2dGeometry& g, const double* x, const double* w, const double* b, double* y);
void conv2d_backward_data(const Conv2dGeometry& g, const float* dy, const float* w, float* dx);
void conv2d_backward_data(const Conv2dGeometry& g, const double* dy, const double* w, double* dx);
void conv2d_backward_weight(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* db);
void conv2d_backward_weight(const Conv2dGeometry& g, const double* x, const double* dy, double* dw, double* db);

// The algorithm conv2d_* run for float data of this geometry (all three passes): "im2col",
// "wino4x4", "wino2x2", "direct" (AVX-512) or "reference" (no AVX-512). Double always runs the
// reference.
const char* conv2d_algorithm(const Conv2dGeometry& g);

// The float forward with prepared weights, for weights reused across calls (inference; autograd's
// conv2d caches them, autograd/ops_conv.cpp): conv2d_prepare_weight writes the form of w that the
// algorithm of g reads, conv2d_prepared_weight_size(g) floats (Winograd: the transformed weights,
// computed once instead of on every call; otherwise a copy of w), and conv2d_forward_prepared(g, x,
// wp, b, y) gives conv2d_forward(g, x, w, b, y) bit for bit. The form depends on the algorithm
// (conv2d_algorithm(g)), so prepare and run with the same geometry's algorithm.
int64_t conv2d_prepared_weight_size(const Conv2dGeometry& g);
void conv2d_prepare_weight(const Conv2dGeometry& g, const float* w, float* wp);
void conv2d_forward_prepared(const Conv2dGeometry& g, const float* x, const float* wp, const float* b, float* y);

void conv2d_forward_ref(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y);
void conv2d_forward_ref(const Conv2dGeometry& g, const double* x, const double* w, const double* b, double* y);
void conv2d_backward_data_ref(const Conv2dGeometry& g, const float* dy, const float* w, float* dx);
void conv2d_backward_data_ref(const Conv2dGeometry& g, const double* dy, const double* w, double* dx);
void conv2d_backward_weight_ref(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* db);
void conv2d_backward_weight_ref(const Conv2dGeometry& g, const double* x, const double* dy, double* dw, double* db);

}  // namespace lowbit::kernels
