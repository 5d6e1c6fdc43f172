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

// ResNet's "option A" shortcut on codes (deploy/model_file.h `shortcut`): x [N][H][W][C] ->
// y [N][P][Q][Co], y[n][p][q] = (pad_lo codes zero_point, x[n][p sh][q sw][0, C), pad_hi codes
// zero_point), Co = pad_lo + C + pad_hi, P = (H - 1) / sh + 1, Q = (W - 1) / sw + 1.
//   shortcut_pad_u8      on the calling thread; with AVX-512 and Co <= 64 one masked load (the
//                        channels, zero_point around them) and one masked store per pixel.
//   shortcut_pad_u8_ref  plain loops.
struct ShortcutGeometry {
  int64_t N = 0, H = 0, W = 0, C = 0, stride_h = 1, stride_w = 1, pad_lo = 0, pad_hi = 0;
  int64_t P() const { return (H - 1) / stride_h + 1; }
  int64_t Q() const { return (W - 1) / stride_w + 1; }
  int64_t Co() const { return pad_lo + C + pad_hi; }
};
void shortcut_pad_u8(const ShortcutGeometry& g, uint8_t zero_point, const uint8_t* x, uint8_t* y);
void shortcut_pad_u8_ref(const ShortcutGeometry& g, uint8_t zero_point, const uint8_t* x, uint8_t* y);

}  // namespace lowbit::kernels
