// 2-D pooling over NHWC activations (PyTorch semantics, including ceil_mode).
//
// Geometry: Pool2dGeometry; x [N][H][W][C], y [N][P][Q][C]. Padding must not exceed half the
// window (pad_h <= R/2, pad_w <= S/2, as PyTorch requires), so every window holds an input.
//
//   max_pool2d_forward    y = max over the window's inputs (padding never wins). argmax (may be
//                         null) receives, per output element, the index h*W + w of the winner in
//                         its H*W plane. Ties keep the first in row-major window order; a NaN wins
//                         and propagates (a later NaN replaces it), as in PyTorch.
//   max_pool2d_backward   dx[n,h,w,c] = sum of dy over the outputs whose argmax is (h,w).
//                         Gather-style per input element, outputs summed in (p,q) order:
//                         race-free and deterministic; dx is overwritten.
//   avg_pool2d_forward    y = sum over the window's inputs / divisor, where divisor is the
//                         window size clipped to the padded input (count_include_pad) or the
//                         number of real inputs in it (!count_include_pad).
//   avg_pool2d_backward   dx = sum over covering windows of dy / divisor; dx is overwritten.
//   global_avg_pool_forward   [N][H][W][C] -> y [N][C], mean over H*W.
//   global_avg_pool_backward  dx[n,h,w,c] = dy[n,c] / (H*W).
//
// The fast versions use AVX-512 for float when available (portable otherwise and for double),
// in parallel over rows; every output is computed by one task, so results do not depend on the
// thread count. The `_ref` twins are plain loops (max pooling: bit-identical to the fast path).
#pragma once

#include <cstdint>

#include "core/kernels/shapes.h"

namespace lowbit::kernels {

void max_pool2d_forward(const Pool2dGeometry& g, const float* x, float* y, int32_t* argmax);
void max_pool2d_forward(const Pool2dGeometry& g, const double* x, double* y, int32_t* argmax);
void max_pool2d_backward(const Pool2dGeometry& g, const float* dy, const int32_t* argmax, float* dx);
void max_pool2d_backward(const Pool2dGeometry& g, const double* dy, const int32_t* argmax, double* dx);
void avg_pool2d_forward(const Pool2dGeometry& g, bool count_include_pad, const float* x, float* y);
void avg_pool2d_forward(const Pool2dGeometry& g, bool count_include_pad, const double* x, double* y);
void avg_pool2d_backward(const Pool2dGeometry& g, bool count_include_pad, const float* dy, float* dx);
void avg_pool2d_backward(const Pool2dGeometry& g, bool count_include_pad, const double* dy, double* dx);
void global_avg_pool_forward(int64_t N, int64_t H, int64_t W, int64_t C, const float* x, float* y);
void global_avg_pool_forward(int64_t N, int64_t H, int64_t W, int64_t C, const double* x, double* y);
void global_avg_pool_backward(int64_t N, int64_t H, int64_t W, int64_t C, const float* dy, float* dx);
void global_avg_pool_backward(int64_t N, int64_t H, int64_t W, int64_t C, const double* dy, double* dx);

void max_pool2d_forward_ref(const Pool2dGeometry& g, const float* x, float* y, int32_t* argmax);
void max_pool2d_forward_ref(const Pool2dGeometry& g, const double* x, double* y, int32_t* argmax);
void max_pool2d_backward_ref(const Pool2dGeometry& g, const float* dy, const int32_t* argmax, float* dx);
void max_pool2d_backward_ref(const Pool2dGeometry& g, const double* dy, const int32_t* argmax, double* dx);
void avg_pool2d_forward_ref(const Pool2dGeometry& g, bool count_include_pad, const float* x, float* y);
void avg_pool2d_forward_ref(const Pool2dGeometry& g, bool count_include_pad, const double* x, double* y);
void avg_pool2d_backward_ref(const Pool2dGeometry& g, bool count_include_pad, const float* dy, float* dx);
void avg_pool2d_backward_ref(const Pool2dGeometry& g, bool count_include_pad, const double* dy, double* dx);
void global_avg_pool_forward_ref(int64_t N, int64_t H, int64_t W, int64_t C, const float* x, float* y);
void global_avg_pool_forward_ref(int64_t N, int64_t H, int64_t W, int64_t C, const double* x, double* y);
void global_avg_pool_backward_ref(int64_t N, int64_t H, int64_t W, int64_t C, const float* dy, float* dx);
void global_avg_pool_backward_ref(int64_t N, int64_t H, int64_t W, int64_t C, const double* dy, double* dx);

}  // namespace lowbit::kernels
