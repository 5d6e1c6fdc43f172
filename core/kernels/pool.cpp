// Pooling kernels. Forward passes walk output rows (n, p), backward passes walk input rows (n, h)
// and gather from the outputs whose windows cover each input, so every element is written by one
// task and sums run in a fixed (p, q) order.
#include "core/kernels/pool.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "core/kernels/cpu.h"
#include "core/parallel.h"

namespace lowbit::kernels {
namespace {

template <class T>
bool use_avx512() {
  return std::is_same_v<T, float> && avx512_enabled();
}

void check_geometry(const Pool2dGeometry& g, const char* op) {
  LOWBIT_CHECK(g.N >= 0 && g.C >= 1 && g.H >= 1 && g.W >= 1 && g.R >= 1 && g.S >= 1 && g.stride_h >= 1 &&
                   g.stride_w >= 1 && g.pad_h >= 0 && g.pad_w >= 0,
               op, ": invalid geometry");
  LOWBIT_CHECK(g.pad_h <= g.R / 2 && g.pad_w <= g.S / 2, op, ": padding must be at most half the window, got pad ",
               g.pad_h, "x", g.pad_w, " for window ", g.R, "x", g.S);
  LOWBIT_CHECK(g.P() >= 1 && g.Q() >= 1, op, ": empty output (P=", g.P(), ", Q=", g.Q(), ")");
  LOWBIT_CHECK(g.H * g.W <= std::numeric_limits<int32_t>::max(), op, ": H*W does not fit the int32 argmax");
}

// One window along one dimension: real inputs [lo, hi) and its extent clipped to the padded input.
struct Span {
  int64_t lo, hi, padded;
};

Span window(int64_t o, int64_t in, int64_t k, int64_t stride, int64_t pad) {
  const int64_t start = o * stride - pad;
  const int64_t end = std::min(start + k, in + pad);
  return {std::max<int64_t>(start, 0), std::min(end, in), end - start};
}

// Outputs [lo, hi) whose windows cover input index i.
Span covering(int64_t i, int64_t out, int64_t k, int64_t stride, int64_t pad) {
  const int64_t lo = std::max<int64_t>(0, ceil_div(i + pad - k + 1, stride));
  const int64_t hi = std::min(out, (i + pad) / stride + 1);
  return {lo, std::max(lo, hi), 0};
}

Span hwin(const Pool2dGeometry& g, int64_t p) { return window(p, g.H, g.R, g.stride_h, g.pad_h); }
Span wwin(const Pool2dGeometry& g, int64_t q) { return window(q, g.W, g.S, g.stride_w, g.pad_w); }

// 1 / divisor for every output position of one image.
template <class T>
std::vector<T> inverse_divisors(const Pool2dGeometry& g, bool count_include_pad) {
  const int64_t P = g.P(), Q = g.Q();
  std::vector<T> inv(static_cast<size_t>(P * Q));
  for (int64_t p = 0; p < P; ++p) {
    const Span sh = hwin(g, p);
    for (int64_t q = 0; q < Q; ++q) {
      const Span sw = wwin(g, q);
      const int64_t div = count_include_pad ? sh.padded * sw.padded : (sh.hi - sh.lo) * (sw.hi - sw.lo);
      inv[static_cast<size_t>(p * Q + q)] = T(1.0 / double(div));
    }
  }
  return inv;
}

int64_t fwd_grain(const Pool2dGeometry& g) {
  return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, g.Q() * g.C * g.R * g.S));
}
int64_t bwd_grain(const Pool2dGeometry& g) {
  const int64_t cover = std::max<int64_t>(1, (g.R * g.S) / (g.stride_h * g.stride_w));
  return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, g.W * g.C * cover));
}

// ---------------------------------------------------------------------------------------------
// Portable row kernels (any T), inner loops over channels. `x`/`dy`/`idx` point at image n.
// ---------------------------------------------------------------------------------------------

template <class T>
void max_fwd_row_generic(const Pool2dGeometry& g, const T* x, int64_t p, T* y, int32_t* idx) {
  const int64_t C = g.C;
  const Span sh = hwin(g, p);
  for (int64_t q = 0; q < g.Q(); ++q) {
    const Span sw = wwin(g, q);
    T* yq = y + q * C;
    int32_t* iq = idx + q * C;
    std::fill(yq, yq + C, -std::numeric_limits<T>::infinity());
    std::fill(iq, iq + C, int32_t(sh.lo * g.W + sw.lo));
    for (int64_t h = sh.lo; h < sh.hi; ++h)
      for (int64_t w = sw.lo; w < sw.hi; ++w) {
        const T* xp = x + (h * g.W + w) * C;
        const int32_t pos = int32_t(h * g.W + w);
        for (int64_t c = 0; c < C; ++c) {
          const T v = xp[c];
          if (v > yq[c] || std::isnan(v)) {
            yq[c] = v;
            iq[c] = pos;
          }
        }
      }
  }
}

template <class T>
void max_bwd_row_generic(const Pool2dGeometry& g, const T* dy, const int32_t* idx, int64_t h, T* dx) {
  const int64_t C = g.C, Q = g.Q();
  const Span cp = covering(h, g.P(), g.R, g.stride_h, g.pad_h);
  for (int64_t w = 0; w < g.W; ++w) {
    T* dxw = dx + w * C;
    std::fill(dxw, dxw + C, T(0));
    const Span cq = covering(w, Q, g.S, g.stride_w, g.pad_w);
    const int32_t pos = int32_t(h * g.W + w);
    for (int64_t p = cp.lo; p < cp.hi; ++p)
      for (int64_t q = cq.lo; q < cq.hi; ++q) {
        const T* dp = dy + (p * Q + q) * C;
        const int32_t* ip = idx + (p * Q + q) * C;
        for (int64_t c = 0; c < C; ++c)
          if (ip[c] == pos) dxw[c] += dp[c];
      }
  }
}

template <class T>
void avg_fwd_row_generic(const Pool2dGeometry& g, const T* x, int64_t p, const T* inv, T* y) {
  const int64_t C = g.C;
  const Span sh = hwin(g, p);
  for (int64_t q = 0; q < g.Q(); ++q) {
    const Span sw = wwin(g, q);
    T* yq = y + q * C;
    std::fill(yq, yq + C, T(0));
    for (int64_t h = sh.lo; h < sh.hi; ++h)
      for (int64_t w = sw.lo; w < sw.hi; ++w) {
        const T* xp = x + (h * g.W + w) * C;
        for (int64_t c = 0; c < C; ++c) yq[c] += xp[c];
      }
    const T s = inv[p * g.Q() + q];
    for (int64_t c = 0; c < C; ++c) yq[c] *= s;
  }
}

template <class T>
void avg_bwd_row_generic(const Pool2dGeometry& g, const T* dy, int64_t h, const T* inv, T* dx) {
  const int64_t C = g.C, Q = g.Q();
  const Span cp = covering(h, g.P(), g.R, g.stride_h, g.pad_h);
  for (int64_t w = 0; w < g.W; ++w) {
    T* dxw = dx + w * C;
    std::fill(dxw, dxw + C, T(0));
    const Span cq = covering(w, Q, g.S, g.stride_w, g.pad_w);
    for (int64_t p = cp.lo; p < cp.hi; ++p)
      for (int64_t q = cq.lo; q < cq.hi; ++q) {
        const T* dp = dy + (p * Q + q) * C;
        const T s = inv[p * Q + q];
        for (int64_t c = 0; c < C; ++c) dxw[c] += dp[c] * s;
      }
  }
}

// ---------------------------------------------------------------------------------------------
// AVX-512 float row kernels: 16 channels per vector, masked tails.
// ---------------------------------------------------------------------------------------------

LOWBIT_AVX512 inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
}

LOWBIT_AVX512 void max_fwd_row_avx512(const Pool2dGeometry& g, const float* x, int64_t p, float* y, int32_t* idx) {
  const int64_t C = g.C;
  const Span sh = hwin(g, p);
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t q = 0; q < g.Q(); ++q) {
    const Span sw = wwin(g, q);
    const __m512i first = _mm512_set1_epi32(int32_t(sh.lo * g.W + sw.lo));
    for (int64_t cb = 0; cb < C; cb += 16) {
      const __mmask16 m = tail_mask(C - cb);
      __m512 best = neg_inf;
      __m512i arg = first;
      for (int64_t h = sh.lo; h < sh.hi; ++h)
        for (int64_t w = sw.lo; w < sw.hi; ++w) {
          const __m512 v = _mm512_maskz_loadu_ps(m, x + (h * g.W + w) * C + cb);
          const __mmask16 win = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
          best = _mm512_mask_mov_ps(best, win, v);
          arg = _mm512_mask_mov_epi32(arg, win, _mm512_set1_epi32(int32_t(h * g.W + w)));
        }
      _mm512_mask_storeu_ps(y + q * C + cb, m, best);
      if (idx) _mm512_mask_storeu_epi32(idx + q * C + cb, m, arg);
    }
  }
}

LOWBIT_AVX512 void max_bwd_row_avx512(const Pool2dGeometry& g, const float* dy, const int32_t* idx, int64_t h,
                                      float* dx) {
  const int64_t C = g.C, Q = g.Q();
  const Span cp = covering(h, g.P(), g.R, g.stride_h, g.pad_h);
  for (int64_t w = 0; w < g.W; ++w) {
    const Span cq = covering(w, Q, g.S, g.stride_w, g.pad_w);
    const __m512i pos = _mm512_set1_epi32(int32_t(h * g.W + w));
    for (int64_t cb = 0; cb < C; cb += 16) {
      const __mmask16 m = tail_mask(C - cb);
      __m512 acc = _mm512_setzero_ps();
      for (int64_t p = cp.lo; p < cp.hi; ++p)
        for (int64_t q = cq.lo; q < cq.hi; ++q) {
          const int64_t off = (p * Q + q) * C + cb;
          const __mmask16 hit = _mm512_mask_cmpeq_epi32_mask(m, _mm512_maskz_loadu_epi32(m, idx + off), pos);
          acc = _mm512_mask_add_ps(acc, hit, acc, _mm512_maskz_loadu_ps(hit, dy + off));
        }
      _mm512_mask_storeu_ps(dx + w * C + cb, m, acc);
    }
  }
}

LOWBIT_AVX512 void avg_fwd_row_avx512(const Pool2dGeometry& g, const float* x, int64_t p, const float* inv, float* y) {
  const int64_t C = g.C;
  const Span sh = hwin(g, p);
  for (int64_t q = 0; q < g.Q(); ++q) {
    const Span sw = wwin(g, q);
    const __m512 s = _mm512_set1_ps(inv[p * g.Q() + q]);
    for (int64_t cb = 0; cb < C; cb += 16) {
      const __mmask16 m = tail_mask(C - cb);
      __m512 acc = _mm512_setzero_ps();
      for (int64_t h = sh.lo; h < sh.hi; ++h)
        for (int64_t w = sw.lo; w < sw.hi; ++w)
          acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, x + (h * g.W + w) * C + cb));
      _mm512_mask_storeu_ps(y + q * C + cb, m, _mm512_mul_ps(acc, s));
    }
  }
}

LOWBIT_AVX512 void avg_bwd_row_avx512(const Pool2dGeometry& g, const float* dy, int64_t h, const float* inv,
                                      float* dx) {
  const int64_t C = g.C, Q = g.Q();
  const Span cp = covering(h, g.P(), g.R, g.stride_h, g.pad_h);
  for (int64_t w = 0; w < g.W; ++w) {
    const Span cq = covering(w, Q, g.S, g.stride_w, g.pad_w);
    for (int64_t cb = 0; cb < C; cb += 16) {
      const __mmask16 m = tail_mask(C - cb);
      __m512 acc = _mm512_setzero_ps();
      for (int64_t p = cp.lo; p < cp.hi; ++p)
        for (int64_t q = cq.lo; q < cq.hi; ++q)
          acc =
              _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, dy + (p * Q + q) * C + cb), _mm512_set1_ps(inv[p * Q + q]), acc);
      _mm512_mask_storeu_ps(dx + w * C + cb, m, acc);
    }
  }
}

// Channels [c0, c1) of one image: y = mean over the HW pixels.
LOWBIT_AVX512 void global_avg_avx512(int64_t HW, int64_t C, const float* x, int64_t c0, int64_t c1, float inv,
                                     float* y) {
  for (int64_t cb = c0; cb < c1; cb += 16) {
    const __mmask16 m = tail_mask(c1 - cb);
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= HW; i += 2) {
      a0 = _mm512_add_ps(a0, _mm512_maskz_loadu_ps(m, x + i * C + cb));
      a1 = _mm512_add_ps(a1, _mm512_maskz_loadu_ps(m, x + (i + 1) * C + cb));
    }
    if (i < HW) a0 = _mm512_add_ps(a0, _mm512_maskz_loadu_ps(m, x + i * C + cb));
    _mm512_mask_storeu_ps(y + cb, m, _mm512_mul_ps(_mm512_add_ps(a0, a1), _mm512_set1_ps(inv)));
  }
}

template <class T>
void global_avg_generic(int64_t HW, int64_t C, const T* x, int64_t c0, int64_t c1, T inv, T* y) {
  for (int64_t c = c0; c < c1; ++c) y[c] = T(0);
  for (int64_t i = 0; i < HW; ++i)
    for (int64_t c = c0; c < c1; ++c) y[c] += x[i * C + c];
  for (int64_t c = c0; c < c1; ++c) y[c] *= inv;
}

// ---------------------------------------------------------------------------------------------
// Drivers
// ---------------------------------------------------------------------------------------------

template <class T>
void max_forward_impl(const Pool2dGeometry& g, const T* x, T* y, int32_t* argmax) {
  check_geometry(g, "max_pool2d_forward");
  const int64_t P = g.P(), Q = g.Q(), C = g.C;
  const bool simd = use_avx512<T>();
  parallel_for(0, g.N * P, fwd_grain(g), [&](int64_t lo, int64_t hi) {
    std::vector<int32_t> scratch(argmax ? 0 : static_cast<size_t>(Q * C));
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t n = row / P, p = row % P;
      const T* ximg = x + n * g.H * g.W * C;
      int32_t* irow = argmax ? argmax + row * Q * C : nullptr;
      if constexpr (std::is_same_v<T, float>) {
        if (simd) {
          max_fwd_row_avx512(g, ximg, p, y + row * Q * C, irow);
          continue;
        }
      }
      max_fwd_row_generic(g, ximg, p, y + row * Q * C, irow ? irow : scratch.data());
    }
  });
}

template <class T>
void max_backward_impl(const Pool2dGeometry& g, const T* dy, const int32_t* argmax, T* dx) {
  check_geometry(g, "max_pool2d_backward");
  const int64_t PQC = g.P() * g.Q() * g.C, WC = g.W * g.C;
  const bool simd = use_avx512<T>();
  parallel_for(0, g.N * g.H, bwd_grain(g), [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t n = row / g.H, h = row % g.H;
      if constexpr (std::is_same_v<T, float>) {
        if (simd) {
          max_bwd_row_avx512(g, dy + n * PQC, argmax + n * PQC, h, dx + row * WC);
          continue;
        }
      }
      max_bwd_row_generic(g, dy + n * PQC, argmax + n * PQC, h, dx + row * WC);
    }
  });
}

template <class T>
void avg_forward_impl(const Pool2dGeometry& g, bool count_include_pad, const T* x, T* y) {
  check_geometry(g, "avg_pool2d_forward");
  const int64_t P = g.P(), QC = g.Q() * g.C, HWC = g.H * g.W * g.C;
  const std::vector<T> inv = inverse_divisors<T>(g, count_include_pad);
  const bool simd = use_avx512<T>();
  parallel_for(0, g.N * P, fwd_grain(g), [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t n = row / P, p = row % P;
      if constexpr (std::is_same_v<T, float>) {
        if (simd) {
          avg_fwd_row_avx512(g, x + n * HWC, p, inv.data(), y + row * QC);
          continue;
        }
      }
      avg_fwd_row_generic(g, x + n * HWC, p, inv.data(), y + row * QC);
    }
  });
}

template <class T>
void avg_backward_impl(const Pool2dGeometry& g, bool count_include_pad, const T* dy, T* dx) {
  check_geometry(g, "avg_pool2d_backward");
  const int64_t PQC = g.P() * g.Q() * g.C, WC = g.W * g.C;
  const std::vector<T> inv = inverse_divisors<T>(g, count_include_pad);
  const bool simd = use_avx512<T>();
  parallel_for(0, g.N * g.H, bwd_grain(g), [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t n = row / g.H, h = row % g.H;
      if constexpr (std::is_same_v<T, float>) {
        if (simd) {
          avg_bwd_row_avx512(g, dy + n * PQC, h, inv.data(), dx + row * WC);
          continue;
        }
      }
      avg_bwd_row_generic(g, dy + n * PQC, h, inv.data(), dx + row * WC);
    }
  });
}

void check_global(int64_t N, int64_t H, int64_t W, int64_t C, const char* op) {
  LOWBIT_CHECK(N >= 0 && H >= 1 && W >= 1 && C >= 1, op, ": invalid shape N=", N, " H=", H, " W=", W, " C=", C);
}

template <class T>
void global_forward_impl(int64_t N, int64_t H, int64_t W, int64_t C, const T* x, T* y) {
  check_global(N, H, W, C, "global_avg_pool_forward");
  const int64_t HW = H * W, block = 64, blocks = (C + block - 1) / block;
  const T inv = T(1.0 / double(HW));
  const bool simd = use_avx512<T>();
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / (HW * std::min(C, block)));
  parallel_for(0, N * blocks, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t n = t / blocks, c0 = (t % blocks) * block, c1 = std::min(C, c0 + block);
      if constexpr (std::is_same_v<T, float>) {
        if (simd) {
          global_avg_avx512(HW, C, x + n * HW * C, c0, c1, inv, y + n * C);
          continue;
        }
      }
      global_avg_generic(HW, C, x + n * HW * C, c0, c1, inv, y + n * C);
    }
  });
}

template <class T>
void global_backward_impl(int64_t N, int64_t H, int64_t W, int64_t C, const T* dy, T* dx) {
  check_global(N, H, W, C, "global_avg_pool_backward");
  const int64_t HW = H * W;
  const T inv = T(1.0 / double(HW));
  parallel_for(0, N * HW, std::max<int64_t>(1, (int64_t(1) << 16) / C), [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const T* d = dy + (row / HW) * C;
      T* out = dx + row * C;
      for (int64_t c = 0; c < C; ++c) out[c] = d[c] * inv;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// References: PyTorch's per-output loops, sums in double (long double for double).
// ---------------------------------------------------------------------------------------------

template <class T>
using RefAcc = std::conditional_t<std::is_same_v<T, float>, double, long double>;

template <class T>
void max_forward_ref_impl(const Pool2dGeometry& g, const T* x, T* y, int32_t* argmax) {
  check_geometry(g, "max_pool2d_forward_ref");
  const int64_t P = g.P(), Q = g.Q();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q)
        for (int64_t c = 0; c < g.C; ++c) {
          const int64_t h0 = std::max<int64_t>(p * g.stride_h - g.pad_h, 0);
          const int64_t h1 = std::min(p * g.stride_h - g.pad_h + g.R, g.H);
          const int64_t w0 = std::max<int64_t>(q * g.stride_w - g.pad_w, 0);
          const int64_t w1 = std::min(q * g.stride_w - g.pad_w + g.S, g.W);
          T best = -std::numeric_limits<T>::infinity();
          int64_t arg = h0 * g.W + w0;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) {
              const T v = x[((n * g.H + h) * g.W + w) * g.C + c];
              if (v > best || std::isnan(v)) {
                best = v;
                arg = h * g.W + w;
              }
            }
          const int64_t o = ((n * P + p) * Q + q) * g.C + c;
          y[o] = best;
          if (argmax) argmax[o] = int32_t(arg);
        }
}

template <class T>
void max_backward_ref_impl(const Pool2dGeometry& g, const T* dy, const int32_t* argmax, T* dx) {
  check_geometry(g, "max_pool2d_backward_ref");
  const int64_t P = g.P(), Q = g.Q();
  std::fill(dx, dx + g.N * g.H * g.W * g.C, T(0));
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q)
        for (int64_t c = 0; c < g.C; ++c) {
          const int64_t o = ((n * P + p) * Q + q) * g.C + c;
          dx[(n * g.H * g.W + argmax[o]) * g.C + c] += dy[o];
        }
}

// PyTorch's divisor: window clipped to the padded input, or its count of real inputs.
void avg_window(const Pool2dGeometry& g, bool count_include_pad, int64_t p, int64_t q, int64_t* h0, int64_t* h1,
                int64_t* w0, int64_t* w1, int64_t* divisor) {
  *h0 = p * g.stride_h - g.pad_h;
  *w0 = q * g.stride_w - g.pad_w;
  *h1 = std::min(*h0 + g.R, g.H + g.pad_h);
  *w1 = std::min(*w0 + g.S, g.W + g.pad_w);
  const int64_t pool_size = (*h1 - *h0) * (*w1 - *w0);
  *h0 = std::max<int64_t>(*h0, 0);
  *w0 = std::max<int64_t>(*w0, 0);
  *h1 = std::min(*h1, g.H);
  *w1 = std::min(*w1, g.W);
  *divisor = count_include_pad ? pool_size : (*h1 - *h0) * (*w1 - *w0);
}

template <class T>
void avg_forward_ref_impl(const Pool2dGeometry& g, bool count_include_pad, const T* x, T* y) {
  check_geometry(g, "avg_pool2d_forward_ref");
  const int64_t P = g.P(), Q = g.Q();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q) {
        int64_t h0, h1, w0, w1, div;
        avg_window(g, count_include_pad, p, q, &h0, &h1, &w0, &w1, &div);
        for (int64_t c = 0; c < g.C; ++c) {
          RefAcc<T> sum = 0;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) sum += x[((n * g.H + h) * g.W + w) * g.C + c];
          y[((n * P + p) * Q + q) * g.C + c] = T(sum / RefAcc<T>(div));
        }
      }
}

template <class T>
void avg_backward_ref_impl(const Pool2dGeometry& g, bool count_include_pad, const T* dy, T* dx) {
  check_geometry(g, "avg_pool2d_backward_ref");
  const int64_t P = g.P(), Q = g.Q();
  std::vector<RefAcc<T>> acc(static_cast<size_t>(g.N * g.H * g.W * g.C), 0);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q) {
        int64_t h0, h1, w0, w1, div;
        avg_window(g, count_include_pad, p, q, &h0, &h1, &w0, &w1, &div);
        for (int64_t c = 0; c < g.C; ++c) {
          const RefAcc<T> share = RefAcc<T>(dy[((n * P + p) * Q + q) * g.C + c]) / RefAcc<T>(div);
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) acc[static_cast<size_t>(((n * g.H + h) * g.W + w) * g.C + c)] += share;
        }
      }
  for (size_t i = 0; i < acc.size(); ++i) dx[i] = T(acc[i]);
}

template <class T>
void global_forward_ref_impl(int64_t N, int64_t H, int64_t W, int64_t C, const T* x, T* y) {
  check_global(N, H, W, C, "global_avg_pool_forward_ref");
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      RefAcc<T> sum = 0;
      for (int64_t i = 0; i < H * W; ++i) sum += x[(n * H * W + i) * C + c];
      y[n * C + c] = T(sum / RefAcc<T>(H * W));
    }
}

template <class T>
void global_backward_ref_impl(int64_t N, int64_t H, int64_t W, int64_t C, const T* dy, T* dx) {
  check_global(N, H, W, C, "global_avg_pool_backward_ref");
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < H * W; ++i)
      for (int64_t c = 0; c < C; ++c) dx[(n * H * W + i) * C + c] = T(RefAcc<T>(dy[n * C + c]) / RefAcc<T>(H * W));
}

}  // namespace

#define LOWBIT_POOL_DEFINE(T)                                                                         \
  void max_pool2d_forward(const Pool2dGeometry& g, const T* x, T* y, int32_t* argmax) {               \
    max_forward_impl(g, x, y, argmax);                                                                \
  }                                                                                                   \
  void max_pool2d_backward(const Pool2dGeometry& g, const T* dy, const int32_t* argmax, T* dx) {      \
    max_backward_impl(g, dy, argmax, dx);                                                             \
  }                                                                                                   \
  void avg_pool2d_forward(const Pool2dGeometry& g, bool count_include_pad, const T* x, T* y) {        \
    avg_forward_impl(g, count_include_pad, x, y);                                                     \
  }                                                                                                   \
  void avg_pool2d_backward(const Pool2dGeometry& g, bool count_include_pad, const T* dy, T* dx) {     \
    avg_backward_impl(g, count_include_pad, dy, dx);                                                  \
  }                                                                                                   \
  void global_avg_pool_forward(int64_t N, int64_t H, int64_t W, int64_t C, const T* x, T* y) {        \
    global_forward_impl(N, H, W, C, x, y);                                                            \
  }                                                                                                   \
  void global_avg_pool_backward(int64_t N, int64_t H, int64_t W, int64_t C, const T* dy, T* dx) {     \
    global_backward_impl(N, H, W, C, dy, dx);                                                         \
  }                                                                                                   \
  void max_pool2d_forward_ref(const Pool2dGeometry& g, const T* x, T* y, int32_t* argmax) {           \
    max_forward_ref_impl(g, x, y, argmax);                                                            \
  }                                                                                                   \
  void max_pool2d_backward_ref(const Pool2dGeometry& g, const T* dy, const int32_t* argmax, T* dx) {  \
    max_backward_ref_impl(g, dy, argmax, dx);                                                         \
  }                                                                                                   \
  void avg_pool2d_forward_ref(const Pool2dGeometry& g, bool count_include_pad, const T* x, T* y) {    \
    avg_forward_ref_impl(g, count_include_pad, x, y);                                                 \
  }                                                                                                   \
  void avg_pool2d_backward_ref(const Pool2dGeometry& g, bool count_include_pad, const T* dy, T* dx) { \
    avg_backward_ref_impl(g, count_include_pad, dy, dx);                                              \
  }                                                                                                   \
  void global_avg_pool_forward_ref(int64_t N, int64_t H, int64_t W, int64_t C, const T* x, T* y) {    \
    global_forward_ref_impl(N, H, W, C, x, y);                                                        \
  }                                                                                                   \
  void global_avg_pool_backward_ref(int64_t N, int64_t H, int64_t W, int64_t C, const T* dy, T* dx) { \
    global_backward_ref_impl(N, H, W, C, dy, dx);                                                     \
  }

LOWBIT_POOL_DEFINE(float)
LOWBIT_POOL_DEFINE(double)
#undef LOWBIT_POOL_DEFINE

}  // namespace lowbit::kernels
