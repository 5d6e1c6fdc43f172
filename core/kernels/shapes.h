// Shape structs shared by the convolution, pooling and normalization kernels.
//
// Shape letters, declared once for the whole code base:
//   N batch, C input channels, H x W input height x width,
//   K output channels, R x S kernel height x width, P x Q output height x width.
// Activations are NHWC in memory (channels innermost: x[((n*H + h)*W + w)*C + c]).
// Convolution weights are KRSC in memory (w[((k*R + r)*S + s)*Cg + c], Cg = C / groups),
// i.e. PyTorch's [K, C/groups, R, S] weight in channels-last order.
#pragma once

#include <cstdint>

namespace lowbit::kernels {

// ceil(a / b) for b > 0 and any sign of a (C++ division truncates toward zero, which is already
// the ceiling for negative quotients).
constexpr int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b > 0 ? 1 : 0); }

struct Conv2dGeometry {
  int64_t N = 1, C = 1, H = 1, W = 1;  // input
  int64_t K = 1, R = 1, S = 1;         // output channels, kernel size
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dil_h = 1, dil_w = 1;
  int64_t groups = 1;

  int64_t P() const { return (H + 2 * pad_h - dil_h * (R - 1) - 1) / stride_h + 1; }
  int64_t Q() const { return (W + 2 * pad_w - dil_w * (S - 1) - 1) / stride_w + 1; }
  int64_t C_per_group() const { return C / groups; }
  int64_t K_per_group() const { return K / groups; }
  // Multiply-accumulates of the forward pass (one MAC = 2 flops).
  int64_t macs() const { return N * P() * Q() * K * R * S * C_per_group(); }
};

struct Pool2dGeometry {
  int64_t N = 1, C = 1, H = 1, W = 1;
  int64_t R = 1, S = 1;  // window
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  bool ceil_mode = false;

  int64_t P() const { return out_size(H, R, stride_h, pad_h); }
  int64_t Q() const { return out_size(W, S, stride_w, pad_w); }

 private:
  int64_t out_size(int64_t in, int64_t k, int64_t stride, int64_t pad) const {
    const int64_t span = in + 2 * pad - k;
    int64_t out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
    // PyTorch rule: the last window must start inside the input or the left padding.
    if (ceil_mode && (out - 1) * stride >= in + pad) --out;
    return out;
  }
};

}  // namespace lowbit::kernels
