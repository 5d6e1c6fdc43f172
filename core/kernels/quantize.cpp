#include "core/kernels/quantize.h"

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

constexpr int64_t kGrain = 1 << 16;

template <class T>
T clamp_scalar(T x, T lo, T hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

template <class T>
void forward_portable(int64_t b, int64_t e, const T* x, T lo, T hi, T scale, T inv_scale, T* y) {
  for (int64_t i = b; i < e; ++i) y[i] = std::nearbyint(clamp_scalar(x[i], lo, hi) * scale) * inv_scale;
}

template <class T>
void backward_portable(int64_t b, int64_t e, const T* x, const T* dy, T lo, T hi, T* dx) {
  for (int64_t i = b; i < e; ++i) dx[i] = (x[i] >= lo && x[i] <= hi) ? dy[i] : T(0);
}

LOWBIT_AVX512 void forward_avx512(int64_t b, int64_t e, const float* x, float lo, float hi, float scale,
                                  float inv_scale, float* y) {
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi), vs = _mm512_set1_ps(scale),
               vinv = _mm512_set1_ps(inv_scale);
  int64_t i = b;
  for (; i + 16 <= e; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    // x < lo ? lo : (x > hi ? hi : x): NaN compares false both ways and passes through.
    __m512 c = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, vhi, _CMP_GT_OQ), v, vhi);
    c = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, vlo, _CMP_LT_OQ), c, vlo);
    // (the masked form: GCC 12 warns about the unmasked intrinsic's undefined pass-through operand)
    const __m512 p = _mm512_mul_ps(c, vs);
    const __m512 r = _mm512_mask_roundscale_ps(p, 0xFFFF, p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm512_storeu_ps(y + i, _mm512_mul_ps(r, vinv));
  }
  forward_portable(i, e, x, lo, hi, scale, inv_scale, y);
}

LOWBIT_AVX512 void backward_avx512(int64_t b, int64_t e, const float* x, const float* dy, float lo, float hi,
                                   float* dx) {
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  int64_t i = b;
  for (; i + 16 <= e; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __mmask16 in = _mm512_cmp_ps_mask(v, vlo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(v, vhi, _CMP_LE_OQ);
    _mm512_storeu_ps(dx + i, _mm512_maskz_mov_ps(in, _mm512_loadu_ps(dy + i)));
  }
  backward_portable(i, e, x, dy, lo, hi, dx);
}

// ---- Uhlich's uniform grid ----

// One element: its code value and region, in double (header).
struct GridPoint {
  double y, s;
  bool inside, outside;
};
[[gnu::always_inline]] inline GridPoint grid_point(double v, double step, double inv_step, double range, bool signed_) {
  const double a = signed_ ? std::fabs(v) : v;
  const double s = signed_ ? (v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0)) : 1.0;
  const double q = step * std::floor(std::min(a, range) * inv_step + 0.5);  // min(a, q): q itself outside
  return {a < 0 ? 0.0 : s * q, s, a >= 0 && a <= range, a > range};
}

template <class T>
[[gnu::always_inline]] inline void grid_forward_rows(int64_t b, int64_t e, const T* x, double step, double inv_step,
                                                     double range, bool signed_, T* y) {
  for (int64_t i = b; i < e; ++i) y[i] = T(grid_point(double(x[i]), step, inv_step, range, signed_).y);
}

// The sums in kLanes running partial sums (element i into lane (i - b) % kLanes, added in lane
// order at the end): a fixed order that vectorizes.
constexpr int kLanes = 16;

// The backward kernels' two sums over [b, e) in those lanes: term(i) gives element i's two terms
// (and writes dx[i]); first0 / second0, when given, are lanes the vector path already summed, which
// the tail continues.
template <class Term>
[[gnu::always_inline]] inline std::pair<double, double> lane_sums(int64_t b, int64_t e, const double* first0,
                                                                  const double* second0, Term&& term) {
  double first[kLanes] = {}, second[kLanes] = {};
  if (first0)
    for (int l = 0; l < kLanes; ++l) first[l] = first0[l], second[l] = second0[l];
  auto one = [&](int64_t i, int lane) {
    const std::pair<double, double> t = term(i);
    first[lane] += t.first;
    second[lane] += t.second;
  };
  int64_t i = b;
  for (; i + kLanes <= e; i += kLanes)
    for (int lane = 0; lane < kLanes; ++lane) one(i + lane, lane);
  for (int lane = 0; i < e; ++i, ++lane) one(i, lane);
  std::pair<double, double> sums{0.0, 0.0};
  for (int lane = 0; lane < kLanes; ++lane) sums.first += first[lane], sums.second += second[lane];
  return sums;
}

template <class T>
[[gnu::always_inline]] inline UniformGridSums grid_backward_rows(int64_t b, int64_t e, const T* x, const T* dy,
                                                                 double step, double inv_step, double range,
                                                                 bool signed_, T* dx, const double* in0 = nullptr,
                                                                 const double* out0 = nullptr) {
  // in0 / out0: lanes already summed (the vector path's), continued here for its tail.
  const auto [inside, outside] = lane_sums(b, e, in0, out0, [&](int64_t i) {
    const double v = double(x[i]), g = double(dy[i]);
    const GridPoint p = grid_point(v, step, inv_step, range, signed_);
    const double stored = double(T(p.y));  // the forward's value in the element type
    dx[i] = p.inside ? dy[i] : T(0);
    return std::pair<double, double>{p.inside ? g * (stored - v) : 0.0, p.outside ? g * p.s : 0.0};
  });
  return {inside, outside};
}

// The same loops compiled for AVX-512 (the compiler vectorizes them there).
LOWBIT_AVX512 void grid_forward_avx512(int64_t b, int64_t e, const float* x, double step, double inv_step, double range,
                                       bool signed_, float* y) {
  grid_forward_rows(b, e, x, step, inv_step, range, signed_, y);
}
// By hand (the lane sums keep the compiler from vectorizing grid_backward_rows): 16 elements a step,
// two halves of 8 doubles, the same lanes and operations as grid_backward_rows, so the sums are
// bit-identical to it.
LOWBIT_AVX512 UniformGridSums grid_backward_avx512(int64_t b, int64_t e, const float* x, const float* dy, double step,
                                                   double inv_step, double range, bool signed_, float* dx) {
  constexpr __mmask8 all = 0xFF;  // maskz forms: see requant.cpp
  const __m512d vstep = _mm512_set1_pd(step), vinv = _mm512_set1_pd(inv_step), vrange = _mm512_set1_pd(range),
                half = _mm512_set1_pd(0.5), zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0),
                minus = _mm512_set1_pd(-1.0);
  __m512d in[2] = {zero, zero}, out[2] = {zero, zero};
  int64_t i = b;
  for (; i + kLanes <= e; i += kLanes) {
    const __m512 gv = _mm512_loadu_ps(dy + i);
    __mmask16 inside16 = 0;
    for (int h = 0; h < 2; ++h) {
      const __m256 xh = _mm256_loadu_ps(x + i + 8 * h);
      const __m256 gh = _mm256_loadu_ps(dy + i + 8 * h);
      const __m512d v = _mm512_maskz_cvtps_pd(all, xh), g = _mm512_maskz_cvtps_pd(all, gh);
      const __m512d a = signed_ ? _mm512_mask_abs_pd(v, all, v) : v;
      __m512d sg = one;
      if (signed_) {
        sg = _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(v, zero, _CMP_NEQ_OQ), one);
        sg = _mm512_mask_mov_pd(sg, _mm512_cmp_pd_mask(v, zero, _CMP_LT_OQ), minus);
      }
      const __m512d c = _mm512_maskz_min_pd(all, a, vrange);  // a > range (or NaN: not inside, not outside) -> range
      const __m512d t = _mm512_add_pd(_mm512_mul_pd(c, vinv), half);
      const __m512d q =
          _mm512_mul_pd(vstep, _mm512_maskz_roundscale_pd(all, t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC));
      const __mmask8 below = _mm512_cmp_pd_mask(a, zero, _CMP_LT_OQ);
      const __m512d y = _mm512_maskz_mov_pd(__mmask8(~below), _mm512_mul_pd(sg, q));
      const __m512d stored =
          _mm512_maskz_cvtps_pd(all, _mm512_maskz_cvtpd_ps(all, y));  // in the element type, as the forward
      const __mmask8 ins = _mm512_cmp_pd_mask(a, zero, _CMP_GE_OQ) & _mm512_cmp_pd_mask(a, vrange, _CMP_LE_OQ);
      const __mmask8 outs = _mm512_cmp_pd_mask(a, vrange, _CMP_GT_OQ);
      in[h] = _mm512_add_pd(in[h], _mm512_maskz_mov_pd(ins, _mm512_mul_pd(g, _mm512_sub_pd(stored, v))));
      out[h] = _mm512_add_pd(out[h], _mm512_maskz_mov_pd(outs, _mm512_mul_pd(g, sg)));
      inside16 |= __mmask16(ins) << (8 * h);
    }
    _mm512_storeu_ps(dx + i, _mm512_maskz_mov_ps(inside16, gv));
  }
  double lanes_in[kLanes], lanes_out[kLanes];
  _mm512_storeu_pd(lanes_in, in[0]), _mm512_storeu_pd(lanes_in + 8, in[1]);
  _mm512_storeu_pd(lanes_out, out[0]), _mm512_storeu_pd(lanes_out + 8, out[1]);
  // the tail continues the lanes as grid_backward_rows does
  const UniformGridSums tail = grid_backward_rows(i, e, x, dy, step, inv_step, range, signed_, dx, lanes_in, lanes_out);
  return tail;
}

void check_grid(const UniformGrid& g, const char* op) {
  LOWBIT_CHECK(std::isfinite(g.step) && g.step > 0 && std::isfinite(g.range) && g.range >= 0, op,
               ": step and range must be finite, step > 0, got ", g.step, " and ", g.range);
}

constexpr int64_t kGridChunk = 1 << 15;  // the sums' chunks: fixed by n alone

// A backward kernel's sums over the chunks kGridChunk fixes from n alone: chunk c's (b, e) ->
// sums, serially (ref) or in parallel, added in chunk order by add(total, part).
template <class Sums, class Chunk, class Add>
Sums sum_over_chunks(int64_t n, bool ref, Chunk&& chunk, Add&& add) {
  const int64_t chunks = std::max<int64_t>(1, (n + kGridChunk - 1) / kGridChunk);
  std::vector<Sums> part(static_cast<size_t>(chunks));
  auto run = [&](int64_t c, int64_t b, int64_t e) { part[size_t(c)] = chunk(b, e); };
  if (ref) {
    for (int64_t c = 0; c < chunks; ++c) run(c, n * c / chunks, n * (c + 1) / chunks);
  } else {
    parallel_chunks(0, n, chunks, run);
  }
  Sums total;
  for (const auto& p : part) add(total, p);
  return total;
}

template <class T>
void grid_forward(const UniformGrid& g, int64_t n, const T* x, T* y, bool ref) {
  check_grid(g, "uniform_grid_forward");
  const double inv = 1.0 / g.step;
  if (ref) return grid_forward_rows(0, n, x, g.step, inv, g.range, g.signed_, y);
  const bool simd = std::is_same_v<T, float> && avx512_enabled();
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    if constexpr (std::is_same_v<T, float>)
      if (simd) return grid_forward_avx512(b, e, x, g.step, inv, g.range, g.signed_, y);
    grid_forward_rows(b, e, x, g.step, inv, g.range, g.signed_, y);
  });
}

template <class T>
UniformGridSums grid_backward(const UniformGrid& g, int64_t n, const T* x, const T* dy, T* dx, bool ref) {
  check_grid(g, "uniform_grid_backward");
  const double inv = 1.0 / g.step;
  return sum_over_chunks<UniformGridSums>(
      n, ref,
      [&](int64_t b, int64_t e) {
        if constexpr (std::is_same_v<T, float>)
          if (!ref && avx512_enabled()) return grid_backward_avx512(b, e, x, dy, g.step, inv, g.range, g.signed_, dx);
        return grid_backward_rows(b, e, x, dy, g.step, inv, g.range, g.signed_, dx);
      },
      [](UniformGridSums& t, const UniformGridSums& p) { t.inside += p.inside, t.outside += p.outside; });
}

// ---- Uhlich's power-of-two grid ----

struct Pow2Point {
  double y, ratio, s;  // y = s p, ratio = p / a between lo and hi (else 0)
  bool low, high;
};
[[gnu::always_inline]] inline Pow2Point pow2_point(double v, double lo, double hi, bool signed_) {
  if (!(v == v) || (!signed_ && v <= 0)) return {v == v ? 0.0 : v, 0.0, 0.0, false, false};  // NaN; unsigned <= 0
  const double s = v >= 0 ? 1.0 : -1.0, a = std::fabs(v);
  if (a <= lo) return {s * lo, 0.0, s, true, false};
  if (a > hi) return {s * hi, 0.0, s, false, true};
  const double p = std::min(std::max(std::exp2(std::round(std::log2(a))), lo), hi);
  return {s * p, p / a, s, false, false};
}

template <class T>
void pow2_forward_rows(int64_t b, int64_t e, const T* x, double lo, double hi, bool signed_, T* y) {
  for (int64_t i = b; i < e; ++i) y[i] = T(pow2_point(double(x[i]), lo, hi, signed_).y);
}

template <class T>
Pow2GridSums pow2_backward_rows(int64_t b, int64_t e, const T* x, const T* dy, double lo, double hi, bool signed_,
                                T* dx, const double* low0 = nullptr, const double* high0 = nullptr) {
  const auto [low, high] = lane_sums(b, e, low0, high0, [&](int64_t i) {
    const Pow2Point p = pow2_point(double(x[i]), lo, hi, signed_);
    dx[i] = dy[i] * T(p.ratio);
    const double g = double(dy[i]);
    return std::pair<double, double>{p.low ? g * p.s : 0.0, p.high ? g * p.s : 0.0};
  });
  return {low, high};
}

// 2^round(log2 a) for normal a > 0, exactly: a = m 2^e (m in [1, 2)), e + (m > sqrt 2) (no float or
// double equals sqrt 2; kSqrt2Below is the double below it).
constexpr double kSqrt2Below = 1.4142135623730949;

LOWBIT_AVX512 __m512d pow2_values(__m512d v, __m512d lo, __m512d hi, bool signed_, __m512d* ratio, __mmask8* low,
                                  __mmask8* high, __m512d* sg) {
  constexpr __mmask8 all = 0xFF;
  const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0);
  const __m512d a = _mm512_mask_abs_pd(v, all, v);
  const __mmask8 nan = _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q);
  const __mmask8 live = signed_ ? __mmask8(~nan) : _mm512_cmp_pd_mask(v, zero, _CMP_GT_OQ);  // NaN: not > 0
  *sg = _mm512_mask_mov_pd(one, _mm512_cmp_pd_mask(v, zero, _CMP_LT_OQ), _mm512_set1_pd(-1.0));
  *low = live & _mm512_cmp_pd_mask(a, lo, _CMP_LE_OQ);
  *high = live & _mm512_cmp_pd_mask(a, hi, _CMP_GT_OQ);
  const __mmask8 mid = live & __mmask8(~(*low | *high));
  const __m512d e = _mm512_maskz_getexp_pd(all, a);
  const __m512d m = _mm512_maskz_getmant_pd(all, a, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero);
  const __m512d k = _mm512_mask_add_pd(e, _mm512_cmp_pd_mask(m, _mm512_set1_pd(kSqrt2Below), _CMP_GT_OQ), e, one);
  __m512d p = _mm512_maskz_scalef_pd(all, one, k);
  p = _mm512_maskz_min_pd(all, _mm512_maskz_max_pd(all, p, lo), hi);
  p = _mm512_mask_mov_pd(p, *low, lo);
  p = _mm512_mask_mov_pd(p, *high, hi);
  *ratio = _mm512_maskz_div_pd(mid, p, a);
  __m512d y = _mm512_maskz_mul_pd(live, *sg, p);
  return _mm512_mask_mov_pd(y, nan, v);  // NaN passes through
}

LOWBIT_AVX512 void pow2_forward_avx512(int64_t b, int64_t e, const float* x, double lo, double hi, bool signed_,
                                       float* y) {
  constexpr __mmask8 all = 0xFF;
  const __m512d vlo = _mm512_set1_pd(lo), vhi = _mm512_set1_pd(hi);
  int64_t i = b;
  for (; i + 8 <= e; i += 8) {
    __m512d ratio, sg;
    __mmask8 low, high;
    const __m512d v = _mm512_maskz_cvtps_pd(all, _mm256_loadu_ps(x + i));
    _mm256_storeu_ps(y + i, _mm512_maskz_cvtpd_ps(all, pow2_values(v, vlo, vhi, signed_, &ratio, &low, &high, &sg)));
  }
  pow2_forward_rows(i, e, x, lo, hi, signed_, y);
}

LOWBIT_AVX512 Pow2GridSums pow2_backward_avx512(int64_t b, int64_t e, const float* x, const float* dy, double lo,
                                                double hi, bool signed_, float* dx) {
  constexpr __mmask8 all = 0xFF;
  const __m512d vlo = _mm512_set1_pd(lo), vhi = _mm512_set1_pd(hi), zero = _mm512_setzero_pd();
  __m512d lows[2] = {zero, zero}, highs[2] = {zero, zero};
  int64_t i = b;
  for (; i + kLanes <= e; i += kLanes)
    for (int h = 0; h < 2; ++h) {
      __m512d ratio, sg;
      __mmask8 low, high;
      const __m512d v = _mm512_maskz_cvtps_pd(all, _mm256_loadu_ps(x + i + 8 * h));
      pow2_values(v, vlo, vhi, signed_, &ratio, &low, &high, &sg);
      const __m256 gf = _mm256_loadu_ps(dy + i + 8 * h);
      _mm256_storeu_ps(dx + i + 8 * h, _mm256_mul_ps(gf, _mm512_maskz_cvtpd_ps(all, ratio)));
      const __m512d gs = _mm512_maskz_mul_pd(all, _mm512_maskz_cvtps_pd(all, gf), sg);
      lows[h] = _mm512_add_pd(lows[h], _mm512_maskz_mov_pd(low, gs));
      highs[h] = _mm512_add_pd(highs[h], _mm512_maskz_mov_pd(high, gs));
    }
  double l[kLanes], hh[kLanes];
  _mm512_storeu_pd(l, lows[0]), _mm512_storeu_pd(l + 8, lows[1]);
  _mm512_storeu_pd(hh, highs[0]), _mm512_storeu_pd(hh + 8, highs[1]);
  return pow2_backward_rows(i, e, x, dy, lo, hi, signed_, dx, l, hh);
}

void check_pow2_grid(const Pow2Grid& g, const char* op) {
  LOWBIT_CHECK(std::isfinite(g.lo) && std::isfinite(g.hi) && g.lo > 0 && g.lo <= g.hi, op,
               ": need 0 < lo <= hi, finite, got ", g.lo, " and ", g.hi);
}

template <class T>
void pow2_forward(const Pow2Grid& g, int64_t n, const T* x, T* y, bool ref) {
  check_pow2_grid(g, "pow2_grid_forward");
  if (ref) return pow2_forward_rows(0, n, x, g.lo, g.hi, g.signed_, y);
  const bool simd = std::is_same_v<T, float> && avx512_enabled();
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    if constexpr (std::is_same_v<T, float>)
      if (simd) return pow2_forward_avx512(b, e, x, g.lo, g.hi, g.signed_, y);
    pow2_forward_rows(b, e, x, g.lo, g.hi, g.signed_, y);
  });
}

template <class T>
Pow2GridSums pow2_backward(const Pow2Grid& g, int64_t n, const T* x, const T* dy, T* dx, bool ref) {
  check_pow2_grid(g, "pow2_grid_backward");
  return sum_over_chunks<Pow2GridSums>(
      n, ref,
      [&](int64_t b, int64_t e) {
        if constexpr (std::is_same_v<T, float>)
          if (!ref && avx512_enabled()) return pow2_backward_avx512(b, e, x, dy, g.lo, g.hi, g.signed_, dx);
        return pow2_backward_rows(b, e, x, dy, g.lo, g.hi, g.signed_, dx);
      },
      [](Pow2GridSums& t, const Pow2GridSums& p) { t.low += p.low, t.high += p.high; });
}

// ---- PACT's open mask ----

template <class T>
ClipSums open_backward_rows(int64_t b, int64_t e, const T* x, const T* dy, T lo, T hi, T* dx,
                            const double* low0 = nullptr, const double* high0 = nullptr) {
  const auto [low, high] = lane_sums(b, e, low0, high0, [&](int64_t i) {
    const T v = x[i];
    dx[i] = (v > lo && v < hi) ? dy[i] : T(0);
    return std::pair<double, double>{v <= lo ? double(dy[i]) : 0.0, v >= hi ? double(dy[i]) : 0.0};
  });
  return {low, high};
}

// The lanes and operations of open_backward_rows, 16 floats a step, so the sums are bit-identical.
LOWBIT_AVX512 ClipSums open_backward_avx512(int64_t b, int64_t e, const float* x, const float* dy, float lo, float hi,
                                            float* dx) {
  constexpr __mmask8 all = 0xFF;  // maskz forms: see requant.cpp
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  const __m512d zero = _mm512_setzero_pd();
  __m512d low[2] = {zero, zero}, high[2] = {zero, zero};
  int64_t i = b;
  for (; i + kLanes <= e; i += kLanes) {
    const __m512 v = _mm512_loadu_ps(x + i), g = _mm512_loadu_ps(dy + i);
    const __mmask16 pass = _mm512_cmp_ps_mask(v, vlo, _CMP_GT_OQ) & _mm512_cmp_ps_mask(v, vhi, _CMP_LT_OQ);
    const __mmask16 below = _mm512_cmp_ps_mask(v, vlo, _CMP_LE_OQ), above = _mm512_cmp_ps_mask(v, vhi, _CMP_GE_OQ);
    _mm512_storeu_ps(dx + i, _mm512_maskz_mov_ps(pass, g));
    for (int h = 0; h < 2; ++h) {
      const __m512d gd = _mm512_maskz_cvtps_pd(
          all, h ? _mm512_maskz_extractf32x8_ps(0xFF, g, 1) : _mm512_maskz_extractf32x8_ps(0xFF, g, 0));
      low[h] = _mm512_add_pd(low[h], _mm512_maskz_mov_pd(__mmask8(below >> (8 * h)), gd));
      high[h] = _mm512_add_pd(high[h], _mm512_maskz_mov_pd(__mmask8(above >> (8 * h)), gd));
    }
  }
  double lanes_low[kLanes], lanes_high[kLanes];
  _mm512_storeu_pd(lanes_low, low[0]), _mm512_storeu_pd(lanes_low + 8, low[1]);
  _mm512_storeu_pd(lanes_high, high[0]), _mm512_storeu_pd(lanes_high + 8, high[1]);
  return open_backward_rows(i, e, x, dy, lo, hi, dx, lanes_low, lanes_high);
}

template <class T>
ClipSums open_backward(int64_t n, const T* x, const T* dy, T lo, T hi, T* dx, bool ref) {
  LOWBIT_CHECK(lo <= hi, "clip_open_backward: need lo <= hi, got ", lo, " and ", hi);
  return sum_over_chunks<ClipSums>(
      n, ref,
      [&](int64_t b, int64_t e) {
        if constexpr (std::is_same_v<T, float>)
          if (!ref && avx512_enabled()) return open_backward_avx512(b, e, x, dy, lo, hi, dx);
        return open_backward_rows(b, e, x, dy, lo, hi, dx);
      },
      [](ClipSums& t, const ClipSums& p) { t.low += p.low, t.high += p.high; });
}

// ---- The learned-step grid (LSQ, MSQE) ----

void check_step_grid(const StepGrid& g, const char* op) {
  LOWBIT_CHECK(std::isfinite(g.step) && g.step > 0 && g.lo <= g.hi && std::nearbyint(g.lo) == g.lo &&
                   std::nearbyint(g.hi) == g.hi,
               op, ": need a finite step > 0 and integer lo <= hi, got step ", g.step, ", [", g.lo, ", ", g.hi, "]");
}

// The code of u = x / step: clamp(nearbyint(u), lo, hi), NaN through.
template <class T>
[[gnu::always_inline]] inline T step_code(T u, T lo, T hi) {
  return clamp_scalar(T(std::nearbyint(u)), lo, hi);
}

template <class T>
void step_forward_rows(int64_t b, int64_t e, const T* x, T step, T lo, T hi, T* y) {
  for (int64_t i = b; i < e; ++i) y[i] = step_code(T(x[i] / step), lo, hi) * step;
}

// codes0 / in0: lanes the vector path already summed (lane_sums).
template <class T>
StepGridSums step_backward_rows(int64_t b, int64_t e, const T* x, const T* dy, T step, T lo, T hi, T* dx,
                                const double* codes0 = nullptr, const double* in0 = nullptr) {
  const auto [codes, inside] = lane_sums(b, e, codes0, in0, [&](int64_t i) {
    const T u = x[i] / step;
    const bool in = u >= lo && u <= hi;
    const double g = double(dy[i]);
    dx[i] = in ? dy[i] : T(0);
    return std::pair<double, double>{g * double(step_code(u, lo, hi)), in ? g * double(u) : 0.0};
  });
  return {codes, inside};
}

// nearbyint then clamp, 16 floats: the same comparisons as clamp_scalar (NaN passes through).
LOWBIT_AVX512 inline __m512 step_code16(__m512 u, __m512 vlo, __m512 vhi) {
  const __m512 r = _mm512_mask_roundscale_ps(u, 0xFFFF, u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 c = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(r, vhi, _CMP_GT_OQ), r, vhi);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(r, vlo, _CMP_LT_OQ), c, vlo);
}

LOWBIT_AVX512 void step_forward_avx512(int64_t b, int64_t e, const float* x, float step, float lo, float hi, float* y) {
  const __m512 vstep = _mm512_set1_ps(step), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  int64_t i = b;
  for (; i + 16 <= e; i += 16) {
    const __m512 u = _mm512_div_ps(_mm512_loadu_ps(x + i), vstep);
    _mm512_storeu_ps(y + i, _mm512_mul_ps(step_code16(u, vlo, vhi), vstep));
  }
  step_forward_rows(i, e, x, step, lo, hi, y);
}

// 16 elements a step in two halves of 8 doubles: the lanes and operations of step_backward_rows, so
// the sums are bit-identical to it.
LOWBIT_AVX512 StepGridSums step_backward_avx512(int64_t b, int64_t e, const float* x, const float* dy, float step,
                                                float lo, float hi, float* dx) {
  constexpr __mmask8 all = 0xFF;  // maskz forms: see requant.cpp
  const __m512 vstep = _mm512_set1_ps(step), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  const __m512d zero = _mm512_setzero_pd();
  __m512d codes[2] = {zero, zero}, in[2] = {zero, zero};
  int64_t i = b;
  for (; i + kLanes <= e; i += kLanes) {
    const __m512 g = _mm512_loadu_ps(dy + i);
    const __m512 u = _mm512_div_ps(_mm512_loadu_ps(x + i), vstep);
    const __mmask16 inside = _mm512_cmp_ps_mask(u, vlo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(u, vhi, _CMP_LE_OQ);
    _mm512_storeu_ps(dx + i, _mm512_maskz_mov_ps(inside, g));
    const __m512 r = step_code16(u, vlo, vhi);
    for (int h = 0; h < 2; ++h) {
      const __m256 gh = h ? _mm512_maskz_extractf32x8_ps(0xFF, g, 1) : _mm512_maskz_extractf32x8_ps(0xFF, g, 0);
      const __m256 uh = h ? _mm512_maskz_extractf32x8_ps(0xFF, u, 1) : _mm512_maskz_extractf32x8_ps(0xFF, u, 0);
      const __m256 rh = h ? _mm512_maskz_extractf32x8_ps(0xFF, r, 1) : _mm512_maskz_extractf32x8_ps(0xFF, r, 0);
      const __m512d gd = _mm512_maskz_cvtps_pd(all, gh);
      codes[h] = _mm512_add_pd(codes[h], _mm512_mul_pd(gd, _mm512_maskz_cvtps_pd(all, rh)));
      const __m512d gu = _mm512_mul_pd(gd, _mm512_maskz_cvtps_pd(all, uh));
      in[h] = _mm512_add_pd(in[h], _mm512_maskz_mov_pd(__mmask8(inside >> (8 * h)), gu));
    }
  }
  double lanes_codes[kLanes], lanes_in[kLanes];
  _mm512_storeu_pd(lanes_codes, codes[0]), _mm512_storeu_pd(lanes_codes + 8, codes[1]);
  _mm512_storeu_pd(lanes_in, in[0]), _mm512_storeu_pd(lanes_in + 8, in[1]);
  return step_backward_rows(i, e, x, dy, step, lo, hi, dx, lanes_codes, lanes_in);
}

template <class T>
void step_forward(const StepGrid& g, int64_t n, const T* x, T* y, bool ref) {
  check_step_grid(g, "step_quantize_forward");
  const T step = T(g.step), lo = T(g.lo), hi = T(g.hi);
  if (ref) return step_forward_rows(0, n, x, step, lo, hi, y);
  const bool simd = std::is_same_v<T, float> && avx512_enabled();
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    if constexpr (std::is_same_v<T, float>)
      if (simd) return step_forward_avx512(b, e, x, step, lo, hi, y);
    step_forward_rows(b, e, x, step, lo, hi, y);
  });
}

template <class T>
StepGridSums step_backward(const StepGrid& g, int64_t n, const T* x, const T* dy, T* dx, bool ref) {
  check_step_grid(g, "step_quantize_backward");
  const T step = T(g.step), lo = T(g.lo), hi = T(g.hi);
  return sum_over_chunks<StepGridSums>(
      n, ref,
      [&](int64_t b, int64_t e) {
        if constexpr (std::is_same_v<T, float>)
          if (!ref && avx512_enabled()) return step_backward_avx512(b, e, x, dy, step, lo, hi, dx);
        return step_backward_rows(b, e, x, dy, step, lo, hi, dx);
      },
      [](StepGridSums& t, const StepGridSums& p) { t.codes += p.codes, t.inside += p.inside; });
}

}  // namespace

void pow2_grid_forward(const Pow2Grid& g, int64_t n, const float* x, float* y) { pow2_forward(g, n, x, y, false); }
void pow2_grid_forward(const Pow2Grid& g, int64_t n, const double* x, double* y) { pow2_forward(g, n, x, y, false); }
void pow2_grid_forward_ref(const Pow2Grid& g, int64_t n, const float* x, float* y) { pow2_forward(g, n, x, y, true); }
void pow2_grid_forward_ref(const Pow2Grid& g, int64_t n, const double* x, double* y) { pow2_forward(g, n, x, y, true); }
Pow2GridSums pow2_grid_backward(const Pow2Grid& g, int64_t n, const float* x, const float* dy, float* dx) {
  return pow2_backward(g, n, x, dy, dx, false);
}
Pow2GridSums pow2_grid_backward(const Pow2Grid& g, int64_t n, const double* x, const double* dy, double* dx) {
  return pow2_backward(g, n, x, dy, dx, false);
}
Pow2GridSums pow2_grid_backward_ref(const Pow2Grid& g, int64_t n, const float* x, const float* dy, float* dx) {
  return pow2_backward(g, n, x, dy, dx, true);
}
Pow2GridSums pow2_grid_backward_ref(const Pow2Grid& g, int64_t n, const double* x, const double* dy, double* dx) {
  return pow2_backward(g, n, x, dy, dx, true);
}

void uniform_grid_forward(const UniformGrid& g, int64_t n, const float* x, float* y) {
  grid_forward(g, n, x, y, false);
}
void uniform_grid_forward(const UniformGrid& g, int64_t n, const double* x, double* y) {
  grid_forward(g, n, x, y, false);
}
void uniform_grid_forward_ref(const UniformGrid& g, int64_t n, const float* x, float* y) {
  grid_forward(g, n, x, y, true);
}
void uniform_grid_forward_ref(const UniformGrid& g, int64_t n, const double* x, double* y) {
  grid_forward(g, n, x, y, true);
}
UniformGridSums uniform_grid_backward(const UniformGrid& g, int64_t n, const float* x, const float* dy, float* dx) {
  return grid_backward(g, n, x, dy, dx, false);
}
UniformGridSums uniform_grid_backward(const UniformGrid& g, int64_t n, const double* x, const double* dy, double* dx) {
  return grid_backward(g, n, x, dy, dx, false);
}
UniformGridSums uniform_grid_backward_ref(const UniformGrid& g, int64_t n, const float* x, const float* dy, float* dx) {
  return grid_backward(g, n, x, dy, dx, true);
}
UniformGridSums uniform_grid_backward_ref(const UniformGrid& g, int64_t n, const double* x, const double* dy,
                                          double* dx) {
  return grid_backward(g, n, x, dy, dx, true);
}

void clip_quantize_forward(int64_t n, const float* x, float lo, float hi, float scale, float inv_scale, float* y) {
  const bool simd = avx512_enabled();
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    if (simd)
      forward_avx512(b, e, x, lo, hi, scale, inv_scale, y);
    else
      forward_portable(b, e, x, lo, hi, scale, inv_scale, y);
  });
}

void clip_quantize_forward(int64_t n, const double* x, double lo, double hi, double scale, double inv_scale,
                           double* y) {
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { forward_portable(b, e, x, lo, hi, scale, inv_scale, y); });
}

void clip_mask_backward(int64_t n, const float* x, const float* dy, float lo, float hi, float* dx) {
  const bool simd = avx512_enabled();
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    if (simd)
      backward_avx512(b, e, x, dy, lo, hi, dx);
    else
      backward_portable(b, e, x, dy, lo, hi, dx);
  });
}

void clip_mask_backward(int64_t n, const double* x, const double* dy, double lo, double hi, double* dx) {
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { backward_portable(b, e, x, dy, lo, hi, dx); });
}

void clip_quantize_forward_ref(int64_t n, const float* x, float lo, float hi, float scale, float inv_scale, float* y) {
  forward_portable<float>(0, n, x, lo, hi, scale, inv_scale, y);
}
void clip_quantize_forward_ref(int64_t n, const double* x, double lo, double hi, double scale, double inv_scale,
                               double* y) {
  forward_portable<double>(0, n, x, lo, hi, scale, inv_scale, y);
}
void clip_mask_backward_ref(int64_t n, const float* x, const float* dy, float lo, float hi, float* dx) {
  backward_portable<float>(0, n, x, dy, lo, hi, dx);
}
void clip_mask_backward_ref(int64_t n, const double* x, const double* dy, double lo, double hi, double* dx) {
  backward_portable<double>(0, n, x, dy, lo, hi, dx);
}

void step_quantize_forward(const StepGrid& g, int64_t n, const float* x, float* y) { step_forward(g, n, x, y, false); }
void step_quantize_forward(const StepGrid& g, int64_t n, const double* x, double* y) {
  step_forward(g, n, x, y, false);
}
void step_quantize_forward_ref(const StepGrid& g, int64_t n, const float* x, float* y) {
  step_forward(g, n, x, y, true);
}
void step_quantize_forward_ref(const StepGrid& g, int64_t n, const double* x, double* y) {
  step_forward(g, n, x, y, true);
}
StepGridSums step_quantize_backward(const StepGrid& g, int64_t n, const float* x, const float* dy, float* dx) {
  return step_backward(g, n, x, dy, dx, false);
}
StepGridSums step_quantize_backward(const StepGrid& g, int64_t n, const double* x, const double* dy, double* dx) {
  return step_backward(g, n, x, dy, dx, false);
}
StepGridSums step_quantize_backward_ref(const StepGrid& g, int64_t n, const float* x, const float* dy, float* dx) {
  return step_backward(g, n, x, dy, dx, true);
}
StepGridSums step_quantize_backward_ref(const StepGrid& g, int64_t n, const double* x, const double* dy, double* dx) {
  return step_backward(g, n, x, dy, dx, true);
}

ClipSums clip_open_backward(int64_t n, const float* x, const float* dy, float lo, float hi, float* dx) {
  return open_backward(n, x, dy, lo, hi, dx, false);
}
ClipSums clip_open_backward(int64_t n, const double* x, const double* dy, double lo, double hi, double* dx) {
  return open_backward(n, x, dy, lo, hi, dx, false);
}
ClipSums clip_open_backward_ref(int64_t n, const float* x, const float* dy, float lo, float hi, float* dx) {
  return open_backward(n, x, dy, lo, hi, dx, true);
}
ClipSums clip_open_backward_ref(int64_t n, const double* x, const double* dy, double lo, double hi, double* dx) {
  return open_backward(n, x, dy, lo, hi, dx, true);
}

}  // namespace lowbit::kernels
