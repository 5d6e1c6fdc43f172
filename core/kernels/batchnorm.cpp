// Batch normalization kernels. Reductions run over chunks of rows (parallel_chunks, chunk count a
// function of the shape), each chunk accumulating blocks of up to 64 rows in the element type and
// adding the block sums into double; chunk results merge in chunk order. Elementwise passes run
// in parallel over rows.
#include "core/kernels/batchnorm.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <utility>
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

constexpr int64_t kBlockRows = 64;      // rows summed in the element type before going to double
constexpr int64_t kChunkElems = 32768;  // elements per reduction chunk (cache-resident)

int64_t chunk_count(int64_t rows, int64_t C) {
  const int64_t chunk_rows = std::max<int64_t>(1, kChunkElems / C);
  return (rows + chunk_rows - 1) / chunk_rows;
}

int64_t elementwise_grain(int64_t C) { return std::max<int64_t>(1, 16384 / C); }

void check_shape(int64_t rows, int64_t C, const char* op) {
  LOWBIT_CHECK(rows >= 1 && C >= 1, op, ": need rows >= 1 and C >= 1, got rows=", rows, " C=", C);
}

// ---------------------------------------------------------------------------------------------
// Portable row-block primitives (any T). Sums go to double accumulators.
// ---------------------------------------------------------------------------------------------

// out[c] += sum_rows x
template <class T>
void sum_rows_generic(int64_t rows, int64_t C, const T* x, double* out, T* blk) {
  for (int64_t r0 = 0; r0 < rows; r0 += kBlockRows) {
    const int64_t r1 = std::min(rows, r0 + kBlockRows);
    std::fill(blk, blk + C, T(0));
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < C; ++c) blk[c] += x[r * C + c];
    for (int64_t c = 0; c < C; ++c) out[c] += double(blk[c]);
  }
}

// s1[c] += sum (a - center), s2[c] += sum b * (a - center), with b = a when `b` is null.
template <class T>
void dev_rows_generic(int64_t rows, int64_t C, const T* a, const T* b, const T* center, double* s1, double* s2,
                      T* blk) {
  T* b1 = blk;
  T* b2 = blk + C;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlockRows) {
    const int64_t r1 = std::min(rows, r0 + kBlockRows);
    std::fill(blk, blk + 2 * C, T(0));
    for (int64_t r = r0; r < r1; ++r) {
      const T* ar = a + r * C;
      const T* br = b ? b + r * C : nullptr;
      for (int64_t c = 0; c < C; ++c) {
        const T d = ar[c] - center[c];
        b1[c] += d;
        b2[c] += (br ? br[c] : d) * d;
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      s1[c] += double(b1[c]);
      s2[c] += double(b2[c]);
    }
  }
}

// z = (x - center) * scale + shift with one rounding for the multiply-add (as _mm512_fmadd_ps), so
// that the fused-ReLU backward recomputes exactly the z the forward compared with 0.
template <class T>
T affine_value(T x, T center, T scale, T shift) {
  return std::fma(x - center, scale, shift);
}

// y = z, or max(z, 0) when relu (NaN -> 0, as math::relu).
template <class T>
void affine_rows_generic(int64_t rows, int64_t C, const T* x, const T* center, const T* scale, const T* shift,
                         bool relu, T* y) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const T z = affine_value(x[r * C + c], center[c], scale[c], shift[c]);
      y[r * C + c] = relu && !(z > T(0)) ? T(0) : z;
    }
}

// g = dy where z > 0, else 0 (z recomputed from x and the forward's affine).
template <class T>
void relu_mask_rows_generic(int64_t rows, int64_t C, const T* dy, const T* x, const T* center, const T* scale,
                            const T* shift, T* g) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c)
      g[r * C + c] = affine_value(x[r * C + c], center[c], scale[c], shift[c]) > T(0) ? dy[r * C + c] : T(0);
}

// dx = g * k1 + (x - center) * k2 + k3, g = dy (masked by z > 0 when relu_scale is non-null).
template <class T>
void bwd_dx_rows_generic(int64_t rows, int64_t C, const T* dy, const T* x, const T* center, const T* k1, const T* k2,
                         const T* k3, const T* relu_scale, const T* relu_shift, T* dx) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const T xv = x[r * C + c];
      const bool keep = !relu_scale || affine_value(xv, center[c], relu_scale[c], relu_shift[c]) > T(0);
      const T g = keep ? dy[r * C + c] : T(0);
      dx[r * C + c] = g * k1[c] + (xv - center[c]) * k2[c] + k3[c];
    }
}

// ---------------------------------------------------------------------------------------------
// AVX-512 float primitives: groups of up to 4 vectors (64 channels) kept in registers.
// ---------------------------------------------------------------------------------------------

LOWBIT_AVX512 inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1u);
}

// out[0..16) += a, lanes limited by m.
LOWBIT_AVX512 inline void add_to_double(double* out, __m512 a, __mmask16 m) {
  const __mmask8 lo = __mmask8(m & 0xFF), hi = __mmask8(m >> 8);
  // Zero-masked forms: GCC 12 warns on the _mm512_undefined_* inside the plain ones.
  const __m512d dlo = _mm512_maskz_cvtps_pd(0xFF, _mm512_maskz_extractf32x8_ps(0xFF, a, 0));
  const __m512d dhi = _mm512_maskz_cvtps_pd(0xFF, _mm512_maskz_extractf32x8_ps(0xFF, a, 1));
  _mm512_mask_storeu_pd(out, lo, _mm512_add_pd(_mm512_maskz_loadu_pd(lo, out), dlo));
  _mm512_mask_storeu_pd(out + 8, hi, _mm512_add_pd(_mm512_maskz_loadu_pd(hi, out + 8), dhi));
}

// One channel group [c0, c0 + 16*NV) of one row block. Pointers are at (row r0, channel c0).
template <int NV>
LOWBIT_AVX512 void sum_group(int64_t nr, int64_t C, const float* x, int64_t left, double* out) {
  __mmask16 m[NV];
  __m512 a[NV];
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) {
    m[j] = tail_mask(left - 16 * j);
    a[j] = _mm512_setzero_ps();
  }
  for (int64_t r = 0; r < nr; ++r, x += C) {
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) a[j] = _mm512_add_ps(a[j], _mm512_maskz_loadu_ps(m[j], x + 16 * j));
  }
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) add_to_double(out + 16 * j, a[j], m[j]);
}

// s1 += sum (a - center); s2 += sum b * (a - center) (b = a - center when WithB is false).
template <int NV, bool WithB>
LOWBIT_AVX512 void dev_group(int64_t nr, int64_t C, const float* a, const float* b, int64_t left, const float* center,
                             double* s1, double* s2) {
  __mmask16 m[NV];
  __m512 cen[NV], a1[NV], a2[NV];
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) {
    m[j] = tail_mask(left - 16 * j);
    cen[j] = _mm512_maskz_loadu_ps(m[j], center + 16 * j);
    a1[j] = _mm512_setzero_ps();
    a2[j] = _mm512_setzero_ps();
  }
  for (int64_t r = 0; r < nr; ++r, a += C, b += WithB ? C : 0) {
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      const __m512 d = _mm512_maskz_sub_ps(m[j], _mm512_maskz_loadu_ps(m[j], a + 16 * j), cen[j]);
      a1[j] = _mm512_add_ps(a1[j], d);
      const __m512 f = WithB ? _mm512_maskz_loadu_ps(m[j], b + 16 * j) : d;
      a2[j] = _mm512_fmadd_ps(f, d, a2[j]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) {
    add_to_double(s1 + 16 * j, a1[j], m[j]);
    add_to_double(s2 + 16 * j, a2[j], m[j]);
  }
}

LOWBIT_AVX512 void sum_rows_avx512(int64_t rows, int64_t C, const float* x, double* out) {
  for (int64_t r0 = 0; r0 < rows; r0 += kBlockRows) {
    const int64_t nr = std::min(kBlockRows, rows - r0);
    for (int64_t c0 = 0; c0 < C; c0 += 64) {
      const int64_t left = C - c0;
      const float* xp = x + r0 * C + c0;
      if (left > 48)
        sum_group<4>(nr, C, xp, left, out + c0);
      else if (left > 32)
        sum_group<3>(nr, C, xp, left, out + c0);
      else if (left > 16)
        sum_group<2>(nr, C, xp, left, out + c0);
      else
        sum_group<1>(nr, C, xp, left, out + c0);
    }
  }
}

template <bool WithB>
LOWBIT_AVX512 void dev_rows_avx512(int64_t rows, int64_t C, const float* a, const float* b, const float* center,
                                   double* s1, double* s2) {
  for (int64_t r0 = 0; r0 < rows; r0 += kBlockRows) {
    const int64_t nr = std::min(kBlockRows, rows - r0);
    for (int64_t c0 = 0; c0 < C; c0 += 64) {
      const int64_t left = C - c0, off = r0 * C + c0;
      const float* ap = a + off;
      const float* bp = WithB ? b + off : nullptr;
      if (left > 48)
        dev_group<4, WithB>(nr, C, ap, bp, left, center + c0, s1 + c0, s2 + c0);
      else if (left > 32)
        dev_group<3, WithB>(nr, C, ap, bp, left, center + c0, s1 + c0, s2 + c0);
      else if (left > 16)
        dev_group<2, WithB>(nr, C, ap, bp, left, center + c0, s1 + c0, s2 + c0);
      else
        dev_group<1, WithB>(nr, C, ap, bp, left, center + c0, s1 + c0, s2 + c0);
    }
  }
}

// Lanes of m where z = (x - center) * scale + shift > 0 (same instructions as the forward's z).
LOWBIT_AVX512 inline __mmask16 positive_lanes(__mmask16 m, __m512 d, const float* scale, const float* shift) {
  const __m512 z = _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, scale), _mm512_maskz_loadu_ps(m, shift));
  return _mm512_mask_cmp_ps_mask(m, z, _mm512_setzero_ps(), _CMP_GT_OQ);
}

template <bool Relu>
LOWBIT_AVX512 void affine_rows_avx512(int64_t rows, int64_t C, const float* x, const float* center, const float* scale,
                                      const float* shift, float* y) {
  for (int64_t r = 0; r < rows; ++r, x += C, y += C)
    for (int64_t cb = 0; cb < C; cb += 16) {
      const __mmask16 m = tail_mask(C - cb);
      const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + cb), _mm512_maskz_loadu_ps(m, center + cb));
      const __m512 z = _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, scale + cb), _mm512_maskz_loadu_ps(m, shift + cb));
      const __mmask16 keep = Relu ? _mm512_mask_cmp_ps_mask(m, z, _mm512_setzero_ps(), _CMP_GT_OQ) : m;
      _mm512_mask_storeu_ps(y + cb, m, _mm512_maskz_mov_ps(keep, z));
    }
}

LOWBIT_AVX512 void relu_mask_rows_avx512(int64_t rows, int64_t C, const float* dy, const float* x, const float* center,
                                         const float* scale, const float* shift, float* g) {
  for (int64_t r = 0; r < rows; ++r, dy += C, x += C, g += C)
    for (int64_t cb = 0; cb < C; cb += 16) {
      const __mmask16 m = tail_mask(C - cb);
      const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + cb), _mm512_maskz_loadu_ps(m, center + cb));
      const __mmask16 keep = positive_lanes(m, d, scale + cb, shift + cb);
      _mm512_mask_storeu_ps(g + cb, m, _mm512_maskz_loadu_ps(keep, dy + cb));
    }
}

LOWBIT_AVX512 void bwd_dx_rows_avx512(int64_t rows, int64_t C, const float* dy, const float* x, const float* center,
                                      const float* k1, const float* k2, const float* k3, const float* relu_scale,
                                      const float* relu_shift, float* dx) {
  for (int64_t r = 0; r < rows; ++r, dy += C, x += C, dx += C)
    for (int64_t cb = 0; cb < C; cb += 16) {
      const __mmask16 m = tail_mask(C - cb);
      const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + cb), _mm512_maskz_loadu_ps(m, center + cb));
      const __mmask16 keep = relu_scale ? positive_lanes(m, d, relu_scale + cb, relu_shift + cb) : m;
      const __m512 t = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(keep, dy + cb), _mm512_maskz_loadu_ps(m, k1 + cb),
                                       _mm512_maskz_loadu_ps(m, k3 + cb));
      _mm512_mask_storeu_ps(dx + cb, m, _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, k2 + cb), t));
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatch of the primitives for T.
// ---------------------------------------------------------------------------------------------

template <class T>
struct Prims {
  bool simd = use_avx512<T>();
  void sum(int64_t rows, int64_t C, const T* x, double* out, T* blk) const {
    if constexpr (std::is_same_v<T, float>) {
      if (simd) return sum_rows_avx512(rows, C, x, out);
    }
    sum_rows_generic(rows, C, x, out, blk);
  }
  void dev(int64_t rows, int64_t C, const T* a, const T* b, const T* center, double* s1, double* s2, T* blk) const {
    if constexpr (std::is_same_v<T, float>) {
      if (simd) {
        if (b) return dev_rows_avx512<true>(rows, C, a, b, center, s1, s2);
        return dev_rows_avx512<false>(rows, C, a, nullptr, center, s1, s2);
      }
    }
    dev_rows_generic(rows, C, a, b, center, s1, s2, blk);
  }
  void affine(int64_t rows, int64_t C, const T* x, const T* center, const T* scale, const T* shift, bool relu,
              T* y) const {
    if constexpr (std::is_same_v<T, float>) {
      if (simd && relu) return affine_rows_avx512<true>(rows, C, x, center, scale, shift, y);
      if (simd) return affine_rows_avx512<false>(rows, C, x, center, scale, shift, y);
    }
    affine_rows_generic(rows, C, x, center, scale, shift, relu, y);
  }
  void relu_mask(int64_t rows, int64_t C, const T* dy, const T* x, const T* center, const T* scale, const T* shift,
                 T* g) const {
    if constexpr (std::is_same_v<T, float>) {
      if (simd) return relu_mask_rows_avx512(rows, C, dy, x, center, scale, shift, g);
    }
    relu_mask_rows_generic(rows, C, dy, x, center, scale, shift, g);
  }
  void bwd_dx(int64_t rows, int64_t C, const T* dy, const T* x, const T* center, const T* k1, const T* k2, const T* k3,
              const T* relu_scale, const T* relu_shift, T* dx) const {
    if constexpr (std::is_same_v<T, float>) {
      if (simd) return bwd_dx_rows_avx512(rows, C, dy, x, center, k1, k2, k3, relu_scale, relu_shift, dx);
    }
    bwd_dx_rows_generic(rows, C, dy, x, center, k1, k2, k3, relu_scale, relu_shift, dx);
  }
};

template <class T>
void affine_pass(const Prims<T>& prims, int64_t rows, int64_t C, const T* x, const std::vector<T>& center,
                 const std::vector<T>& scale, const std::vector<T>& shift, bool relu, T* y) {
  parallel_for(0, rows, elementwise_grain(C), [&](int64_t lo, int64_t hi) {
    prims.affine(hi - lo, C, x + lo * C, center.data(), scale.data(), shift.data(), relu, y + lo * C);
  });
}

// ---------------------------------------------------------------------------------------------
// Drivers
// ---------------------------------------------------------------------------------------------

// Per-channel mean and M2 (sum of squared deviations) in double: per chunk two passes, merged in chunk
// order (Chan et al.).
template <class T>
void stats_impl(const Prims<T>& prims, int64_t rows, int64_t C, const T* x, std::vector<double>& mean,
                std::vector<double>& m2) {
  const int64_t chunks = chunk_count(rows, C);
  // Per chunk: row count, mean[C], M2[C] (sum of squared deviations from the chunk mean).
  std::vector<int64_t> counts(static_cast<size_t>(chunks));
  std::vector<double> stats(static_cast<size_t>(chunks * 2 * C));
  parallel_chunks(0, rows, chunks, [&](int64_t ci, int64_t lo, int64_t hi) {
    const int64_t n = hi - lo;
    const T* xc = x + lo * C;
    std::vector<T> blk(static_cast<size_t>(2 * C)), center(static_cast<size_t>(C));
    std::vector<double> s1(static_cast<size_t>(C), 0.0), s2(static_cast<size_t>(C), 0.0);
    prims.sum(n, C, xc, s1.data(), blk.data());
    for (int64_t c = 0; c < C; ++c) center[size_t(c)] = T(s1[size_t(c)] / double(n));
    std::fill(s1.begin(), s1.end(), 0.0);
    prims.dev(n, C, xc, nullptr, center.data(), s1.data(), s2.data(), blk.data());
    double* mean = stats.data() + ci * 2 * C;
    double* m2 = mean + C;
    for (int64_t c = 0; c < C; ++c) {
      const double d = s1[size_t(c)] / double(n);
      mean[c] = double(center[size_t(c)]) + d;
      m2[c] = std::max(0.0, s2[size_t(c)] - s1[size_t(c)] * d);
    }
    counts[size_t(ci)] = n;
  });
  // Merge in chunk order.
  mean.assign(stats.begin(), stats.begin() + C), m2.assign(stats.begin() + C, stats.begin() + 2 * C);
  double count = double(counts[0]);
  for (int64_t ci = 1; ci < chunks; ++ci) {
    const double nb = double(counts[size_t(ci)]), n = count + nb;
    const double* mb = stats.data() + ci * 2 * C;
    const double* m2b = mb + C;
    for (int64_t c = 0; c < C; ++c) {
      const double delta = mb[c] - mean[size_t(c)];
      mean[size_t(c)] += delta * nb / n;
      m2[size_t(c)] += m2b[c] + delta * delta * count * nb / n;
    }
    count = n;
  }
}

template <class T>
void forward_train_impl(int64_t rows, int64_t C, const T* x, const T* gamma, const T* beta, double eps, T* y,
                        T* save_mean, T* save_invstd, T* var_unbiased, T* relu_affine) {
  check_shape(rows, C, "batchnorm_forward_train");
  const Prims<T> prims;
  std::vector<double> mean, m2;
  stats_impl(prims, rows, C, x, mean, m2);
  std::vector<T> center(static_cast<size_t>(C)), scale(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    const double var = m2[size_t(c)] / double(rows);
    const double invstd = 1.0 / std::sqrt(var + eps);
    // y = (x - center) * scale + shift with center = T(mean); the rounding error of the center
    // (large when |mean| >> std) is folded into the shift.
    const double scale_d = invstd * (gamma ? double(gamma[c]) : 1.0);
    center[size_t(c)] = T(mean[size_t(c)]);
    scale[size_t(c)] = T(scale_d);
    shift[size_t(c)] = T((beta ? double(beta[c]) : 0.0) - (mean[size_t(c)] - double(center[size_t(c)])) * scale_d);
    if (save_mean) save_mean[c] = T(mean[size_t(c)]);
    if (save_invstd) save_invstd[c] = T(invstd);
    if (var_unbiased) var_unbiased[c] = T(m2[size_t(c)] / double(rows - 1));
  }
  if (relu_affine) {
    std::copy(scale.begin(), scale.end(), relu_affine);
    std::copy(shift.begin(), shift.end(), relu_affine + C);
  }
  affine_pass(prims, rows, C, x, center, scale, shift, relu_affine != nullptr, y);
}

template <class T>
void forward_eval_impl(int64_t rows, int64_t C, const T* x, const T* running_mean, const T* running_var, const T* gamma,
                       const T* beta, double eps, bool relu, T* y) {
  check_shape(rows, C, "batchnorm_forward_eval");
  const Prims<T> prims;
  std::vector<T> center(running_mean, running_mean + C), scale(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    scale[size_t(c)] = T((gamma ? double(gamma[c]) : 1.0) / std::sqrt(double(running_var[c]) + eps));
    shift[size_t(c)] = beta ? beta[c] : T(0);
  }
  affine_pass(prims, rows, C, x, center, scale, shift, relu, y);
}

// Per channel sum g and sum g (x - mean), g = dy (masked by the fused ReLU), in double: per chunk,
// merged in chunk order.
template <class T>
void backward_sums_impl(const Prims<T>& prims, int64_t rows, int64_t C, const T* x, const T* dy, const T* save_mean,
                        const T* relu_affine, std::vector<double>& sum_dy, std::vector<double>& dot) {
  const int64_t chunks = chunk_count(rows, C);
  const T* relu_scale = relu_affine;
  const T* relu_shift = relu_affine ? relu_affine + C : nullptr;
  std::vector<double> sums(static_cast<size_t>(chunks * 2 * C), 0.0);
  parallel_chunks(0, rows, chunks, [&](int64_t ci, int64_t lo, int64_t hi) {
    std::vector<T> blk(static_cast<size_t>(2 * C));
    double* sdy = sums.data() + ci * 2 * C;
    const T* g = dy + lo * C;
    // The chunk's masked gradient, cache-resident for the two sums; one buffer per worker thread,
    // reused across chunks and calls (no allocation on the hot path).
    thread_local std::vector<T> masked;
    if (relu_affine) {
      if (masked.size() < static_cast<size_t>((hi - lo) * C)) masked.resize(static_cast<size_t>((hi - lo) * C));
      prims.relu_mask(hi - lo, C, g, x + lo * C, save_mean, relu_scale, relu_shift, masked.data());
      g = masked.data();
    }
    // dev(a = x, b = g): s1 = sum (x - mean) is not needed; sum g comes from sum().
    std::vector<double> unused(static_cast<size_t>(C), 0.0);
    prims.sum(hi - lo, C, g, sdy, blk.data());
    prims.dev(hi - lo, C, x + lo * C, g, save_mean, unused.data(), sdy + C, blk.data());
  });
  sum_dy.assign(sums.begin(), sums.begin() + C), dot.assign(sums.begin() + C, sums.begin() + 2 * C);
  for (int64_t ci = 1; ci < chunks; ++ci) {
    const double* part = sums.data() + ci * 2 * C;
    for (int64_t c = 0; c < C; ++c) {
      sum_dy[size_t(c)] += part[c];
      dot[size_t(c)] += part[C + c];
    }
  }
}

// dx = gamma invstd (g - sum_dy / count - xhat invstd dot / count), xhat = (x - mean) invstd.
template <class T>
void backward_dx_impl(const Prims<T>& prims, int64_t rows, int64_t C, const T* x, const T* dy, const T* save_mean,
                      const T* save_invstd, const T* gamma, const T* relu_affine, const double* sum_dy,
                      const double* dot, double count, T* dx) {
  std::vector<T> k1(static_cast<size_t>(C)), k2(static_cast<size_t>(C)), k3(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    const double invstd = save_invstd[c], g = gamma ? double(gamma[c]) : 1.0;
    k1[size_t(c)] = T(g * invstd);
    k2[size_t(c)] = T(-g * invstd * invstd * invstd * dot[c] / count);
    k3[size_t(c)] = T(-g * invstd * sum_dy[c] / count);
  }
  const T* relu_scale = relu_affine;
  const T* relu_shift = relu_affine ? relu_affine + C : nullptr;
  parallel_for(0, rows, elementwise_grain(C), [&](int64_t lo, int64_t hi) {
    prims.bwd_dx(hi - lo, C, dy + lo * C, x + lo * C, save_mean, k1.data(), k2.data(), k3.data(), relu_scale,
                 relu_shift, dx + lo * C);
  });
}

template <class T>
void backward_impl(int64_t rows, int64_t C, const T* x, const T* dy, const T* save_mean, const T* save_invstd,
                   const T* gamma, const T* relu_affine, T* dx, T* dgamma, T* dbeta) {
  check_shape(rows, C, "batchnorm_backward");
  const Prims<T> prims;
  std::vector<double> sum_dy, dot;
  backward_sums_impl(prims, rows, C, x, dy, save_mean, relu_affine, sum_dy, dot);
  for (int64_t c = 0; c < C; ++c) {
    if (dbeta) dbeta[c] = T(sum_dy[size_t(c)]);
    if (dgamma) dgamma[c] = T(dot[size_t(c)] * double(save_invstd[c]));
  }
  if (dx)
    backward_dx_impl(prims, rows, C, x, dy, save_mean, save_invstd, gamma, relu_affine, sum_dy.data(), dot.data(),
                     double(rows), dx);
}

// Synchronized batch norm's pieces (batchnorm.h).
template <class T>
void stats_public_impl(int64_t rows, int64_t C, const T* x, double* mean, double* m2) {
  check_shape(rows, C, "batchnorm_stats");
  std::vector<double> m, q;
  stats_impl(Prims<T>(), rows, C, x, m, q);
  std::copy(m.begin(), m.end(), mean);
  std::copy(q.begin(), q.end(), m2);
}

template <class T>
void backward_sums_public_impl(int64_t rows, int64_t C, const T* x, const T* dy, const T* mean, double* sum_dy,
                               double* sum_dy_dev) {
  check_shape(rows, C, "batchnorm_backward_sums");
  std::vector<double> a, b;
  backward_sums_impl(Prims<T>(), rows, C, x, dy, mean, static_cast<const T*>(nullptr), a, b);
  std::copy(a.begin(), a.end(), sum_dy);
  std::copy(b.begin(), b.end(), sum_dy_dev);
}

// The double backward (batchnorm.h): pass 1 sums per chunk, merged in chunk order; pass 2 elementwise.
// Per channel, d = x - mean, g = dy (masked by the fused ReLU), u = dP/d(dx):
//   sums = [sum g, sum g d, sum u, sum u d, sum u g].
template <class T>
void bwd2_sums_generic(int64_t rows, int64_t C, const T* x, const T* dy, const T* u, const T* center,
                       const T* relu_scale, const T* relu_shift, double* out, T* blk) {
  T* b[5];
  for (int k = 0; k < 5; ++k) b[k] = blk + k * C;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlockRows) {
    const int64_t r1 = std::min(rows, r0 + kBlockRows);
    std::fill(blk, blk + 5 * C, T(0));
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * C;
      const T* gr = dy + r * C;
      const T* ur = u + r * C;
      for (int64_t c = 0; c < C; ++c) {
        const T d = xr[c] - center[c];
        const bool keep = !relu_scale || std::fma(d, relu_scale[c], relu_shift[c]) > T(0);
        const T g = keep ? gr[c] : T(0), uv = ur[c];
        b[0][c] += g;
        b[1][c] += g * d;
        b[2][c] += uv;
        b[3][c] += uv * d;
        b[4][c] += uv * g;
      }
    }
    for (int k = 0; k < 5; ++k)
      for (int64_t c = 0; c < C; ++c) out[k * C + c] += double(b[k][c]);
  }
}

// ddy = mask (k1 u + k2 d + k3);  ddx = a1 u + a2 g + a3 d + a4  (coefficients per channel, in `k`:
// k1 k2 k3 a1 a2 a3 a4, C each). Either output may be null.
template <class T>
void bwd2_rows_generic(int64_t rows, int64_t C, const T* x, const T* dy, const T* u, const T* center,
                       const T* relu_scale, const T* relu_shift, const T* k, T* ddy, T* ddx) {
  const T *k1 = k, *k2 = k + C, *k3 = k + 2 * C, *a1 = k + 3 * C, *a2 = k + 4 * C, *a3 = k + 5 * C, *a4 = k + 6 * C;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = r * C + c;
      const T d = x[i] - center[c];
      const bool keep = !relu_scale || std::fma(d, relu_scale[c], relu_shift[c]) > T(0);
      const T g = keep ? dy[i] : T(0), uv = u[i];
      if (ddy) ddy[i] = keep ? uv * k1[c] + d * k2[c] + k3[c] : T(0);
      if (ddx) ddx[i] = uv * a1[c] + g * a2[c] + d * a3[c] + a4[c];
    }
}

LOWBIT_AVX512 void bwd2_sums_avx512(int64_t rows, int64_t C, const float* x, const float* dy, const float* u,
                                    const float* center, const float* relu_scale, const float* relu_shift,
                                    double* out) {
  for (int64_t r0 = 0; r0 < rows; r0 += kBlockRows) {
    const int64_t nr = std::min(kBlockRows, rows - r0);
    for (int64_t cb = 0; cb < C; cb += 16) {
      const __mmask16 m = tail_mask(C - cb);
      const __m512 cen = _mm512_maskz_loadu_ps(m, center + cb);
      __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0;
      const float* xp = x + r0 * C + cb;
      const float* gp = dy + r0 * C + cb;
      const float* up = u + r0 * C + cb;
      for (int64_t r = 0; r < nr; ++r, xp += C, gp += C, up += C) {
        const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, xp), cen);
        const __mmask16 keep = relu_scale ? positive_lanes(m, d, relu_scale + cb, relu_shift + cb) : m;
        const __m512 g = _mm512_maskz_loadu_ps(keep, gp), uv = _mm512_maskz_loadu_ps(m, up);
        s0 = _mm512_add_ps(s0, g);
        s1 = _mm512_fmadd_ps(g, d, s1);
        s2 = _mm512_add_ps(s2, uv);
        s3 = _mm512_fmadd_ps(uv, d, s3);
        s4 = _mm512_fmadd_ps(uv, g, s4);
      }
      add_to_double(out + cb, s0, m);
      add_to_double(out + C + cb, s1, m);
      add_to_double(out + 2 * C + cb, s2, m);
      add_to_double(out + 3 * C + cb, s3, m);
      add_to_double(out + 4 * C + cb, s4, m);
    }
  }
}

LOWBIT_AVX512 void bwd2_rows_avx512(int64_t rows, int64_t C, const float* x, const float* dy, const float* u,
                                    const float* center, const float* relu_scale, const float* relu_shift,
                                    const float* k, float* ddy, float* ddx) {
  for (int64_t r = 0; r < rows; ++r, x += C, dy += C, u += C, ddy += ddy ? C : 0, ddx += ddx ? C : 0)
    for (int64_t cb = 0; cb < C; cb += 16) {
      const __mmask16 m = tail_mask(C - cb);
      const float* kc = k + cb;  // coefficient j of these channels at kc + j * C
      const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + cb), _mm512_maskz_loadu_ps(m, center + cb));
      const __mmask16 keep = relu_scale ? positive_lanes(m, d, relu_scale + cb, relu_shift + cb) : m;
      const __m512 uv = _mm512_maskz_loadu_ps(m, u + cb);
      if (ddy) {
        const __m512 t =
            _mm512_fmadd_ps(uv, _mm512_maskz_loadu_ps(m, kc),
                            _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, kc + C), _mm512_maskz_loadu_ps(m, kc + 2 * C)));
        _mm512_mask_storeu_ps(ddy + cb, m, _mm512_maskz_mov_ps(keep, t));
      }
      if (ddx) {
        const __m512 g = _mm512_maskz_loadu_ps(keep, dy + cb);
        const __m512 t = _mm512_fmadd_ps(uv, _mm512_maskz_loadu_ps(m, kc + 3 * C),
                                         _mm512_fmadd_ps(g, _mm512_maskz_loadu_ps(m, kc + 4 * C),
                                                         _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, kc + 5 * C),
                                                                         _mm512_maskz_loadu_ps(m, kc + 6 * C))));
        _mm512_mask_storeu_ps(ddx + cb, m, t);
      }
    }
}

template <class T>
void backward_backward_impl(int64_t rows, int64_t C, const T* x, const T* dy, const T* save_mean, const T* save_invstd,
                            const T* gamma, const T* relu_affine, const T* u, T* ddy, T* ddx, T* dgamma) {
  check_shape(rows, C, "batchnorm_backward_backward");
  const bool simd = use_avx512<T>();
  const int64_t chunks = chunk_count(rows, C);
  const T* relu_scale = relu_affine;
  const T* relu_shift = relu_affine ? relu_affine + C : nullptr;
  std::vector<double> sums(static_cast<size_t>(chunks * 5 * C), 0.0);
  parallel_chunks(0, rows, chunks, [&](int64_t ci, int64_t lo, int64_t hi) {
    double* out = sums.data() + ci * 5 * C;
    const int64_t off = lo * C;
    if constexpr (std::is_same_v<T, float>) {
      if (simd) return bwd2_sums_avx512(hi - lo, C, x + off, dy + off, u + off, save_mean, relu_scale, relu_shift, out);
    }
    std::vector<T> blk(static_cast<size_t>(5 * C));
    bwd2_sums_generic(hi - lo, C, x + off, dy + off, u + off, save_mean, relu_scale, relu_shift, out, blk.data());
  });
  for (int64_t ci = 1; ci < chunks; ++ci)
    for (int64_t j = 0; j < 5 * C; ++j) sums[size_t(j)] += sums[size_t(ci * 5 * C + j)];
  // Per channel (batchnorm.h): A = mean g, B = mean g xhat, U = mean u, Ux = mean u xhat, Ug = mean u g - U A.
  std::vector<T> k(static_cast<size_t>(7 * C));
  const double M = double(rows);
  for (int64_t c = 0; c < C; ++c) {
    const double r = save_invstd[c], gm = gamma ? double(gamma[c]) : 1.0;
    const double sg = sums[size_t(c)], sgd = sums[size_t(C + c)], su = sums[size_t(2 * C + c)];
    const double sud = sums[size_t(3 * C + c)], sug = sums[size_t(4 * C + c)];
    const double A = sg / M, B = r * sgd / M, U = su / M, Ux = r * sud / M, Ug = sug / M - U * A;
    k[size_t(c)] = T(gm * r);
    k[size_t(C + c)] = T(-gm * r * r * Ux);
    k[size_t(2 * C + c)] = T(-gm * r * U);
    k[size_t(3 * C + c)] = T(-gm * r * r * B);
    k[size_t(4 * C + c)] = T(-gm * r * r * Ux);
    k[size_t(5 * C + c)] = T(gm * r * r * r * (3 * B * Ux - Ug));
    k[size_t(6 * C + c)] = T(gm * r * r * (B * U + Ux * A));
    if (dgamma) dgamma[c] = T(r * (sug - A * su - B * r * sud));
  }
  if (!ddy && !ddx) return;
  parallel_for(0, rows, elementwise_grain(C), [&](int64_t lo, int64_t hi) {
    const int64_t off = lo * C;
    T* py = ddy ? ddy + off : nullptr;
    T* px = ddx ? ddx + off : nullptr;
    if constexpr (std::is_same_v<T, float>) {
      if (simd)
        return bwd2_rows_avx512(hi - lo, C, x + off, dy + off, u + off, save_mean, relu_scale, relu_shift, k.data(), py,
                                px);
    }
    bwd2_rows_generic(hi - lo, C, x + off, dy + off, u + off, save_mean, relu_scale, relu_shift, k.data(), py, px);
  });
}

// ---------------------------------------------------------------------------------------------
// References: two-pass statistics and the textbook formulas in a wider type.
// ---------------------------------------------------------------------------------------------

template <class T>
using RefAcc = std::conditional_t<std::is_same_v<T, float>, double, long double>;

// Channel c's mean and sum of squared deviations, two passes in RefAcc.
template <class T>
std::pair<RefAcc<T>, RefAcc<T>> ref_channel_stats(int64_t rows, int64_t C, const T* x, int64_t c) {
  using A = RefAcc<T>;
  A sum = 0;
  for (int64_t r = 0; r < rows; ++r) sum += x[r * C + c];
  const A mean = sum / A(rows);
  A sq = 0;
  for (int64_t r = 0; r < rows; ++r) sq += (x[r * C + c] - mean) * (x[r * C + c] - mean);
  return {mean, sq};
}

template <class T>
void forward_train_ref_impl(int64_t rows, int64_t C, const T* x, const T* gamma, const T* beta, double eps, T* y,
                            T* save_mean, T* save_invstd, T* var_unbiased, T* relu_affine) {
  check_shape(rows, C, "batchnorm_forward_train_ref");
  using A = RefAcc<T>;
  for (int64_t c = 0; c < C; ++c) {
    const auto [mean, sq] = ref_channel_stats(rows, C, x, c);
    const A var = sq / A(rows);
    const A invstd = A(1) / std::sqrt(var + A(eps));
    const A g = gamma ? A(gamma[c]) : A(1), b = beta ? A(beta[c]) : A(0);
    for (int64_t r = 0; r < rows; ++r) {
      const T z = T((x[r * C + c] - mean) * invstd * g + b);
      y[r * C + c] = relu_affine && !(z > T(0)) ? T(0) : z;
    }
    if (relu_affine) {  // the affine as the fast kernel defines it (center = T(mean))
      relu_affine[c] = T(invstd * g);
      relu_affine[C + c] = T(b - (mean - A(T(mean))) * invstd * g);
    }
    if (save_mean) save_mean[c] = T(mean);
    if (save_invstd) save_invstd[c] = T(invstd);
    if (var_unbiased) var_unbiased[c] = T(sq / A(rows - 1));
  }
}

template <class T>
void forward_eval_ref_impl(int64_t rows, int64_t C, const T* x, const T* running_mean, const T* running_var,
                           const T* gamma, const T* beta, double eps, bool relu, T* y) {
  check_shape(rows, C, "batchnorm_forward_eval_ref");
  using A = RefAcc<T>;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const A g = gamma ? A(gamma[c]) : A(1), b = beta ? A(beta[c]) : A(0);
      const T z = T((A(x[r * C + c]) - A(running_mean[c])) / std::sqrt(A(running_var[c]) + A(eps)) * g + b);
      y[r * C + c] = relu && !(z > T(0)) ? T(0) : z;
    }
}

template <class T>
void backward_ref_impl(int64_t rows, int64_t C, const T* x, const T* dy, const T* save_mean, const T* save_invstd,
                       const T* gamma, const T* relu_affine, T* dx, T* dgamma, T* dbeta) {
  check_shape(rows, C, "batchnorm_backward_ref");
  using A = RefAcc<T>;
  for (int64_t c = 0; c < C; ++c) {
    const A mean = save_mean[c], invstd = save_invstd[c], g = gamma ? A(gamma[c]) : A(1);
    // The fused ReLU's gradient: dy where the forward's z = fma(x - mean, scale, shift) was > 0.
    auto grad = [&](int64_t r) {
      const T xv = x[r * C + c];
      const bool keep = !relu_affine || std::fma(xv - save_mean[c], relu_affine[c], relu_affine[C + c]) > T(0);
      return keep ? A(dy[r * C + c]) : A(0);
    };
    A sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t r = 0; r < rows; ++r) {
      sum_dy += grad(r);
      sum_dy_xhat += grad(r) * (A(x[r * C + c]) - mean) * invstd;
    }
    if (dbeta) dbeta[c] = T(sum_dy);
    if (dgamma) dgamma[c] = T(sum_dy_xhat);
    if (dx)
      for (int64_t r = 0; r < rows; ++r) {
        const A xhat = (A(x[r * C + c]) - mean) * invstd;
        dx[r * C + c] = T(g * invstd / A(rows) * (A(rows) * grad(r) - sum_dy - xhat * sum_dy_xhat));
      }
  }
}

template <class T>
void backward_backward_ref_impl(int64_t rows, int64_t C, const T* x, const T* dy, const T* save_mean,
                                const T* save_invstd, const T* gamma, const T* relu_affine, const T* u, T* ddy, T* ddx,
                                T* dgamma) {
  check_shape(rows, C, "batchnorm_backward_backward_ref");
  using A = RefAcc<T>;
  const A M = A(rows);
  for (int64_t c = 0; c < C; ++c) {
    const A mean = save_mean[c], r = save_invstd[c], gm = gamma ? A(gamma[c]) : A(1);
    auto keep = [&](int64_t i) {
      return !relu_affine || std::fma(x[i] - save_mean[c], relu_affine[c], relu_affine[C + c]) > T(0);
    };
    auto g = [&](int64_t i) { return keep(i) ? A(dy[i]) : A(0); };
    auto xhat = [&](int64_t i) { return (A(x[i]) - mean) * r; };
    A mg = 0, mgx = 0, mu = 0, mux = 0, mug = 0;
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t i = row * C + c;
      mg += g(i), mgx += g(i) * xhat(i), mu += A(u[i]), mux += A(u[i]) * xhat(i), mug += A(u[i]) * g(i);
    }
    mg /= M, mgx /= M, mu /= M, mux /= M, mug /= M;
    const A ug = mug - mu * mg;
    A dg = 0;
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t i = row * C + c;
      const A uv = u[i], xh = xhat(i);
      // ddy = gamma r (u - U - xhat Ux); ddx = gamma r^2 (-B (u - U) - Ux (g - A) + xhat (3 B Ux - Ug)).
      if (ddy) ddy[i] = keep(i) ? T(gm * r * (uv - mu - xh * mux)) : T(0);
      if (ddx) ddx[i] = T(gm * r * r * (-mgx * (uv - mu) - mux * (g(i) - mg) + xh * (3 * mgx * mux - ug)));
      dg += uv * (g(i) - mg - xh * mgx);
    }
    if (dgamma) dgamma[c] = T(r * dg);
  }
}

template <class T>
void update_running_impl(int64_t C, double momentum, const T* batch_mean, const T* batch_var, T* running_mean,
                         T* running_var) {
  for (int64_t c = 0; c < C; ++c) {
    running_mean[c] = T((1.0 - momentum) * double(running_mean[c]) + momentum * double(batch_mean[c]));
    running_var[c] = T((1.0 - momentum) * double(running_var[c]) + momentum * double(batch_var[c]));
  }
}

template <class T>
void stats_ref_impl(int64_t rows, int64_t C, const T* x, double* mean, double* m2) {
  check_shape(rows, C, "batchnorm_stats_ref");
  for (int64_t c = 0; c < C; ++c) {
    const auto [m, sq] = ref_channel_stats(rows, C, x, c);
    mean[c] = double(m), m2[c] = double(sq);
  }
}

template <class T>
void backward_sums_ref_impl(int64_t rows, int64_t C, const T* x, const T* dy, const T* mean, double* sum_dy,
                            double* sum_dy_dev) {
  check_shape(rows, C, "batchnorm_backward_sums_ref");
  using A = RefAcc<T>;
  for (int64_t c = 0; c < C; ++c) {
    A s = 0, d = 0;
    for (int64_t r = 0; r < rows; ++r) {
      s += A(dy[r * C + c]);
      d += A(dy[r * C + c]) * (A(x[r * C + c]) - A(mean[c]));
    }
    sum_dy[c] = double(s), sum_dy_dev[c] = double(d);
  }
}

template <class T>
void backward_dx_ref_impl(int64_t rows, int64_t C, const T* x, const T* dy, const T* mean, const T* invstd,
                          const T* gamma, const double* sum_dy, const double* sum_dy_dev, double count, T* dx) {
  check_shape(rows, C, "batchnorm_backward_dx_ref");
  using A = RefAcc<T>;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const A is = invstd[c], g = gamma ? A(gamma[c]) : A(1);
      const A xhat = (A(x[r * C + c]) - A(mean[c])) * is;
      dx[r * C + c] =
          T(g * is * (A(dy[r * C + c]) - A(sum_dy[c]) / A(count) - xhat * is * A(sum_dy_dev[c]) / A(count)));
    }
}

}  // namespace

#define LOWBIT_BN_DEFINE(T)                                                                                           \
  void batchnorm_forward_train(int64_t rows, int64_t C, const T* x, const T* gamma, const T* beta, double eps, T* y,  \
                               T* save_mean, T* save_invstd, T* batch_var_unbiased, T* relu_affine) {                 \
    forward_train_impl(rows, C, x, gamma, beta, eps, y, save_mean, save_invstd, batch_var_unbiased, relu_affine);     \
  }                                                                                                                   \
  void batchnorm_forward_eval(int64_t rows, int64_t C, const T* x, const T* running_mean, const T* running_var,       \
                              const T* gamma, const T* beta, double eps, T* y, bool relu) {                           \
    forward_eval_impl(rows, C, x, running_mean, running_var, gamma, beta, eps, relu, y);                              \
  }                                                                                                                   \
  void batchnorm_backward(int64_t rows, int64_t C, const T* x, const T* dy, const T* save_mean, const T* save_invstd, \
                          const T* gamma, T* dx, T* dgamma, T* dbeta, const T* relu_affine) {                         \
    backward_impl(rows, C, x, dy, save_mean, save_invstd, gamma, relu_affine, dx, dgamma, dbeta);                     \
  }                                                                                                                   \
  void batchnorm_forward_train_ref(int64_t rows, int64_t C, const T* x, const T* gamma, const T* beta, double eps,    \
                                   T* y, T* save_mean, T* save_invstd, T* batch_var_unbiased, T* relu_affine) {       \
    forward_train_ref_impl(rows, C, x, gamma, beta, eps, y, save_mean, save_invstd, batch_var_unbiased, relu_affine); \
  }                                                                                                                   \
  void batchnorm_forward_eval_ref(int64_t rows, int64_t C, const T* x, const T* running_mean, const T* running_var,   \
                                  const T* gamma, const T* beta, double eps, T* y, bool relu) {                       \
    forward_eval_ref_impl(rows, C, x, running_mean, running_var, gamma, beta, eps, relu, y);                          \
  }                                                                                                                   \
  void batchnorm_backward_ref(int64_t rows, int64_t C, const T* x, const T* dy, const T* save_mean,                   \
                              const T* save_invstd, const T* gamma, T* dx, T* dgamma, T* dbeta,                       \
                              const T* relu_affine) {                                                                 \
    backward_ref_impl(rows, C, x, dy, save_mean, save_invstd, gamma, relu_affine, dx, dgamma, dbeta);                 \
  }                                                                                                                   \
  void batchnorm_backward_backward(int64_t rows, int64_t C, const T* x, const T* dy, const T* mean, const T* invstd,  \
                                   const T* gamma, const T* relu, const T* u, T* ddy, T* ddx, T* dgamma) {            \
    backward_backward_impl(rows, C, x, dy, mean, invstd, gamma, relu, u, ddy, ddx, dgamma);                           \
  }                                                                                                                   \
  void batchnorm_backward_backward_ref(int64_t rows, int64_t C, const T* x, const T* dy, const T* mean,               \
                                       const T* invstd, const T* gamma, const T* relu, const T* u, T* ddy, T* ddx,    \
                                       T* dgamma) {                                                                   \
    backward_backward_ref_impl(rows, C, x, dy, mean, invstd, gamma, relu, u, ddy, ddx, dgamma);                       \
  }                                                                                                                   \
  void batchnorm_stats(int64_t rows, int64_t C, const T* x, double* mean, double* m2) {                               \
    stats_public_impl(rows, C, x, mean, m2);                                                                          \
  }                                                                                                                   \
  void batchnorm_stats_ref(int64_t rows, int64_t C, const T* x, double* mean, double* m2) {                           \
    stats_ref_impl(rows, C, x, mean, m2);                                                                             \
  }                                                                                                                   \
  void batchnorm_backward_sums(int64_t rows, int64_t C, const T* x, const T* dy, const T* mean, double* sum_dy,       \
                               double* sum_dy_dev) {                                                                  \
    backward_sums_public_impl(rows, C, x, dy, mean, sum_dy, sum_dy_dev);                                              \
  }                                                                                                                   \
  void batchnorm_backward_sums_ref(int64_t rows, int64_t C, const T* x, const T* dy, const T* mean, double* sum_dy,   \
                                   double* sum_dy_dev) {                                                              \
    backward_sums_ref_impl(rows, C, x, dy, mean, sum_dy, sum_dy_dev);                                                 \
  }                                                                                                                   \
  void batchnorm_backward_dx(int64_t rows, int64_t C, const T* x, const T* dy, const T* mean, const T* invstd,        \
                             const T* gamma, const double* sum_dy, const double* sum_dy_dev, double count, T* dx) {   \
    check_shape(rows, C, "batchnorm_backward_dx");                                                                    \
    backward_dx_impl(Prims<T>(), rows, C, x, dy, mean, invstd, gamma, static_cast<const T*>(nullptr), sum_dy,         \
                     sum_dy_dev, count, dx);                                                                          \
  }                                                                                                                   \
  void batchnorm_backward_dx_ref(int64_t rows, int64_t C, const T* x, const T* dy, const T* mean, const T* invstd,    \
                                 const T* gamma, const double* sum_dy, const double* sum_dy_dev, double count,        \
                                 T* dx) {                                                                             \
    backward_dx_ref_impl(rows, C, x, dy, mean, invstd, gamma, sum_dy, sum_dy_dev, count, dx);                         \
  }                                                                                                                   \
  void batchnorm_update_running_stats(int64_t C, double momentum, const T* batch_mean, const T* batch_var_unbiased,   \
                                      T* running_mean, T* running_var) {                                              \
    update_running_impl(C, momentum, batch_mean, batch_var_unbiased, running_mean, running_var);                      \
  }

LOWBIT_BN_DEFINE(float)
LOWBIT_BN_DEFINE(double)
#undef LOWBIT_BN_DEFINE

}  // namespace lowbit::kernels
