#include "core/kernels/pool_int8.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/parallel.h"

namespace lowbit::kernels {
namespace {

void check(const Pool2dGeometry& g, const char* op) {
  LOWBIT_CHECK(g.N >= 1 && g.C >= 1 && g.H >= 1 && g.W >= 1 && g.R >= 1 && g.S >= 1 && g.stride_h >= 1 &&
                   g.stride_w >= 1 && g.pad_h >= 0 && g.pad_w >= 0 && 2 * g.pad_h <= g.R && 2 * g.pad_w <= g.S &&
                   g.P() >= 1 && g.Q() >= 1,
               op, ": invalid geometry (N ", g.N, ", C ", g.C, ", H ", g.H, ", W ", g.W, ", window ", g.R, "x", g.S,
               ", stride ", g.stride_h, "x", g.stride_w, ", padding ", g.pad_h, "x", g.pad_w, ")");
}

}  // namespace

void max_pool2d_u8(const Pool2dGeometry& g, const uint8_t* x, uint8_t* y) {
  check(g, "max_pool2d_u8");
  const int64_t P = g.P(), Q = g.Q(), C = g.C;
  parallel_for(0, g.N * P, 4, [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t n = row / P, p = row % P;
      const int64_t h0 = std::max<int64_t>(p * g.stride_h - g.pad_h, 0);
      const int64_t h1 = std::min<int64_t>(p * g.stride_h - g.pad_h + g.R, g.H);
      for (int64_t q = 0; q < Q; ++q) {
        const int64_t w0 = std::max<int64_t>(q * g.stride_w - g.pad_w, 0);
        const int64_t w1 = std::min<int64_t>(q * g.stride_w - g.pad_w + g.S, g.W);
        uint8_t* out = y + ((n * P + p) * Q + q) * C;
        std::memset(out, 0, size_t(C));
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) {
            const uint8_t* in = x + ((n * g.H + h) * g.W + w) * C;
            for (int64_t c = 0; c < C; ++c) out[c] = std::max(out[c], in[c]);
          }
      }
    }
  });
}

void max_pool2d_u8_ref(const Pool2dGeometry& g, const uint8_t* x, uint8_t* y) {
  check(g, "max_pool2d_u8_ref");
  const int64_t P = g.P(), Q = g.Q();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q)
        for (int64_t c = 0; c < g.C; ++c) {
          int best = -1;
          for (int64_t r = 0; r < g.R; ++r)
            for (int64_t s = 0; s < g.S; ++s) {
              const int64_t h = p * g.stride_h - g.pad_h + r, w = q * g.stride_w - g.pad_w + s;
              if (h < 0 || h >= g.H || w < 0 || w >= g.W) continue;
              best = std::max<int>(best, x[((n * g.H + h) * g.W + w) * g.C + c]);
            }
          y[((n * P + p) * Q + q) * g.C + c] = uint8_t(best);
        }
}

}  // namespace lowbit::kernels
