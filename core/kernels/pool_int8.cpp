#include "core/kernels/pool_int8.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/kernels/cpu.h"
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

void check(const ShortcutGeometry& g, const char* op) {
  LOWBIT_CHECK(g.N >= 0 && g.H >= 1 && g.W >= 1 && g.C >= 1 && g.stride_h >= 1 && g.stride_w >= 1 && g.pad_lo >= 0 &&
                   g.pad_hi >= 0,
               op, ": invalid geometry (N ", g.N, ", H ", g.H, ", W ", g.W, ", C ", g.C, ", stride ", g.stride_h, "x",
               g.stride_w, ", channel padding ", g.pad_lo, "+", g.pad_hi, ")");
}

// Co <= 64: per output pixel the input pixel's C codes loaded at lanes [pad_lo, pad_lo + C) over a
// vector of zero_point (the load starts pad_lo bytes before the pixel; masked-off bytes are never
// read), and Co bytes stored.
LOWBIT_AVX512 void shortcut_avx512(const ShortcutGeometry& g, uint8_t zero_point, const uint8_t* x, uint8_t* y) {
  const int64_t P = g.P(), Q = g.Q(), C = g.C, Co = g.Co();
  const __m512i zp = _mm512_set1_epi8(char(zero_point));
  const __mmask64 channels = ((C == 64 ? ~uint64_t(0) : (uint64_t(1) << C) - 1)) << g.pad_lo;
  const __mmask64 out = Co == 64 ? ~uint64_t(0) : (uint64_t(1) << Co) - 1;
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t p = 0; p < P; ++p) {
      const uint8_t* src = x + ((n * g.H + p * g.stride_h) * g.W) * C;
      uint8_t* dst = y + ((n * P + p) * Q) * Co;
      for (int64_t q = 0; q < Q; ++q) {
        const auto at = reinterpret_cast<uintptr_t>(src + q * g.stride_w * C) - uintptr_t(g.pad_lo);
        const __m512i v = _mm512_mask_loadu_epi8(zp, channels, reinterpret_cast<const void*>(at));
        _mm512_mask_storeu_epi8(dst + q * Co, out, v);
      }
    }
}

}  // namespace

void shortcut_pad_u8(const ShortcutGeometry& g, uint8_t zero_point, const uint8_t* x, uint8_t* y) {
  check(g, "shortcut_pad_u8");
  if (avx512_enabled() && g.Co() <= 64) return shortcut_avx512(g, zero_point, x, y);
  shortcut_pad_u8_ref(g, zero_point, x, y);
}

void shortcut_pad_u8_ref(const ShortcutGeometry& g, uint8_t zero_point, const uint8_t* x, uint8_t* y) {
  check(g, "shortcut_pad_u8_ref");
  const int64_t P = g.P(), Q = g.Q(), C = g.C, Co = g.Co();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q) {
        uint8_t* d = y + ((n * P + p) * Q + q) * Co;
        const uint8_t* s = x + ((n * g.H + p * g.stride_h) * g.W + q * g.stride_w) * C;
        for (int64_t c = 0; c < Co; ++c) d[c] = c >= g.pad_lo && c < g.pad_lo + C ? s[c - g.pad_lo] : zero_point;
      }
}

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
