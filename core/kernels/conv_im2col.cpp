// im2col + GEMM convolution (contract: core/kernels/conv_im2col.h).
#include "core/kernels/conv_im2col.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/kernels/gemm.h"
#include "core/kernels/scratch.h"
#include "core/parallel.h"

namespace lowbit::kernels {
namespace {

// Images per chunk: cols of a chunk within ~16 MiB (at least one image).
int64_t chunk_images(const Conv2dGeometry& g) {
  const int64_t per_image = g.P() * g.Q() * g.R * g.S * g.C;
  return std::clamp<int64_t>((int64_t(4) << 20) / per_image, 1, g.N);
}

// cols[(n - n0) P Q + p Q + q][(r S + s) C + c] for images [n0, n1).
void im2col(const Conv2dGeometry& g, const float* x, int64_t n0, int64_t n1, float* cols) {
  const int64_t P = g.P(), Q = g.Q(), C = g.C, L = g.R * g.S * C;
  parallel_for(0, (n1 - n0) * P * Q, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t n = n0 + row / (P * Q), p = row / Q % P, q = row % Q;
      float* dst = cols + row * L;
      for (int64_t r = 0; r < g.R; ++r)
        for (int64_t s = 0; s < g.S; ++s, dst += C) {
          const int64_t ih = p * g.stride_h - g.pad_h + r * g.dil_h, iw = q * g.stride_w - g.pad_w + s * g.dil_w;
          if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W)
            std::memset(dst, 0, sizeof(float) * C);
          else
            std::memcpy(dst, x + ((n * g.H + ih) * g.W + iw) * C, sizeof(float) * C);
        }
    }
  });
}

// Calls fn(n0, n1, cols) for the chunks of images in order; cols holds the chunk's im2col rows when
// x is given, else it is a buffer of the same size for fn to fill.
template <class Fn>
void for_each_chunk(const Conv2dGeometry& g, const float* x, Fn&& fn) {
  const int64_t step = chunk_images(g);
  float* cols = thread_scratch(ScratchSlot::kIm2col, step * g.P() * g.Q() * g.R * g.S * g.C);
  for (int64_t n0 = 0; n0 < g.N; n0 += step) {
    const int64_t n1 = std::min(g.N, n0 + step);
    if (x) im2col(g, x, n0, n1, cols);
    fn(n0, n1, cols);
  }
}

}  // namespace

void conv2d_forward_im2col(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y) {
  const int64_t PQ = g.P() * g.Q(), L = g.R * g.S * g.C, K = g.K;
  for_each_chunk(g, x, [&](int64_t n0, int64_t n1, const float* cols) {
    GemmArgs<float> a;
    a.trans_b = true;
    a.M = (n1 - n0) * PQ, a.N = K, a.K = L;
    a.A = cols, a.lda = L;
    a.B = w, a.ldb = L;
    a.C = y + n0 * PQ * K, a.ldc = K;
    gemm(a);
  });
  if (b)
    parallel_for(0, g.N * PQ, 256, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i)
        for (int64_t k = 0; k < K; ++k) y[i * K + k] += b[k];
    });
}

void conv2d_backward_data_im2col(const Conv2dGeometry& g, const float* dy, const float* w, float* dx) {
  const int64_t P = g.P(), Q = g.Q(), PQ = P * Q, C = g.C, L = g.R * g.S * C, K = g.K;
  for_each_chunk(g, nullptr, [&](int64_t n0, int64_t n1, float* dcols) {
    GemmArgs<float> a;
    a.M = (n1 - n0) * PQ, a.N = L, a.K = K;
    a.A = dy + n0 * PQ * K, a.lda = K;
    a.B = w, a.ldb = L;
    a.C = dcols, a.ldc = L;
    gemm(a);
    // col2im, one image per task (its pixels receive in a fixed order).
    parallel_for(n0, n1, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t n = lo; n < hi; ++n) {
        float* img = dx + n * g.H * g.W * C;
        std::memset(img, 0, sizeof(float) * g.H * g.W * C);
        for (int64_t p = 0; p < P; ++p)
          for (int64_t q = 0; q < Q; ++q) {
            const float* src = dcols + ((n - n0) * PQ + p * Q + q) * L;
            for (int64_t r = 0; r < g.R; ++r)
              for (int64_t s = 0; s < g.S; ++s, src += C) {
                const int64_t ih = p * g.stride_h - g.pad_h + r * g.dil_h;
                const int64_t iw = q * g.stride_w - g.pad_w + s * g.dil_w;
                if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
                float* d = img + (ih * g.W + iw) * C;
                for (int64_t c = 0; c < C; ++c) d[c] += src[c];
              }
          }
      }
    });
  });
}

void conv2d_backward_weight_im2col(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* db) {
  const int64_t PQ = g.P() * g.Q(), L = g.R * g.S * g.C, K = g.K;
  for_each_chunk(g, x, [&](int64_t n0, int64_t n1, const float* cols) {
    GemmArgs<float> a;
    a.trans_a = true;
    a.M = K, a.N = L, a.K = (n1 - n0) * PQ;
    a.A = dy + n0 * PQ * K, a.lda = K;
    a.B = cols, a.ldb = L;
    a.beta = n0 == 0 ? 0.0f : 1.0f;
    a.C = dw, a.ldc = L;
    gemm(a);
  });
  if (db) {  // one ordered pass over dy's rows, accumulated in double
    std::vector<double> sum(K, 0.0);
    for (int64_t i = 0; i < g.N * PQ; ++i)
      for (int64_t k = 0; k < K; ++k) sum[k] += dy[i * K + k];
    for (int64_t k = 0; k < K; ++k) db[k] = static_cast<float>(sum[k]);
  }
}

}  // namespace lowbit::kernels
