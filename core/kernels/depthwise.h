// Depthwise 2-D convolution (groups == C), NHWC activations.
//
// Geometry: Conv2dGeometry with groups == C and K == C * multiplier (multiplier >= 1). Output
// channel k reads input channel k / multiplier (PyTorch's grouped-conv channel order).
//   x   [N][H][W][C]      input
//   w   [K][R][S]         weight (KRSC with C/groups == 1)
//   b   [K]               bias, may be null
//   y   [N][P][Q][K]      output
// Strides, padding (zeros) and dilation are honoured.
//
//   depthwise_conv2d_forward          y = conv(x, w) + b
//   depthwise_conv2d_backward_data    dx = conv^T(dy, w)           (dx overwritten)
//   depthwise_conv2d_backward_weight  dw = sum_{n,p,q} dy * x,  db = sum_{n,p,q} dy (db may be null;
//                                     dw/db overwritten)
//
// The fast versions run AVX-512 for float when the CPU has it (a portable path otherwise; double
// always takes the portable path), in parallel over output rows. Weight gradients reduce per-row
// partials in chunks fixed by the shape alone, combined in chunk order: results are bit-identical
// for any thread count. The `_ref` twins are plain loops accumulating in a wider type.
#pragma once

#include "core/kernels/shapes.h"

namespace lowbit::kernels {

void depthwise_conv2d_forward(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y);
void depthwise_conv2d_forward(const Conv2dGeometry& g, const double* x, const double* w, const double* b, double* y);
void depthwise_conv2d_backward_data(const Conv2dGeometry& g, const float* dy, const float* w, float* dx);
void depthwise_conv2d_backward_data(const Conv2dGeometry& g, const double* dy, const double* w, double* dx);
void depthwise_conv2d_backward_weight(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* db);
void depthwise_conv2d_backward_weight(const Conv2dGeometry& g, const double* x, const double* dy, double* dw,
                                      double* db);

void depthwise_conv2d_forward_ref(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y);
void depthwise_conv2d_forward_ref(const Conv2dGeometry& g, const double* x, const double* w, const double* b,
                                  double* y);
void depthwise_conv2d_backward_data_ref(const Conv2dGeometry& g, const float* dy, const float* w, float* dx);
void depthwise_conv2d_backward_data_ref(const Conv2dGeometry& g, const double* dy, const double* w, double* dx);
void depthwise_conv2d_backward_weight_ref(const Conv2dGeometry& g, const float* x, const float* dy, float* dw,
                                          float* db);
void depthwise_conv2d_backward_weight_ref(const Conv2dGeometry& g, const double* x, const double* dy, double* dw,
                                          double* db);

}  // namespace lowbit::kernels
