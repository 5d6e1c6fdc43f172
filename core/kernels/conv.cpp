// Convolution entry points: the plain reference loops and the dispatch to the AVX-512 kernels.
#include "core/kernels/conv.h"

#include <cstring>
#include <stdexcept>

#include "core/kernels/conv_direct.h"
#include "core/kernels/conv_im2col.h"
#include "core/kernels/conv_winograd.h"

namespace lowbit::kernels {
namespace {

void check(const Conv2dGeometry& g) {
  if (g.N < 1 || g.C < 1 || g.H < 1 || g.W < 1 || g.K < 1 || g.R < 1 || g.S < 1 || g.stride_h < 1 || g.stride_w < 1 ||
      g.pad_h < 0 || g.pad_w < 0 || g.dil_h < 1 || g.dil_w < 1 || g.groups < 1 || g.C % g.groups != 0 ||
      g.K % g.groups != 0 || g.P() < 1 || g.Q() < 1)
    throw std::invalid_argument("conv2d: invalid geometry");
}

template <class T, class Acc>
void forward_ref(const Conv2dGeometry& g, const T* x, const T* w, const T* b, T* y) {
  check(g);
  const int64_t P = g.P(), Q = g.Q(), Cg = g.C_per_group(), Kg = g.K_per_group();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q)
        for (int64_t k = 0; k < g.K; ++k) {
          const int64_t c0 = (k / Kg) * Cg;
          Acc acc = b ? Acc(b[k]) : Acc(0);
          for (int64_t r = 0; r < g.R; ++r) {
            const int64_t ih = p * g.stride_h - g.pad_h + r * g.dil_h;
            if (ih < 0 || ih >= g.H) continue;
            for (int64_t s = 0; s < g.S; ++s) {
              const int64_t iw = q * g.stride_w - g.pad_w + s * g.dil_w;
              if (iw < 0 || iw >= g.W) continue;
              const T* xp = x + ((n * g.H + ih) * g.W + iw) * g.C + c0;
              const T* wp = w + ((k * g.R + r) * g.S + s) * Cg;
              for (int64_t c = 0; c < Cg; ++c) acc += Acc(xp[c]) * Acc(wp[c]);
            }
          }
          y[((n * P + p) * Q + q) * g.K + k] = T(acc);
        }
}

template <class T, class Acc>
void backward_data_ref(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  check(g);
  const int64_t P = g.P(), Q = g.Q(), Cg = g.C_per_group(), Kg = g.K_per_group();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t h = 0; h < g.H; ++h)
      for (int64_t wi = 0; wi < g.W; ++wi)
        for (int64_t c = 0; c < g.C; ++c) {
          const int64_t grp = c / Cg, cl = c % Cg;
          Acc acc = 0;
          for (int64_t r = 0; r < g.R; ++r) {
            const int64_t ph = h + g.pad_h - r * g.dil_h;
            if (ph < 0 || ph % g.stride_h != 0 || ph / g.stride_h >= P) continue;
            const int64_t p = ph / g.stride_h;
            for (int64_t s = 0; s < g.S; ++s) {
              const int64_t qw = wi + g.pad_w - s * g.dil_w;
              if (qw < 0 || qw % g.stride_w != 0 || qw / g.stride_w >= Q) continue;
              const int64_t q = qw / g.stride_w;
              for (int64_t kl = 0; kl < Kg; ++kl) {
                const int64_t k = grp * Kg + kl;
                acc += Acc(dy[((n * P + p) * Q + q) * g.K + k]) * Acc(w[((k * g.R + r) * g.S + s) * Cg + cl]);
              }
            }
          }
          dx[((n * g.H + h) * g.W + wi) * g.C + c] = T(acc);
        }
}

template <class T, class Acc>
void backward_weight_ref(const Conv2dGeometry& g, const T* x, const T* dy, T* dw, T* db) {
  check(g);
  const int64_t P = g.P(), Q = g.Q(), Cg = g.C_per_group(), Kg = g.K_per_group();
  for (int64_t k = 0; k < g.K; ++k) {
    const int64_t c0 = (k / Kg) * Cg;
    for (int64_t r = 0; r < g.R; ++r)
      for (int64_t s = 0; s < g.S; ++s)
        for (int64_t c = 0; c < Cg; ++c) {
          Acc acc = 0;
          for (int64_t n = 0; n < g.N; ++n)
            for (int64_t p = 0; p < P; ++p) {
              const int64_t ih = p * g.stride_h - g.pad_h + r * g.dil_h;
              if (ih < 0 || ih >= g.H) continue;
              for (int64_t q = 0; q < Q; ++q) {
                const int64_t iw = q * g.stride_w - g.pad_w + s * g.dil_w;
                if (iw < 0 || iw >= g.W) continue;
                acc += Acc(dy[((n * P + p) * Q + q) * g.K + k]) * Acc(x[((n * g.H + ih) * g.W + iw) * g.C + c0 + c]);
              }
            }
          dw[((k * g.R + r) * g.S + s) * Cg + c] = T(acc);
        }
  }
  if (db) {
    for (int64_t k = 0; k < g.K; ++k) {
      Acc acc = 0;
      for (int64_t i = 0; i < g.N * P * Q; ++i) acc += Acc(dy[i * g.K + k]);
      db[k] = T(acc);
    }
  }
}

// The algorithm for float data of a geometry, the same for all three passes; chosen by measurement
// (batch 128, 2 threads, docs/performance.md).
// - im2col + GEMM for layers whose output image has at most 16 pixels and whose receptive field is
//   long (>= 64 channels, a kernel larger than 1x1): VGG-11's 3x3 layers on 4x4 and 2x2 images, where
//   one pixel tile of the direct kernels is a whole, mostly padded image and Winograd's tiles are too
//   (0.15-0.7x the time of either).
// - Winograd F(4x4, 3x3) in tile blocks for 3x3 stride-1 layers with C x K <= 128 x 128 (all of
//   ResNet-20's and VGG-11's 64->128: 0.45-0.9x the direct kernels' time, faster than F(2x2));
//   F(2x2, 3x3) point by point for bigger ones (VGG-11's 128-256 channels on 8x8, AlexNet's 13x13
//   layers: 0.6-0.9x; their transformed weights do not stay in cache, so each is read once per GEMM).
//   Not on images smaller than 4x4.
// - The direct AVX-512 kernels otherwise; the reference loops without AVX-512.
struct ConvPlan {
  enum Algorithm { kReference, kDirect, kIm2col, kWinograd } algorithm = kReference;
  int m = 0;  // Winograd tile size
  WinogradOrder order = WinogradOrder::kTileBlocks;
};

ConvPlan plan(const Conv2dGeometry& g) {
  check(g);
  if (!conv_direct_available()) return {};
  if (g.groups == 1 && g.R * g.S > 1 && g.C >= 64 && g.P() * g.Q() <= 16) return {ConvPlan::kIm2col};
  if (winograd_applicable(g) && g.P() >= 4 && g.Q() >= 4) {
    if (g.C * g.K <= 128 * 128) return {ConvPlan::kWinograd, 4, WinogradOrder::kTileBlocks};
    return {ConvPlan::kWinograd, 2, WinogradOrder::kPoints};
  }
  return {ConvPlan::kDirect};
}

}  // namespace

void conv2d_forward_ref(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y) {
  forward_ref<float, double>(g, x, w, b, y);
}
void conv2d_forward_ref(const Conv2dGeometry& g, const double* x, const double* w, const double* b, double* y) {
  forward_ref<double, long double>(g, x, w, b, y);
}
void conv2d_backward_data_ref(const Conv2dGeometry& g, const float* dy, const float* w, float* dx) {
  backward_data_ref<float, double>(g, dy, w, dx);
}
void conv2d_backward_data_ref(const Conv2dGeometry& g, const double* dy, const double* w, double* dx) {
  backward_data_ref<double, long double>(g, dy, w, dx);
}
void conv2d_backward_weight_ref(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* db) {
  backward_weight_ref<float, double>(g, x, dy, dw, db);
}
void conv2d_backward_weight_ref(const Conv2dGeometry& g, const double* x, const double* dy, double* dw, double* db) {
  backward_weight_ref<double, long double>(g, x, dy, dw, db);
}

const char* conv2d_algorithm(const Conv2dGeometry& g) {
  const ConvPlan p = plan(g);
  switch (p.algorithm) {
    case ConvPlan::kIm2col: return "im2col";
    case ConvPlan::kWinograd: return p.m == 4 ? "wino4x4" : "wino2x2";
    case ConvPlan::kDirect: return "direct";
    case ConvPlan::kReference: break;
  }
  return "reference";
}

void conv2d_forward(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y) {
  const ConvPlan p = plan(g);
  switch (p.algorithm) {
    case ConvPlan::kIm2col: return conv2d_forward_im2col(g, x, w, b, y);
    case ConvPlan::kWinograd: return conv2d_forward_winograd(g, x, w, b, y, p.m, p.order);
    case ConvPlan::kDirect: return conv2d_forward_direct(g, x, w, b, y);
    case ConvPlan::kReference: return conv2d_forward_ref(g, x, w, b, y);
  }
}
int64_t conv2d_prepared_weight_size(const Conv2dGeometry& g) {
  const ConvPlan p = plan(g);
  if (p.algorithm == ConvPlan::kWinograd) return winograd_weight_size(g, p.m);
  return g.K * g.R * g.S * g.C_per_group();
}
void conv2d_prepare_weight(const Conv2dGeometry& g, const float* w, float* wp) {
  const ConvPlan p = plan(g);
  if (p.algorithm == ConvPlan::kWinograd) return winograd_transform_weights(g, w, p.m, wp);
  std::memcpy(wp, w, sizeof(float) * g.K * g.R * g.S * g.C_per_group());
}
void conv2d_forward_prepared(const Conv2dGeometry& g, const float* x, const float* wp, const float* b, float* y) {
  const ConvPlan p = plan(g);
  if (p.algorithm == ConvPlan::kWinograd) return conv2d_forward_winograd_transformed(g, x, wp, b, y, p.m, p.order);
  conv2d_forward(g, x, wp, b, y);
}

void conv2d_forward(const Conv2dGeometry& g, const double* x, const double* w, const double* b, double* y) {
  conv2d_forward_ref(g, x, w, b, y);
}
void conv2d_backward_data(const Conv2dGeometry& g, const float* dy, const float* w, float* dx) {
  const ConvPlan p = plan(g);
  switch (p.algorithm) {
    case ConvPlan::kIm2col: return conv2d_backward_data_im2col(g, dy, w, dx);
    case ConvPlan::kWinograd: return conv2d_backward_data_winograd(g, dy, w, dx, p.m, p.order);
    case ConvPlan::kDirect: return conv2d_backward_data_direct(g, dy, w, dx);
    case ConvPlan::kReference: return conv2d_backward_data_ref(g, dy, w, dx);
  }
}
void conv2d_backward_data(const Conv2dGeometry& g, const double* dy, const double* w, double* dx) {
  conv2d_backward_data_ref(g, dy, w, dx);
}
void conv2d_backward_weight(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* db) {
  const ConvPlan p = plan(g);
  switch (p.algorithm) {
    case ConvPlan::kIm2col: return conv2d_backward_weight_im2col(g, x, dy, dw, db);
    case ConvPlan::kWinograd: return conv2d_backward_weight_winograd(g, x, dy, dw, db, p.m, p.order);
    case ConvPlan::kDirect: return conv2d_backward_weight_direct(g, x, dy, dw, db);
    case ConvPlan::kReference: return conv2d_backward_weight_ref(g, x, dy, dw, db);
  }
}
void conv2d_backward_weight(const Conv2dGeometry& g, const double* x, const double* dy, double* dw, double* db) {
  conv2d_backward_weight_ref(g, x, dy, dw, db);
}

}  // namespace lowbit::kernels
