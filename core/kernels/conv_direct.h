// Internal: AVX-512 direct-convolution kernels behind core/kernels/conv.h (float only).
// Same contracts as conv2d_forward / conv2d_backward_data / conv2d_backward_weight; callers check
// conv_direct_available() (the CPU has AVX-512F) first.
#pragma once

#include "core/kernels/shapes.h"

namespace lowbit::kernels {

bool conv_direct_available();
void conv2d_forward_direct(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y);
void conv2d_backward_data_direct(const Conv2dGeometry& g, const float* dy, const float* w, float* dx);
void conv2d_backward_weight_direct(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* db);

}  // namespace lowbit::kernels
