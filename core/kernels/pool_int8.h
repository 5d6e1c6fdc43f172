// Max pooling of uint8 activation codes (integer inference, deploy/engine.h), NHWC.
//
// Geometry: Pool2dGeometry (core/kernels/shapes.h); x [N][H][W][C] uint8, y [N][P][Q][C] uint8,
// y = max over the window's inputs; padded positions never win (PyTorch's -inf padding), so
// pad_h <= R/2 and pad_w <= S/2 are required (every window holds an input). Max pooling commutes
// with every monotone quantizer, so pooling codes equals pooling the real values and quantizing.
//
//   max_pool2d_u8      parallel over output rows (n, p), channels innermost (vectorized by the
//                      compiler); each output is written by one task.
//   max_pool2d_u8_ref  plain loops. Both are exact, so they agree bit for bit for any thread count.
// Both throw lowbit::Error for a geometry with non-positive sizes or padding beyond half the window.
#pragma once

#include <cstdint>

#include "core/kernels/shapes.h"

namespace lowbit::kernels {

void max_pool2d_u8(const Pool2dGeometry& g, const uint8_t* x, uint8_t* y);
void max_pool2d_u8_ref(const Pool2dGeometry& g, const uint8_t* x, uint8_t* y);

}  // namespace lowbit::kernels
