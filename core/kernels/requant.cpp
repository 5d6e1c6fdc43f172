// Requantization int32 -> uint8 (contract and rounding: core/kernels/requant.h).
#include "core/kernels/requant.h"

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>

#include "core/error.h"
#include "core/kernels/cpu.h"
#include "core/kernels/requant_f32.h"
#include "core/parallel.h"

namespace lowbit::kernels {
namespace {

constexpr int kMinShift = 1, kMaxShift = 52;
constexpr int64_t kMaxOffset = int64_t(1) << 61;
constexpr int64_t kSumLimit = int64_t(1) << 62;

constexpr int64_t kMaxResidualMultiplierU8 = (int64_t(1) << 54) - 1;

void check_constants(const Requantization& q, const char* op) {
  const int64_t C = q.channels();
  const bool has_residual = q.residual != RequantResidual::none;
  LOWBIT_CHECK(q.qmin >= 0 && q.qmin < q.qmax && q.qmax <= 255, op, ": clamp [", q.qmin, ", ", q.qmax,
               "] outside 0 <= qmin < qmax <= 255");
  LOWBIT_CHECK(int64_t(q.shift.size()) == C && int64_t(q.offset.size()) == C &&
                   int64_t(q.residual_multiplier.size()) == (has_residual ? C : 0),
               op, ": per-channel arrays of different lengths");
  const int64_t rmax = q.residual == RequantResidual::u8 ? kMaxResidualMultiplierU8 : INT32_MAX;
  for (int64_t c = 0; c < C; ++c) {
    LOWBIT_CHECK(q.shift[size_t(c)] >= kMinShift && q.shift[size_t(c)] <= kMaxShift, op, ": shift ", q.shift[size_t(c)],
                 " of channel ", c, " outside [1, 52]");
    LOWBIT_CHECK(std::llabs(q.offset[size_t(c)]) <= kMaxOffset, op, ": offset of channel ", c, " beyond 2^61");
    LOWBIT_CHECK(q.multiplier[size_t(c)] != INT32_MIN, op, ": multiplier -2^31 of channel ", c);
    LOWBIT_CHECK(!has_residual || std::llabs(q.residual_multiplier[size_t(c)]) <= rmax, op,
                 ": residual multiplier of channel ", c, " out of range");
  }
}

void check_residual_kind(const Requantization& q, bool s32, bool u8, const char* op) {
  LOWBIT_CHECK(s32 == (q.residual == RequantResidual::s32) && u8 == (q.residual == RequantResidual::u8), op,
               ": the residual tensor given does not match the requantization's residual term");
}

void check_args(const Requantization& q, const RequantArgs& a, const char* op) {
  const int64_t C = q.channels();
  check_constants(q, op);
  LOWBIT_CHECK(a.rows >= 0 && (a.rows == 0 || (a.acc && a.out)), op, ": missing accumulators or output");
  LOWBIT_CHECK(a.ld_acc >= C && a.ld_out >= C, op, ": row strides shorter than ", C, " channels");
  check_residual_kind(q, a.residual_s32 != nullptr, a.residual_u8 != nullptr, op);
  LOWBIT_CHECK(q.residual == RequantResidual::none || a.ld_residual >= C, op, ": residual row stride shorter than ", C,
               " channels");
}

// Portable row: (2) with the clamp of the products' sum (exact, see the header).
void requant_row_portable(const Requantization& q, int64_t C, const int32_t* acc, const int32_t* rs32,
                          const uint8_t* ru8, uint8_t* out) {
  const int32_t* mult = q.multiplier.data();
  const int64_t* rmult = q.residual_multiplier.data();
  const int32_t* shift = q.shift.data();
  const int64_t* offset = q.offset.data();
  const int64_t qmin = q.qmin, qmax = q.qmax;
  for (int64_t c = 0; c < C; ++c) {
    int64_t v = int64_t(acc[c]) * mult[c];
    if (rs32) v += int64_t(rs32[c]) * rmult[c];
    if (ru8) v += int64_t(ru8[c]) * rmult[c];
    v = std::clamp(v, -kSumLimit, kSumLimit);
    const int64_t u = v + offset[c];
    const int s = shift[c];
    const int64_t odd = (u >> s) & 1;
    const int64_t r = (u + ((int64_t(1) << (s - 1)) - 1) + odd) >> s;
    out[c] = uint8_t(std::clamp<int64_t>(r, qmin, qmax));
  }
}

// (2)'s constants for channels [c, c + 8) as int64 lanes (masked-off lanes: shift 1, any valid
// shift; they are not stored), and the rounding and clamp of the int64 paths.
struct I64Constants {
  __m512i m, mr, b, s, half_m1, one, qmin, qmax;
};

LOWBIT_AVX512 inline I64Constants i64_constants(const Requantization& q, int64_t c, __mmask8 mask) {
  constexpr __mmask8 all = 0xFF;  // maskz forms: see requant_block_avx512
  I64Constants k;
  k.one = _mm512_set1_epi64(1), k.qmin = _mm512_set1_epi64(q.qmin), k.qmax = _mm512_set1_epi64(q.qmax);
  // _mm512_mul_epi32 multiplies the low signed dwords of the 64-bit lanes: exact int32 x int32.
  k.m = _mm512_maskz_cvtepi32_epi64(all, _mm256_maskz_loadu_epi32(mask, q.multiplier.data() + c));
  k.mr = q.residual_multiplier.empty() ? _mm512_setzero_si512()
                                       : _mm512_maskz_loadu_epi64(mask, q.residual_multiplier.data() + c);
  k.b = _mm512_maskz_loadu_epi64(mask, q.offset.data() + c);
  k.s = _mm512_mask_cvtepi32_epi64(k.one, mask, _mm256_maskz_loadu_epi32(mask, q.shift.data() + c));
  k.half_m1 = _mm512_sub_epi64(_mm512_maskz_sllv_epi64(all, k.one, _mm512_sub_epi64(k.s, k.one)), k.one);
  return k;
}

// v = acc m (+ res m'), clamped by the caller where it could overflow: the codes of (2), stored.
LOWBIT_AVX512 inline void i64_codes_store(const I64Constants& k, __m512i v, uint8_t* out, __mmask8 mask) {
  constexpr __mmask8 all = 0xFF;
  const __m512i u = _mm512_add_epi64(v, k.b);
  const __m512i odd = _mm512_and_si512(_mm512_maskz_srav_epi64(all, u, k.s), k.one);
  __m512i r = _mm512_maskz_srav_epi64(all, _mm512_add_epi64(_mm512_add_epi64(u, k.half_m1), odd), k.s);
  r = _mm512_maskz_min_epi64(all, _mm512_maskz_max_epi64(all, r, k.qmin), k.qmax);
  _mm512_mask_cvtepi64_storeu_epi8(out, mask, r);
}

// Rows [r0, r1) of a.acc, channel groups of 8 outermost so a group's constants stay in registers
// across the rows. RES: 0 no residual, 1 int32, 2 uint8. The clamp of the products' sum is needed
// only with a residual (|acc m| < 2^62 and |B| <= 2^61 cannot overflow).
template <int RES>
LOWBIT_AVX512 void requant_block_avx512(const Requantization& q, const RequantArgs& a, int64_t r0, int64_t r1) {
  const int64_t C = q.channels();
  // The all-ones maskz forms sidestep a GCC 12 -Wmaybe-uninitialized false positive in the unmasked
  // intrinsics (same instructions).
  constexpr __mmask8 all = 0xFF;
  const __m512i lo = _mm512_set1_epi64(-kSumLimit), hi = _mm512_set1_epi64(kSumLimit);
  for (int64_t c = 0; c < C; c += 8) {
    const __mmask8 mask = C - c >= 8 ? __mmask8(0xFF) : __mmask8((1u << (C - c)) - 1u);
    const I64Constants k = i64_constants(q, c, mask);
    for (int64_t i = r0; i < r1; ++i) {
      const __m512i x = _mm512_maskz_cvtepi32_epi64(all, _mm256_maskz_loadu_epi32(mask, a.acc + i * a.ld_acc + c));
      __m512i v = _mm512_maskz_mul_epi32(all, x, k.m);
      if constexpr (RES == 1) {
        const __m512i r =
            _mm512_maskz_cvtepi32_epi64(all, _mm256_maskz_loadu_epi32(mask, a.residual_s32 + i * a.ld_residual + c));
        v = _mm512_add_epi64(v, _mm512_maskz_mul_epi32(all, r, k.mr));
      } else if constexpr (RES == 2) {  // 0 <= res <= 255, |m'| < 2^54: the 64-bit product is exact
        const __m512i r =
            _mm512_maskz_cvtepu8_epi64(all, _mm_maskz_loadu_epi8(mask, a.residual_u8 + i * a.ld_residual + c));
        v = _mm512_add_epi64(v, _mm512_maskz_mullo_epi64(all, r, k.mr));
      }
      if constexpr (RES != 0) v = _mm512_maskz_min_epi64(all, _mm512_maskz_max_epi64(all, v, lo), hi);
      i64_codes_store(k, v, a.out + i * a.ld_out + c, mask);
    }
  }
}

// (2) in doubles when bound_accumulators found it exact: acc m 2^-S + B 2^-S (+ res m' 2^-S) is
// (acc m + B + res m') 2^-S, below 2^53 in magnitude, so each FMA's result is exact. Then clamped to
// [qmin, qmax] and rounded (the same as rounding then clamping: qmin and qmax are integers) by adding 2^52
// with round-to-nearest-even (ulp 1 in [2^52, 2^53)), which leaves the code in the low bits.
template <int RES>
LOWBIT_AVX512 void requant_block_avx512_f64(const Requantization& q, const RequantArgs& a, int64_t r0, int64_t r1) {
  const int64_t C = q.channels();
  constexpr __mmask8 all = 0xFF;  // maskz forms: see requant_block_avx512
  // Locals: the uint8 stores may alias anything, so fields of `a` read in the loop would be reloaded.
  const int32_t* acc = a.acc + r0 * a.ld_acc;
  const int32_t* res32 = RES == 1 ? a.residual_s32 + r0 * a.ld_residual : nullptr;
  const uint8_t* res8 = RES == 2 ? a.residual_u8 + r0 * a.ld_residual : nullptr;
  uint8_t* out = a.out + r0 * a.ld_out;
  const int64_t ld_acc = a.ld_acc, ld_res = a.ld_residual, ld_out = a.ld_out, rows = r1 - r0;
  const __m512d zero = _mm512_setzero_pd(), qmax = _mm512_set1_pd(q.qmax), magic = _mm512_set1_pd(0x1p52);
  const __m512d qmin = _mm512_set1_pd(q.qmin);
  // The low dwords of two vectors of 8 doubles 2^52 + k: k for 16 channels.
  const __m512i low_dwords = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  // 16 channels per step, as two halves of 8 doubles; one 16-byte store per row.
  for (int64_t c = 0; c < C; c += 16) {
    const int64_t n = std::min<int64_t>(16, C - c);
    const __mmask16 mask = __mmask16((uint32_t(1) << n) - 1u);
    const __mmask8 m0 = __mmask8(mask & 0xFF), m1 = __mmask8(mask >> 8);
    const __m512d mul0 = _mm512_maskz_loadu_pd(m0, q.multiplier_f64.data() + c);
    const __m512d mul1 = _mm512_maskz_loadu_pd(m1, q.multiplier_f64.data() + c + 8);
    const __m512d b0 = _mm512_maskz_loadu_pd(m0, q.offset_f64.data() + c);
    const __m512d b1 = _mm512_maskz_loadu_pd(m1, q.offset_f64.data() + c + 8);
    const __m512d mr0 = RES ? _mm512_maskz_loadu_pd(m0, q.residual_multiplier_f64.data() + c) : zero;
    const __m512d mr1 = RES ? _mm512_maskz_loadu_pd(m1, q.residual_multiplier_f64.data() + c + 8) : zero;
    for (int64_t i = 0; i < rows; ++i) {
      const __m512i x = _mm512_maskz_loadu_epi32(mask, acc + i * ld_acc + c);
      __m512d u0 = _mm512_maskz_fmadd_pd(all, _mm512_maskz_cvtepi32_pd(all, _mm512_maskz_extracti64x4_epi64(all, x, 0)),
                                         mul0, b0);
      __m512d u1 = _mm512_maskz_fmadd_pd(all, _mm512_maskz_cvtepi32_pd(all, _mm512_maskz_extracti64x4_epi64(all, x, 1)),
                                         mul1, b1);
      if constexpr (RES != 0) {
        const __m512i r =
            RES == 1 ? _mm512_maskz_loadu_epi32(mask, res32 + i * ld_res + c)
                     : _mm512_maskz_cvtepu8_epi32(__mmask16(0xFFFF), _mm_maskz_loadu_epi8(mask, res8 + i * ld_res + c));
        u0 = _mm512_maskz_fmadd_pd(all, _mm512_maskz_cvtepi32_pd(all, _mm512_maskz_extracti64x4_epi64(all, r, 0)), mr0,
                                   u0);
        u1 = _mm512_maskz_fmadd_pd(all, _mm512_maskz_cvtepi32_pd(all, _mm512_maskz_extracti64x4_epi64(all, r, 1)), mr1,
                                   u1);
      }
      auto codes = [&](__m512d u) {  // 2^52 + round_half_even(clamp(u, qmin, qmax)), as bits
        const __m512d clamped = _mm512_maskz_min_pd(all, _mm512_maskz_max_pd(all, u, qmin), qmax);
        return _mm512_castpd_si512(
            _mm512_maskz_add_round_pd(all, clamped, magic, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      };
      const __m512i r32 = _mm512_permutex2var_epi32(codes(u0), low_dwords, codes(u1));
      const __m128i r8 =
          _mm512_maskz_cvtepi32_epi8(0xFFFF, r32);  // in a register: a plain store beats vpmovdb to memory
      if (n == 16)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i * ld_out + c), r8);
      else
        _mm_mask_storeu_epi8(out + i * ld_out + c, mask, r8);
    }
  }
}

// (2f) in floats, where bound_accumulators verified it equal to (2) (requant.h): 16 channels per
// vector. The clamp before the rounding is the clamp after it (qmin and qmax are integers).
template <int RES>
LOWBIT_AVX512 void requant_block_avx512_f32(const Requantization& q, const RequantArgs& a, int64_t r0, int64_t r1) {
  static_assert(RES != 1, "an int32 residual never takes the float path");
  const int64_t C = q.channels();
  constexpr __mmask16 all = 0xFFFF;            // maskz forms: see requant_block_avx512
  const int32_t* acc = a.acc + r0 * a.ld_acc;  // locals: see requant_block_avx512_f64
  const uint8_t* res8 = RES == 2 ? a.residual_u8 + r0 * a.ld_residual : nullptr;
  uint8_t* out = a.out + r0 * a.ld_out;
  const int64_t ld_acc = a.ld_acc, ld_res = a.ld_residual, ld_out = a.ld_out, rows = r1 - r0;
  const __m512 qmin = _mm512_set1_ps(float(q.qmin)), qmax = _mm512_set1_ps(float(q.qmax));
  for (int64_t c = 0; c < C; c += 16) {
    const int64_t n = std::min<int64_t>(16, C - c);
    const __mmask16 mask = __mmask16((uint32_t(1) << n) - 1u);
    const __m512 mul = _mm512_maskz_loadu_ps(mask, q.multiplier_f32.data() + c);
    const __m512 b = _mm512_maskz_loadu_ps(mask, q.offset_f32.data() + c);
    const __m512 mr = RES ? _mm512_maskz_loadu_ps(mask, q.residual_multiplier_f32.data() + c) : _mm512_setzero_ps();
    for (int64_t i = 0; i < rows; ++i) {
      const __m512i x = _mm512_maskz_loadu_epi32(mask, acc + i * ld_acc + c);
      __m512 u;
      if constexpr (RES == 2)
        u = detail::requant_f32_value(
            x, mul, b, _mm512_maskz_cvtepu8_epi32(all, _mm_maskz_loadu_epi8(mask, res8 + i * ld_res + c)), mr);
      else
        u = detail::requant_f32_value(x, mul, b);
      const __m128i r8 = _mm512_maskz_cvtepi32_epi8(all, detail::requant_f32_codes(u, qmin, qmax));
      if (n == 16)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i * ld_out + c), r8);
      else
        _mm_mask_storeu_epi8(out + i * ld_out + c, mask, r8);
    }
  }
}

// Rows [r0, r1) in blocks of 64 rows (a block's accumulators stay in L1 across the channel groups).
void requant_block_simd(const Requantization& q, const RequantArgs& a, int64_t r0, int64_t r1) {
  const bool f32 = !q.offset_f32.empty(), f64 = !q.offset_f64.empty();
  for (int64_t b0 = r0; b0 < r1; b0 += 64) {
    const int64_t b1 = std::min(r1, b0 + 64);
    if (f32 && a.residual_u8)
      requant_block_avx512_f32<2>(q, a, b0, b1);
    else if (f32 && !a.residual_s32)
      requant_block_avx512_f32<0>(q, a, b0, b1);
    else if (f64 && a.residual_s32)
      requant_block_avx512_f64<1>(q, a, b0, b1);
    else if (f64 && a.residual_u8)
      requant_block_avx512_f64<2>(q, a, b0, b1);
    else if (f64)
      requant_block_avx512_f64<0>(q, a, b0, b1);
    else if (a.residual_s32)
      requant_block_avx512<1>(q, a, b0, b1);
    else if (a.residual_u8)
      requant_block_avx512<2>(q, a, b0, b1);
    else
      requant_block_avx512<0>(q, a, b0, b1);
  }
}

// The combined rows of a WideRequantArgs (chunks of rows at a time, in this thread's buffers: the
// portable path runs per block) through `requant`.
template <class Requant>
void wide_rows_combined(const Requantization& q, const WideRequantArgs& a, Requant&& requant) {
  const int64_t C = q.channels(), chunk = 64;
  thread_local std::vector<int32_t> acc, res;
  if (int64_t(acc.size()) < chunk * C) acc.resize(size_t(chunk * C)), res.resize(size_t(chunk * C));
  for (int64_t r0 = 0; r0 < a.rows; r0 += chunk) {
    const int64_t n = std::min(chunk, a.rows - r0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < C; ++c) {
        const int64_t row = r0 + i;
        acc[size_t(i * C + c)] = 256 * a.hi[row * a.ld_acc + c] + a.lo[row * a.ld_acc + c];
        res[size_t(i * C + c)] =
            (a.residual_a ? a.residual_a[row * a.ld_a + c] : 0) + (a.residual_b ? a.residual_b[row * a.ld_b + c] : 0);
      }
    RequantArgs ra;
    ra.rows = n, ra.acc = acc.data(), ra.ld_acc = C, ra.residual_s32 = res.data(), ra.ld_residual = C;
    ra.out = a.out + r0 * a.ld_out, ra.ld_out = a.ld_out;
    requant(q, ra);
  }
}

// Rows [r0, r1).
template <class RowFn>
void for_rows(const Requantization& q, const RequantArgs& a, int64_t r0, int64_t r1, RowFn&& row) {
  const int64_t C = q.channels();
  for (int64_t i = r0; i < r1; ++i)
    row(q, C, a.acc + i * a.ld_acc, a.residual_s32 ? a.residual_s32 + i * a.ld_residual : nullptr,
        a.residual_u8 ? a.residual_u8 + i * a.ld_residual : nullptr, a.out + i * a.ld_out);
}

// (2) for channel c in __int128, without the range checks: the exact code (requantize_u8_ref's rule).
int32_t exact_code(const Requantization& q, int64_t c, int64_t acc, int64_t res) {
  __int128 u = __int128(acc) * q.multiplier[size_t(c)] + q.offset[size_t(c)];
  if (q.residual != RequantResidual::none) u += __int128(res) * q.residual_multiplier[size_t(c)];
  // u = k 2^S + f, 0 <= f < 2^S; round to nearest, ties to even k.
  const int s = q.shift[size_t(c)];
  const __int128 unit = __int128(1) << s, half = __int128(1) << (s - 1);
  __int128 k = u >> s;
  const __int128 f = u - k * unit;
  if (f > half || (f == half && (k & 1) != 0)) k += 1;
  return int32_t(k < q.qmin ? q.qmin : k > q.qmax ? q.qmax : k);
}

// (2f) for one channel's float constants: what requant_block_avx512_f32 computes, lane by lane.
struct FloatConstants {
  float m = 0, b = 0, mr = 0;
};
int32_t float_code(const Requantization& q, const FloatConstants& f, int64_t acc, int64_t res) {
  float u = std::fma(float(acc), f.m, f.b);
  if (q.residual != RequantResidual::none) u = std::fma(float(res), f.mr, u);
  u = std::min(std::max(u, float(q.qmin)), float(q.qmax));
  return int32_t(std::nearbyint(u));
}

// Whether (2f) with f equals (2) for channel c at every acc in [-A, A] and residual in [0, R]
// (requant.h: both monotone in acc, so the ends and both sides of every step of (2) suffice).
bool float_channel_exact(const Requantization& q, int64_t c, const FloatConstants& f, int64_t A, int64_t R) {
  for (int64_t res = 0; res <= R; ++res) {
    const int32_t at_lo = exact_code(q, c, -A, res), at_hi = exact_code(q, c, A, res);
    if (float_code(q, f, -A, res) != at_lo || float_code(q, f, A, res) != at_hi) return false;
    const bool rising = at_hi >= at_lo;
    for (int32_t j = std::min(at_lo, at_hi) + 1; j <= std::max(at_lo, at_hi); ++j) {
      // The step to code >= j: between `below` (code < j) and `above` (code >= j), one apart.
      int64_t below = rising ? -A : A, above = rising ? A : -A;
      while (std::llabs(above - below) > 1) {
        const int64_t mid = below + (above - below) / 2;
        (exact_code(q, c, mid, res) >= j ? above : below) = mid;
      }
      if (float_code(q, f, above, res) < j || float_code(q, f, below, res) >= j) return false;
    }
  }
  return true;
}

// The float constants of (2f) for every channel, verified equal to (2) (requant.h); false when some
// channel has none among the nearest floats and a few neighbours, or the check would be too long.
bool float_constants(Requantization& q) {
  const int64_t C = q.channels(), A = q.acc_bound;
  const int64_t R = q.residual == RequantResidual::u8 ? q.residual_bound : 0;
  if (q.residual == RequantResidual::s32 || A > (int64_t(1) << 24) ||
      C * (R + 1) * (q.qmax - q.qmin) > (int64_t(1) << 20))
    return false;
  std::vector<float> m(static_cast<size_t>(C)), b(static_cast<size_t>(C)), mr(static_cast<size_t>(C));
  constexpr int kNudges[] = {0, 1, -1, 2, -2, 3, -3, 4, -4};  // ulps away from the nearest float
  auto step = [](float x, int ulps) {
    for (; ulps > 0; --ulps) x = std::nextafter(x, INFINITY);
    for (; ulps < 0; ++ulps) x = std::nextafter(x, -INFINITY);
    return x;
  };
  for (int64_t c = 0; c < C; ++c) {
    const int s = q.shift[size_t(c)];
    const FloatConstants nearest{
        float(std::ldexp(double(q.multiplier[size_t(c)]), -s)), float(std::ldexp(double(q.offset[size_t(c)]), -s)),
        q.residual_multiplier.empty() ? 0.0f : float(std::ldexp(double(q.residual_multiplier[size_t(c)]), -s))};
    bool found = false;
    for (int dm : {0, 1, -1, 2, -2}) {
      for (int db : kNudges) {
        FloatConstants f = nearest;
        f.m = q.multiplier[size_t(c)] == 0 ? 0.0f : step(nearest.m, dm);
        f.b = step(nearest.b, db);
        if ((f.m > 0) != (q.multiplier[size_t(c)] > 0)) continue;  // keep m's sign (the monotone direction)
        if (float_channel_exact(q, c, f, A, R)) {
          m[size_t(c)] = f.m, b[size_t(c)] = f.b, mr[size_t(c)] = f.mr, found = true;
          break;
        }
      }
      if (found) break;
    }
    if (!found) return false;
  }
  q.multiplier_f32 = std::move(m), q.offset_f32 = std::move(b);
  if (q.residual != RequantResidual::none) q.residual_multiplier_f32 = std::move(mr);
  return true;
}

// requantize_wide_u8's rows, 16 channels per vector, in single precision with an error bound, exact:
// with the constants of (2) scaled by 2^-S_c and rounded to float (m~, b~, m~'), the accumulator
// acc = 256 hi + lo and the residual res = res_a + res_b (int32) rounded to float too,
//   u~ = fma(res, m~', fma(acc, m~, b~))
// is within 2^-22 (1 + 1e-4) (|acc m| + |B| + |res m'|) / 2^S_c of the exact u / 2^S_c (four relative
// roundings of at most 2^-24 (+ 2^-53) on the acc term: acc, m~, the two fmas; three on the others).
// The lanes bound that by eps = 2^-20 (|acc~ m~| + |b~| + |res~ m~'|) (with room for the bound's own
// rounding). Where |u~ - nearbyint(u~)| < 1/2 - eps, u / 2^S_c lies strictly on the same side of every
// half-integer as u~, so (2)'s rounding is nearbyint(u~) (the half-integers are its only steps; the
// clamp commutes, qmin and qmax being integers); elsewhere (near a tie: ~2 eps of the outputs, or |u~|
// so large that eps >= 1/2, or not finite) the lane takes exact_code. ~2x fewer instructions than int64.
LOWBIT_AVX512 void requant_wide_avx512(const Requantization& q, const WideRequantArgs& a) {
  const int64_t C = q.channels();
  constexpr __mmask16 all = 0xFFFF;  // maskz forms: see requant_block_avx512
  const __m512 qmin = _mm512_set1_ps(float(q.qmin)), qmax = _mm512_set1_ps(float(q.qmax));
  const __m512 half = _mm512_set1_ps(0.5f), eps_scale = _mm512_set1_ps(std::ldexp(1.0f, -20));
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (int64_t c = 0; c < C; c += 16) {
    const int64_t n = std::min<int64_t>(16, C - c);
    const __mmask16 mask = __mmask16((uint32_t(1) << n) - 1u);
    alignas(64) float m[16] = {}, b[16] = {}, mr[16] = {};
    for (int64_t j = 0; j < n; ++j) {  // x 2^-S exactly (1 <= S <= 52), then rounded to float
      const double unit = std::bit_cast<double>(uint64_t(1023 - q.shift[size_t(c + j)]) << 52);
      m[j] = float(double(q.multiplier[size_t(c + j)]) * unit);
      b[j] = float(double(q.offset[size_t(c + j)]) * unit);
      mr[j] = float(double(q.residual_multiplier[size_t(c + j)]) * unit);
    }
    const __m512 vm = _mm512_load_ps(m), vb = _mm512_load_ps(b), vmr = _mm512_load_ps(mr);
    const __m512 am = _mm512_maskz_andnot_ps(all, sign, vm), ab = _mm512_maskz_andnot_ps(all, sign, vb);
    const __m512 amr = _mm512_maskz_andnot_ps(all, sign, vmr);
    // Locals: the uint8_t stores below may alias `a` (see requant_block_avx512_f64).
    const int32_t *hip = a.hi + c, *lop = a.lo + c;
    const int32_t *rap = a.residual_a ? a.residual_a + c : nullptr, *rbp = a.residual_b ? a.residual_b + c : nullptr;
    const int64_t rows = a.rows, ld_acc = a.ld_acc, ld_a = a.ld_a, ld_b = a.ld_b, ld_out = a.ld_out;
    uint8_t* const outp = a.out + c;
    for (int64_t i = 0; i < rows; ++i) {
      const __m512i hi = _mm512_maskz_loadu_epi32(mask, hip + i * ld_acc);
      const __m512i lo = _mm512_maskz_loadu_epi32(mask, lop + i * ld_acc);
      const __m512i acc = _mm512_add_epi32(_mm512_maskz_slli_epi32(all, hi, 8), lo);
      __m512i res = _mm512_setzero_si512();
      if (rap) res = _mm512_maskz_loadu_epi32(mask, rap + i * ld_a);
      if (rbp) res = _mm512_add_epi32(res, _mm512_maskz_loadu_epi32(mask, rbp + i * ld_b));
      const __m512 fa = _mm512_maskz_cvtepi32_ps(all, acc), fr = _mm512_maskz_cvtepi32_ps(all, res);
      const __m512 u = _mm512_maskz_fmadd_ps(all, fr, vmr, _mm512_maskz_fmadd_ps(all, fa, vm, vb));
      const __m512 r = _mm512_maskz_roundscale_ps(all, u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      __m512 bound = _mm512_maskz_fmadd_ps(all, _mm512_maskz_andnot_ps(all, sign, fa), am, ab);
      bound = _mm512_maskz_fmadd_ps(all, _mm512_maskz_andnot_ps(all, sign, fr), amr, bound);
      const __m512 limit = _mm512_maskz_fnmadd_ps(all, bound, eps_scale, half);  // 1/2 - eps
      const __m512 dist = _mm512_maskz_andnot_ps(all, sign, _mm512_maskz_sub_ps(all, u, r));
      // near: dist >= limit, or unordered (a NaN from an infinite u~)
      const __mmask16 near = _mm512_mask_cmp_ps_mask(mask, dist, limit, _CMP_NLT_UQ);
      const __m512 clamped = _mm512_maskz_min_ps(all, _mm512_maskz_max_ps(all, r, qmin), qmax);
      const __m128i codes = _mm512_maskz_cvtepi32_epi8(all, _mm512_maskz_cvtps_epi32(all, clamped));
      uint8_t* out = outp + i * ld_out;
      _mm_mask_storeu_epi8(out, mask, codes);
      for (uint32_t bits = near; bits != 0; bits &= bits - 1) {  // near a tie: the exact rule
        const int64_t j = __builtin_ctz(bits);
        const int64_t acc64 = 256 * int64_t(hip[i * ld_acc + j]) + lop[i * ld_acc + j];
        const int64_t res64 = (rap ? int64_t(rap[i * ld_a + j]) : 0) + (rbp ? int64_t(rbp[i * ld_b + j]) : 0);
        out[j] = uint8_t(exact_code(q, c + j, acc64, res64));
      }
    }
  }
}

}  // namespace

Requantization requantization_from_double(int64_t channels, const double* scale, const double* offset, int32_t qmax,
                                          RequantResidual residual, const double* residual_scale, bool signed_codes) {
  const char* op = "requantization_from_double";
  LOWBIT_CHECK(channels >= 0, op, ": negative channel count");
  LOWBIT_CHECK(qmax >= 1 && qmax <= (signed_codes ? 127 : 255), op, ": qmax ", qmax, " outside [1, ",
               signed_codes ? 127 : 255, "]", signed_codes ? " (signed codes)" : "");
  LOWBIT_CHECK((residual_scale != nullptr) == (residual != RequantResidual::none), op,
               residual_scale ? ": residual scales without a residual" : ": a residual without residual scales");
  Requantization q;
  const int32_t zero = signed_codes ? 128 : 0;  // (1s): codes 128 + round(clip(y, -1, 1) qmax)
  q.qmin = zero == 0 ? 0 : zero - qmax;
  q.qmax = zero + qmax;
  q.residual = residual;
  q.multiplier.resize(size_t(channels));
  q.shift.resize(size_t(channels));
  q.offset.resize(size_t(channels));
  if (residual_scale) q.residual_multiplier.resize(size_t(channels));
  // The largest shift <= kMaxShift at which nearbyint(|x| 2^s) <= limit.
  auto max_shift = [](double x, double limit) {
    if (x == 0) return kMaxShift;
    int e = 0;
    std::frexp(std::fabs(x), &e);                                // |x| = f 2^e, f in [0.5, 1)
    int s = std::min(kMaxShift, int(std::log2(limit + 1)) - e);  // |x| 2^s < limit + 1
    while (std::nearbyint(std::ldexp(std::fabs(x), s)) > limit) --s;
    return s;
  };
  const double rlimit = residual == RequantResidual::u8 ? double(kMaxResidualMultiplierU8) : double(INT32_MAX);
  for (int64_t c = 0; c < channels; ++c) {
    const double M = qmax * scale[c], Mr = residual_scale ? qmax * residual_scale[c] : 0.0, T = qmax * offset[c];
    LOWBIT_CHECK(std::isfinite(M) && std::isfinite(Mr) && std::isfinite(T), op, ": channel ", c,
                 ": scale or offset not finite");
    const int s = std::min(
        {max_shift(M, double(INT32_MAX)), max_shift(Mr, rlimit), max_shift(std::fabs(T) + zero, double(kMaxOffset))});
    LOWBIT_CHECK(s >= kMinShift, op, ": channel ", c, ": scale ", scale[c], ", offset ", offset[c],
                 residual_scale ? " or residual scale out of range" : " out of range", " for qmax ", qmax);
    q.shift[size_t(c)] = s;
    q.multiplier[size_t(c)] = int32_t(std::nearbyint(std::ldexp(M, s)));
    if (residual_scale) q.residual_multiplier[size_t(c)] = int64_t(std::nearbyint(std::ldexp(Mr, s)));
    q.offset[size_t(c)] = int64_t(std::nearbyint(std::ldexp(T, s))) + (int64_t(zero) << s);
  }
  return q;
}

void bound_accumulators(Requantization& q, int64_t acc_bound, int64_t residual_bound) {
  LOWBIT_CHECK(acc_bound >= 0 && residual_bound >= 0, "bound_accumulators: negative bound");
  q.acc_bound = acc_bound, q.residual_bound = residual_bound;
  q.multiplier_f64.clear(), q.residual_multiplier_f64.clear(), q.offset_f64.clear();
  q.multiplier_f32.clear(), q.residual_multiplier_f32.clear(), q.offset_f32.clear();
  const bool residual = q.residual != RequantResidual::none;
  if (acc_bound == 0 || (residual && residual_bound == 0)) return;
  float_constants(q);
  const int64_t C = q.channels();
  for (int64_t c = 0; c < C; ++c) {  // the bound of |acc m + res m' + B|, in exact integers
    const __int128 most = __int128(acc_bound) * std::llabs(q.multiplier[size_t(c)]) +
                          (residual ? __int128(residual_bound) * std::llabs(q.residual_multiplier[size_t(c)]) : 0) +
                          std::llabs(q.offset[size_t(c)]);
    if (most >= (__int128(1) << 53)) return;
  }
  for (int64_t c = 0; c < C; ++c) {
    const int s = q.shift[size_t(c)];
    q.multiplier_f64.push_back(std::ldexp(double(q.multiplier[size_t(c)]), -s));
    q.offset_f64.push_back(std::ldexp(double(q.offset[size_t(c)]), -s));  // |B| < 2^53: exact
    if (residual) q.residual_multiplier_f64.push_back(std::ldexp(double(q.residual_multiplier[size_t(c)]), -s));
  }
}

void requantize_u8(const Requantization& q, const RequantArgs& a) {
  check_args(q, a, "requantize_u8");
  const int64_t C = q.channels();
  if (C == 0) return;
  const bool simd = avx512_enabled();
  parallel_for(0, a.rows, std::max<int64_t>(1, 16384 / C), [&](int64_t r0, int64_t r1) {
    if (simd)
      requant_block_simd(q, a, r0, r1);
    else
      for_rows(q, a, r0, r1, requant_row_portable);
  });
}

namespace detail {

void check_requantization(const Requantization& q, int64_t channels, bool residual_s32, bool residual_u8,
                          const char* op) {
  check_constants(q, op);
  LOWBIT_CHECK(q.channels() == channels, op, ": the requantization has ", q.channels(), " channels, the data ",
               channels);
  check_residual_kind(q, residual_s32, residual_u8, op);
}

void requantize_u8_rows(const Requantization& q, const RequantArgs& a) {
  if (avx512_enabled())
    requant_block_simd(q, a, 0, a.rows);
  else
    for_rows(q, a, 0, a.rows, requant_row_portable);
}

}  // namespace detail

void requantize_u8_ref(const Requantization& q, const RequantArgs& a) {
  check_args(q, a, "requantize_u8_ref");
  const int64_t C = q.channels();
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t c = 0; c < C; ++c) {
      const int32_t acc = a.acc[i * a.ld_acc + c];
      const int32_t res = a.residual_s32  ? a.residual_s32[i * a.ld_residual + c]
                          : a.residual_u8 ? a.residual_u8[i * a.ld_residual + c]
                                          : 0;
      LOWBIT_CHECK(q.acc_bound == 0 || std::llabs(acc) <= q.acc_bound, "requantize_u8_ref: accumulator ", acc,
                   " beyond the declared bound ", q.acc_bound, " (bound_accumulators)");
      LOWBIT_CHECK(q.residual_bound == 0 || std::llabs(res) <= q.residual_bound, "requantize_u8_ref: residual ", res,
                   " beyond the declared bound ", q.residual_bound, " (bound_accumulators)");
      a.out[i * a.ld_out + c] = uint8_t(exact_code(q, c, acc, res));
    }
}

void requantize_wide_u8(const Requantization& q, const WideRequantArgs& a) {
  LOWBIT_CHECK(q.residual == RequantResidual::s32, "requantize_wide_u8: needs an int32 residual term");
  if (avx512_enabled())
    requant_wide_avx512(q, a);
  else
    wide_rows_combined(q, a,
                       [](const Requantization& qq, const RequantArgs& ra) { detail::requantize_u8_rows(qq, ra); });
}

void requantize_wide_u8_ref(const Requantization& q, const WideRequantArgs& a) {
  wide_rows_combined(q, a, [](const Requantization& qq, const RequantArgs& ra) { requantize_u8_ref(qq, ra); });
}

}  // namespace lowbit::kernels
