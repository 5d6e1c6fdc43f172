// Depthwise convolution. The drivers walk output (or input) rows in parallel and hand each row to a
// row kernel working in "K space": every operand row is [pixels][K] with channels innermost, the
// weight transposed to wt[R][S][K]. For multiplier 1 the rows are the tensors themselves; for
// multiplier > 1 input rows are expanded to K channels (x[.][k / mult]) and the data gradient is
// summed back over each channel's multiplier group.
#include "core/kernels/depthwise.h"

#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "core/kernels/cpu.h"
#include "core/parallel.h"

namespace lowbit::kernels {
namespace {

void check_geometry(const Conv2dGeometry& g, const char* op) {
  LOWBIT_CHECK(g.groups == g.C && g.C >= 1 && g.K % g.C == 0, op,
               ": need groups == C and K a multiple of C, got C=", g.C, " K=", g.K, " groups=", g.groups);
  LOWBIT_CHECK(g.N >= 0 && g.H >= 1 && g.W >= 1 && g.R >= 1 && g.S >= 1 && g.stride_h >= 1 && g.stride_w >= 1 &&
                   g.dil_h >= 1 && g.dil_w >= 1 && g.pad_h >= 0 && g.pad_w >= 0,
               op, ": invalid geometry");
  LOWBIT_CHECK(g.P() >= 1 && g.Q() >= 1, op, ": empty output (P=", g.P(), ", Q=", g.Q(), ")");
}

// One output/input row in K space.
struct RowGeom {
  int64_t K, W, Q, S, sw, pw, dw;
};

// [q_lo, q_hi): outputs whose S taps all land inside [0, W).
void interior_q(const RowGeom& g, int64_t* q_lo, int64_t* q_hi) {
  const int64_t lo = ceil_div(g.pw, g.sw);
  const int64_t last = g.W - 1 + g.pw - (g.S - 1) * g.dw;
  int64_t hi = last >= 0 ? last / g.sw + 1 : 0;
  hi = std::min(hi, g.Q);
  *q_lo = std::min(lo, g.Q);
  *q_hi = std::max(hi, *q_lo);
}

// q range whose tap s lands inside [0, W).
void tap_q_range(const RowGeom& g, int64_t s, int64_t* qa, int64_t* qb) {
  const int64_t off = s * g.dw - g.pw;  // input column of output 0
  *qa = std::max<int64_t>(0, ceil_div(-off, g.sw));
  const int64_t last = g.W - 1 - off;
  *qb = last >= 0 ? std::min(g.Q, last / g.sw + 1) : 0;
  if (*qb < *qa) *qb = *qa;
}

template <class T>
struct DyTap {
  int64_t r;
  const T* dyrow;  // [Q][K]
};

// ---------------------------------------------------------------------------------------------
// Portable row kernels (any T); inner loops run over contiguous channels.
// ---------------------------------------------------------------------------------------------

template <class T>
void fwd_row_generic(const RowGeom& g, int64_t R, const T* const* xrows, const T* wt, const T* bias, T* y) {
  const int64_t K = g.K;
  for (int64_t q = 0; q < g.Q; ++q) {
    T* yq = y + q * K;
    for (int64_t k = 0; k < K; ++k) yq[k] = bias ? bias[k] : T(0);
    for (int64_t r = 0; r < R; ++r) {
      if (!xrows[r]) continue;
      for (int64_t s = 0; s < g.S; ++s) {
        const int64_t wi = q * g.sw - g.pw + s * g.dw;
        if (wi < 0 || wi >= g.W) continue;
        const T* xp = xrows[r] + wi * K;
        const T* wp = wt + (r * g.S + s) * K;
        for (int64_t k = 0; k < K; ++k) yq[k] += xp[k] * wp[k];
      }
    }
  }
}

template <class T>
void bwd_data_row_generic(const RowGeom& g, const DyTap<T>* taps, int64_t ntaps, const T* wt, T* dx) {
  const int64_t K = g.K;
  for (int64_t w = 0; w < g.W; ++w) {
    T* dxw = dx + w * K;
    for (int64_t k = 0; k < K; ++k) dxw[k] = T(0);
    for (int64_t t = 0; t < ntaps; ++t) {
      for (int64_t s = 0; s < g.S; ++s) {
        const int64_t num = w + g.pw - s * g.dw;
        if (num < 0 || num % g.sw != 0 || num / g.sw >= g.Q) continue;
        const T* dp = taps[t].dyrow + (num / g.sw) * K;
        const T* wp = wt + (taps[t].r * g.S + s) * K;
        for (int64_t k = 0; k < K; ++k) dxw[k] += dp[k] * wp[k];
      }
    }
  }
}

// dwt[r][s][:] += sum_q dy[q] * x[r][q*sw - pw + s*dw];  db[:] += sum_q dy[q] (db may be null).
// `row` is scratch of R*S*K: each row's sums are formed there first, then added to the partials.
template <class T>
void bwd_weight_row_generic(const RowGeom& g, int64_t R, const T* const* xrows, const T* dyrow, T* dwt, T* db, T* row) {
  const int64_t K = g.K;
  if (db) {
    std::fill(row, row + K, T(0));
    for (int64_t q = 0; q < g.Q; ++q)
      for (int64_t k = 0; k < K; ++k) row[k] += dyrow[q * K + k];
    for (int64_t k = 0; k < K; ++k) db[k] += row[k];
  }
  for (int64_t r = 0; r < R; ++r) {
    if (!xrows[r]) continue;
    for (int64_t s = 0; s < g.S; ++s) {
      int64_t qa, qb;
      tap_q_range(g, s, &qa, &qb);
      T* acc = row + (r * g.S + s) * K;
      std::fill(acc, acc + K, T(0));
      for (int64_t q = qa; q < qb; ++q) {
        const T* xp = xrows[r] + (q * g.sw - g.pw + s * g.dw) * K;
        const T* dp = dyrow + q * K;
        for (int64_t k = 0; k < K; ++k) acc[k] += dp[k] * xp[k];
      }
      T* out = dwt + (r * g.S + s) * K;
      for (int64_t k = 0; k < K; ++k) out[k] += acc[k];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AVX-512 float row kernels: 16 channels per vector, masked tails.
// ---------------------------------------------------------------------------------------------

LOWBIT_AVX512 inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
}

// One output column q with bounds checks on every tap.
LOWBIT_AVX512 void fwd_col_avx512(const RowGeom& g, int64_t R, const float* const* xrows, const float* wt,
                                  const float* bias, float* y, int64_t q) {
  const int64_t K = g.K, S = g.S;
  for (int64_t kb = 0; kb < K; kb += 16) {
    const __mmask16 m = tail_mask(K - kb);
    __m512 acc = bias ? _mm512_maskz_loadu_ps(m, bias + kb) : _mm512_setzero_ps();
    for (int64_t r = 0; r < R; ++r) {
      if (!xrows[r]) continue;
      for (int64_t s = 0; s < S; ++s) {
        const int64_t wi = q * g.sw - g.pw + s * g.dw;
        if (wi < 0 || wi >= g.W) continue;
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xrows[r] + wi * K + kb),
                              _mm512_maskz_loadu_ps(m, wt + (r * S + s) * K + kb), acc);
      }
    }
    _mm512_mask_storeu_ps(y + q * K + kb, m, acc);
  }
}

LOWBIT_AVX512 void fwd_row_avx512(const RowGeom& g, int64_t R, const float* const* xrows, const float* wt,
                                  const float* bias, float* y) {
  const int64_t K = g.K, S = g.S;
  int64_t q_lo, q_hi;
  interior_q(g, &q_lo, &q_hi);
  int64_t q = 0;
  for (; q < q_lo; ++q) fwd_col_avx512(g, R, xrows, wt, bias, y, q);
  // Interior: four outputs share each weight load.
  const int64_t xstep = g.sw * K;
  for (; q + 4 <= q_hi; q += 4) {
    for (int64_t kb = 0; kb < K; kb += 16) {
      const __mmask16 m = tail_mask(K - kb);
      const __m512 b = bias ? _mm512_maskz_loadu_ps(m, bias + kb) : _mm512_setzero_ps();
      __m512 a0 = b, a1 = b, a2 = b, a3 = b;
      for (int64_t r = 0; r < R; ++r) {
        if (!xrows[r]) continue;
        const float* xp = xrows[r] + (q * g.sw - g.pw) * K + kb;
        const float* wp = wt + r * S * K + kb;
        for (int64_t s = 0; s < S; ++s, xp += g.dw * K, wp += K) {
          const __m512 wv = _mm512_maskz_loadu_ps(m, wp);
          a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xp), wv, a0);
          a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xp + xstep), wv, a1);
          a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xp + 2 * xstep), wv, a2);
          a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xp + 3 * xstep), wv, a3);
        }
      }
      float* yq = y + q * K + kb;
      _mm512_mask_storeu_ps(yq, m, a0);
      _mm512_mask_storeu_ps(yq + K, m, a1);
      _mm512_mask_storeu_ps(yq + 2 * K, m, a2);
      _mm512_mask_storeu_ps(yq + 3 * K, m, a3);
    }
  }
  for (; q < g.Q; ++q) fwd_col_avx512(g, R, xrows, wt, bias, y, q);
}

LOWBIT_AVX512 void bwd_data_row_avx512(const RowGeom& g, const DyTap<float>* taps, int64_t ntaps, const float* wt,
                                       float* dx, int64_t* tap_s, int64_t* tap_q) {
  const int64_t K = g.K;
  for (int64_t w = 0; w < g.W; ++w) {
    int64_t n = 0;
    for (int64_t s = 0; s < g.S; ++s) {
      const int64_t num = w + g.pw - s * g.dw;
      if (num < 0 || num % g.sw != 0 || num / g.sw >= g.Q) continue;
      tap_s[n] = s;
      tap_q[n] = num / g.sw;
      ++n;
    }
    for (int64_t kb = 0; kb < K; kb += 16) {
      const __mmask16 m = tail_mask(K - kb);
      __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
      for (int64_t t = 0; t < ntaps; ++t) {
        const float* wr = wt + taps[t].r * g.S * K + kb;
        const float* dr = taps[t].dyrow + kb;
        int64_t i = 0;
        for (; i + 2 <= n; i += 2) {
          a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, dr + tap_q[i] * K), _mm512_maskz_loadu_ps(m, wr + tap_s[i] * K),
                               a0);
          a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, dr + tap_q[i + 1] * K),
                               _mm512_maskz_loadu_ps(m, wr + tap_s[i + 1] * K), a1);
        }
        if (i < n)
          a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, dr + tap_q[i] * K), _mm512_maskz_loadu_ps(m, wr + tap_s[i] * K),
                               a0);
      }
      _mm512_mask_storeu_ps(dx + w * K + kb, m, _mm512_add_ps(a0, a1));
    }
  }
}

LOWBIT_AVX512 void bwd_weight_row_avx512(const RowGeom& g, int64_t R, const float* const* xrows, const float* dyrow,
                                         float* dwt, float* db) {
  const int64_t K = g.K, S = g.S;
  const int64_t xstep = g.sw * K;
  for (int64_t kb = 0; kb < K; kb += 16) {
    const __mmask16 m = tail_mask(K - kb);
    if (db) {
      __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
      int64_t q = 0;
      for (; q + 2 <= g.Q; q += 2) {
        a0 = _mm512_add_ps(a0, _mm512_maskz_loadu_ps(m, dyrow + q * K + kb));
        a1 = _mm512_add_ps(a1, _mm512_maskz_loadu_ps(m, dyrow + (q + 1) * K + kb));
      }
      if (q < g.Q) a0 = _mm512_add_ps(a0, _mm512_maskz_loadu_ps(m, dyrow + q * K + kb));
      const __m512 sum = _mm512_add_ps(_mm512_maskz_loadu_ps(m, db + kb), _mm512_add_ps(a0, a1));
      _mm512_mask_storeu_ps(db + kb, m, sum);
    }
    for (int64_t r = 0; r < R; ++r) {
      if (!xrows[r]) continue;
      for (int64_t s = 0; s < S; ++s) {
        int64_t qa, qb;
        tap_q_range(g, s, &qa, &qb);
        const float* xp = xrows[r] + (qa * g.sw - g.pw + s * g.dw) * K + kb;
        const float* dp = dyrow + qa * K + kb;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        int64_t q = qa;
        for (; q + 4 <= qb; q += 4, xp += 4 * xstep, dp += 4 * K) {
          a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, dp), _mm512_maskz_loadu_ps(m, xp), a0);
          a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, dp + K), _mm512_maskz_loadu_ps(m, xp + xstep), a1);
          a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, dp + 2 * K), _mm512_maskz_loadu_ps(m, xp + 2 * xstep), a2);
          a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, dp + 3 * K), _mm512_maskz_loadu_ps(m, xp + 3 * xstep), a3);
        }
        for (; q < qb; ++q, xp += xstep, dp += K)
          a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, dp), _mm512_maskz_loadu_ps(m, xp), a0);
        const __m512 sum = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
        float* out = dwt + (r * S + s) * K + kb;
        _mm512_mask_storeu_ps(out, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, out), sum));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Row-kernel tables: float picks AVX-512 or portable at call time, double is always portable.
// ---------------------------------------------------------------------------------------------

template <class T>
struct RowKernels {
  bool simd = false;
  void fwd(const RowGeom& g, int64_t R, const T* const* xrows, const T* wt, const T* bias, T* y) const {
    if constexpr (std::is_same_v<T, float>) {
      if (simd) return fwd_row_avx512(g, R, xrows, wt, bias, y);
    }
    fwd_row_generic(g, R, xrows, wt, bias, y);
  }
  void bwd_data(const RowGeom& g, const DyTap<T>* taps, int64_t ntaps, const T* wt, T* dx, int64_t* tap_s,
                int64_t* tap_q) const {
    if constexpr (std::is_same_v<T, float>) {
      if (simd) return bwd_data_row_avx512(g, taps, ntaps, wt, dx, tap_s, tap_q);
    }
    bwd_data_row_generic(g, taps, ntaps, wt, dx);
  }
  void bwd_weight(const RowGeom& g, int64_t R, const T* const* xrows, const T* dyrow, T* dwt, T* db, T* row) const {
    if constexpr (std::is_same_v<T, float>) {
      if (simd) return bwd_weight_row_avx512(g, R, xrows, dyrow, dwt, db);
    }
    bwd_weight_row_generic(g, R, xrows, dyrow, dwt, db, row);
  }
};

template <class T>
RowKernels<T> row_kernels() {
  RowKernels<T> k;
  if constexpr (std::is_same_v<T, float>) k.simd = avx512_enabled();
  return k;
}

// w[K][R][S] -> wt[R][S][K]
template <class T>
std::vector<T> transpose_weight(const Conv2dGeometry& g, const T* w) {
  const int64_t RS = g.R * g.S;
  std::vector<T> wt(size_t(RS * g.K));
  for (int64_t k = 0; k < g.K; ++k)
    for (int64_t i = 0; i < RS; ++i) wt[size_t(i * g.K + k)] = w[k * RS + i];
  return wt;
}

// Fills xrows[r] with input row h = p*sh - ph + r*dh of image n (null when padded). For
// multiplier > 1 the rows are expanded to K channels in `expand` ([R][W][K]).
template <class T>
void gather_input_rows(const Conv2dGeometry& g, const T* x, int64_t n, int64_t p, const T** xrows, T* expand) {
  const int64_t mult = g.K / g.C;
  for (int64_t r = 0; r < g.R; ++r) {
    const int64_t h = p * g.stride_h - g.pad_h + r * g.dil_h;
    if (h < 0 || h >= g.H) {
      xrows[r] = nullptr;
      continue;
    }
    const T* src = x + (n * g.H + h) * g.W * g.C;
    if (mult == 1) {
      xrows[r] = src;
      continue;
    }
    T* dst = expand + r * g.W * g.K;
    for (int64_t w = 0; w < g.W; ++w)
      for (int64_t c = 0; c < g.C; ++c)
        for (int64_t j = 0; j < mult; ++j) dst[(w * g.C + c) * mult + j] = src[w * g.C + c];
    xrows[r] = dst;
  }
}

RowGeom row_geom(const Conv2dGeometry& g) { return {g.K, g.W, g.Q(), g.S, g.stride_w, g.pad_w, g.dil_w}; }

template <class T>
void forward_impl(const Conv2dGeometry& g, const T* x, const T* w, const T* b, T* y) {
  check_geometry(g, "depthwise_conv2d_forward");
  const RowKernels<T> kern = row_kernels<T>();
  const std::vector<T> wt = transpose_weight(g, w);
  const RowGeom rg = row_geom(g);
  const int64_t P = g.P(), Q = g.Q(), mult = g.K / g.C;
  const int64_t row_macs = std::max<int64_t>(1, Q * g.K * g.R * g.S);
  parallel_for(0, g.N * P, std::max<int64_t>(1, (int64_t(1) << 15) / row_macs), [&](int64_t lo, int64_t hi) {
    std::vector<const T*> xrows(size_t(g.R));
    std::vector<T> expand(mult > 1 ? size_t(g.R * g.W * g.K) : 0);
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t n = row / P, p = row % P;
      gather_input_rows(g, x, n, p, xrows.data(), expand.data());
      kern.fwd(rg, g.R, xrows.data(), wt.data(), b, y + row * Q * g.K);
    }
  });
}

template <class T>
void backward_data_impl(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  check_geometry(g, "depthwise_conv2d_backward_data");
  const RowKernels<T> kern = row_kernels<T>();
  const std::vector<T> wt = transpose_weight(g, w);
  const RowGeom rg = row_geom(g);
  const int64_t P = g.P(), Q = g.Q(), mult = g.K / g.C;
  const int64_t row_macs = std::max<int64_t>(1, g.W * g.K * g.R * g.S / (g.stride_h * g.stride_w));
  parallel_for(0, g.N * g.H, std::max<int64_t>(1, (int64_t(1) << 15) / row_macs), [&](int64_t lo, int64_t hi) {
    std::vector<DyTap<T>> taps(size_t(g.R));
    std::vector<int64_t> tap_s(size_t(g.S)), tap_q(size_t(g.S));
    std::vector<T> wide(mult > 1 ? size_t(g.W * g.K) : 0);
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t n = row / g.H, h = row % g.H;
      int64_t ntaps = 0;
      for (int64_t r = 0; r < g.R; ++r) {
        const int64_t num = h + g.pad_h - r * g.dil_h;
        if (num < 0 || num % g.stride_h != 0 || num / g.stride_h >= P) continue;
        taps[size_t(ntaps++)] = {r, dy + (n * P + num / g.stride_h) * Q * g.K};
      }
      T* dxrow = dx + row * g.W * g.C;
      if (mult == 1) {
        kern.bwd_data(rg, taps.data(), ntaps, wt.data(), dxrow, tap_s.data(), tap_q.data());
        continue;
      }
      kern.bwd_data(rg, taps.data(), ntaps, wt.data(), wide.data(), tap_s.data(), tap_q.data());
      for (int64_t i = 0; i < g.W * g.C; ++i) {
        T sum = T(0);
        for (int64_t j = 0; j < mult; ++j) sum += wide[size_t(i * mult + j)];
        dxrow[i] = sum;
      }
    }
  });
}

template <class T>
void backward_weight_impl(const Conv2dGeometry& g, const T* x, const T* dy, T* dw, T* db) {
  check_geometry(g, "depthwise_conv2d_backward_weight");
  const RowKernels<T> kern = row_kernels<T>();
  const RowGeom rg = row_geom(g);
  const int64_t P = g.P(), Q = g.Q(), mult = g.K / g.C, RSK = g.R * g.S * g.K;
  const int64_t rows = g.N * P;
  // The chunking depends on the shape alone, so the result does not depend on the thread count.
  const int64_t chunks = std::clamp<int64_t>(g.macs() >> 18, 1, std::min<int64_t>(64, std::max<int64_t>(1, rows)));
  const int64_t part_size = RSK + g.K;
  std::vector<T> partial(size_t(chunks * part_size), T(0));
  parallel_chunks(0, rows, chunks, [&](int64_t chunk, int64_t lo, int64_t hi) {
    std::vector<const T*> xrows(size_t(g.R));
    std::vector<T> expand(mult > 1 ? size_t(g.R * g.W * g.K) : 0);
    std::vector<T> scratch(static_cast<size_t>(RSK));
    T* part = partial.data() + chunk * part_size;
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t n = row / P, p = row % P;
      gather_input_rows(g, x, n, p, xrows.data(), expand.data());
      kern.bwd_weight(rg, g.R, xrows.data(), dy + row * Q * g.K, part, db ? part + RSK : nullptr, scratch.data());
    }
  });
  for (int64_t c = 1; c < chunks; ++c) {
    const T* part = partial.data() + c * part_size;
    T* total = partial.data();
    for (int64_t i = 0; i < part_size; ++i) total[i] += part[i];
  }
  const int64_t RS = g.R * g.S;
  for (int64_t k = 0; k < g.K; ++k)
    for (int64_t i = 0; i < RS; ++i) dw[k * RS + i] = partial[size_t(i * g.K + k)];
  if (db)
    for (int64_t k = 0; k < g.K; ++k) db[k] = partial[size_t(RSK + k)];
}

// ---------------------------------------------------------------------------------------------
// References: direct loops, accumulating in a wider type.
// ---------------------------------------------------------------------------------------------

template <class T>
using RefAcc = std::conditional_t<std::is_same_v<T, float>, double, long double>;

template <class T>
void forward_ref_impl(const Conv2dGeometry& g, const T* x, const T* w, const T* b, T* y) {
  check_geometry(g, "depthwise_conv2d_forward_ref");
  const int64_t P = g.P(), Q = g.Q(), mult = g.K / g.C;
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q)
        for (int64_t k = 0; k < g.K; ++k) {
          RefAcc<T> acc = b ? b[k] : T(0);
          const int64_t c = k / mult;
          for (int64_t r = 0; r < g.R; ++r)
            for (int64_t s = 0; s < g.S; ++s) {
              const int64_t h = p * g.stride_h - g.pad_h + r * g.dil_h;
              const int64_t wi = q * g.stride_w - g.pad_w + s * g.dil_w;
              if (h < 0 || h >= g.H || wi < 0 || wi >= g.W) continue;
              acc += RefAcc<T>(x[((n * g.H + h) * g.W + wi) * g.C + c]) * w[(k * g.R + r) * g.S + s];
            }
          y[((n * P + p) * Q + q) * g.K + k] = T(acc);
        }
}

template <class T>
void backward_data_ref_impl(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  check_geometry(g, "depthwise_conv2d_backward_data_ref");
  const int64_t P = g.P(), Q = g.Q(), mult = g.K / g.C;
  std::vector<RefAcc<T>> acc(size_t(g.N * g.H * g.W * g.C), 0);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q)
        for (int64_t k = 0; k < g.K; ++k)
          for (int64_t r = 0; r < g.R; ++r)
            for (int64_t s = 0; s < g.S; ++s) {
              const int64_t h = p * g.stride_h - g.pad_h + r * g.dil_h;
              const int64_t wi = q * g.stride_w - g.pad_w + s * g.dil_w;
              if (h < 0 || h >= g.H || wi < 0 || wi >= g.W) continue;
              acc[size_t(((n * g.H + h) * g.W + wi) * g.C + k / mult)] +=
                  RefAcc<T>(dy[((n * P + p) * Q + q) * g.K + k]) * w[(k * g.R + r) * g.S + s];
            }
  for (size_t i = 0; i < acc.size(); ++i) dx[i] = T(acc[i]);
}

template <class T>
void backward_weight_ref_impl(const Conv2dGeometry& g, const T* x, const T* dy, T* dw, T* db) {
  check_geometry(g, "depthwise_conv2d_backward_weight_ref");
  const int64_t P = g.P(), Q = g.Q(), mult = g.K / g.C;
  std::vector<RefAcc<T>> aw(size_t(g.K * g.R * g.S), 0), ab(size_t(g.K), 0);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q)
        for (int64_t k = 0; k < g.K; ++k) {
          const RefAcc<T> d = dy[((n * P + p) * Q + q) * g.K + k];
          ab[size_t(k)] += d;
          for (int64_t r = 0; r < g.R; ++r)
            for (int64_t s = 0; s < g.S; ++s) {
              const int64_t h = p * g.stride_h - g.pad_h + r * g.dil_h;
              const int64_t wi = q * g.stride_w - g.pad_w + s * g.dil_w;
              if (h < 0 || h >= g.H || wi < 0 || wi >= g.W) continue;
              aw[size_t((k * g.R + r) * g.S + s)] += d * x[((n * g.H + h) * g.W + wi) * g.C + k / mult];
            }
        }
  for (size_t i = 0; i < aw.size(); ++i) dw[i] = T(aw[i]);
  if (db)
    for (size_t i = 0; i < ab.size(); ++i) db[i] = T(ab[i]);
}

}  // namespace

void depthwise_conv2d_forward(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y) {
  forward_impl(g, x, w, b, y);
}
void depthwise_conv2d_forward(const Conv2dGeometry& g, const double* x, const double* w, const double* b, double* y) {
  forward_impl(g, x, w, b, y);
}
void depthwise_conv2d_backward_data(const Conv2dGeometry& g, const float* dy, const float* w, float* dx) {
  backward_data_impl(g, dy, w, dx);
}
void depthwise_conv2d_backward_data(const Conv2dGeometry& g, const double* dy, const double* w, double* dx) {
  backward_data_impl(g, dy, w, dx);
}
void depthwise_conv2d_backward_weight(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* db) {
  backward_weight_impl(g, x, dy, dw, db);
}
void depthwise_conv2d_backward_weight(const Conv2dGeometry& g, const double* x, const double* dy, double* dw,
                                      double* db) {
  backward_weight_impl(g, x, dy, dw, db);
}

void depthwise_conv2d_forward_ref(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y) {
  forward_ref_impl(g, x, w, b, y);
}
void depthwise_conv2d_forward_ref(const Conv2dGeometry& g, const double* x, const double* w, const double* b,
                                  double* y) {
  forward_ref_impl(g, x, w, b, y);
}
void depthwise_conv2d_backward_data_ref(const Conv2dGeometry& g, const float* dy, const float* w, float* dx) {
  backward_data_ref_impl(g, dy, w, dx);
}
void depthwise_conv2d_backward_data_ref(const Conv2dGeometry& g, const double* dy, const double* w, double* dx) {
  backward_data_ref_impl(g, dy, w, dx);
}
void depthwise_conv2d_backward_weight_ref(const Conv2dGeometry& g, const float* x, const float* dy, float* dw,
                                          float* db) {
  backward_weight_ref_impl(g, x, dy, dw, db);
}
void depthwise_conv2d_backward_weight_ref(const Conv2dGeometry& g, const double* x, const double* dy, double* dw,
                                          double* db) {
  backward_weight_ref_impl(g, x, dy, dw, db);
}

}  // namespace lowbit::kernels
