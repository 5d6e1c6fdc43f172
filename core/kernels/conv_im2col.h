// Internal: convolution as im2col + GEMM, for layers on tiny images (behind core/kernels/conv.h).
// Float, NHWC activations, KRSC weights, groups 1, any kernel size, stride, padding and dilation.
//
// A row of `cols` is one output pixel's receptive field in (r, s, c) order, zeros where it
// overhangs the image, so with the weights as a K x (R S C) matrix:
//   forward          y [N P Q][K]     = cols [N P Q][R S C] w^T              (+ b)
//   backward_data    dcols            = dy [N P Q][K] w [K][R S C], then each row added back onto
//                                       the pixels it came from (col2im)
//   backward_weight  dw [K][R S C]    = dy^T cols,  db = sum of dy's rows
// The GEMMs are lowbit's (core/kernels/gemm.h). Images are processed in chunks of at most ~16 MiB
// of cols, in order (backward-weight accumulates dw over the chunks), so results are bit-identical
// for any thread count. Worth it where a pixel tile of the direct kernels is a whole, mostly padded
// image: VGG-11's 3x3 layers on 4x4 and 2x2 images with 256-512 channels.
#pragma once

#include "core/kernels/shapes.h"

namespace lowbit::kernels {

void conv2d_forward_im2col(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y);
void conv2d_backward_data_im2col(const Conv2dGeometry& g, const float* dy, const float* w, float* dx);
void conv2d_backward_weight_im2col(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* db);

}  // namespace lowbit::kernels
