// Requantization epilogue of the integer inference kernels: int32 accumulators (gemm_int8.h,
// conv_int8.h) -> the next layer's uint8 activation codes, per output channel c.
//
// The real-valued formula it implements (the float simulation of a quantized layer, with the
// layer's scale and offset folded per channel, an optional residual input res added before the clip):
//
//   y = s_c * acc + s'_c * res + t_c,        q = round(clip(y, 0, 1) * qmax)         (1)
//
// or, for signed codes (a signed activation stored as uint8 with zero point 128, qmax <= 127),
//
//   q = 128 + round(clip(y, -1, 1) * qmax)                                            (1s)
//
// Integer form (exact, in int64): per channel a multiplier m_c, a residual multiplier m'_c, one
// right shift S_c and an offset B_c, the real multipliers being m_c / 2^S_c ~ qmax * s_c,
// m'_c / 2^S_c ~ qmax * s'_c and B_c / 2^S_c ~ qmax * t_c:
//
//   u = acc * m_c + res * m'_c + B_c                                                  (2)
//   q = clamp(round_half_even(u / 2^S_c), qmin, qmax)
//
// with [qmin, qmax] = [0, qmax] for (1); for (1s) B_c also holds 128 * 2^S_c (exactly: an integer)
// and the clamp is [128 - qmax, 128 + qmax]: 128 is even, so round_half_even(v + 128) =
// round_half_even(v) + 128 and (2) is (1s) with the same rounding, ties included.
//
// round_half_even of the exact rational u / 2^S_c: the nearest integer, ties (u / 2^S_c = k + 1/2
// exactly) to the even one; i.e. std::nearbyint (default rounding mode), torch.round and
// core/kernels/quantize.h's clip_quantize_forward applied to (1). With s, s', t dyadic (exactly
// m / 2^S etc.) the integer path equals (1) with round = nearbyint for every input, ties included.
//
// The residual is either int32 (e.g. a 1x1 projection shortcut's accumulators) or uint8 codes (an
// identity shortcut's input activation; a nonzero zero point z' of those codes folds into t_c as
// -s'_c z'). Ranges (requantization_from_double produces them; the kernels check them):
//   |m_c| <= 2^31 - 1 (int32; negative for negative scales, e.g. a BN gamma < 0),
//   |m'_c| <= 2^31 - 1 for an int32 residual, < 2^54 for a uint8 one,
//   1 <= S_c <= 52, |B_c| <= 2^61, 0 <= qmin < qmax <= 255.
// Then |acc * m_c| and |res * m'_c| are < 2^62; the fast paths clamp their sum to [-2^62, 2^62]
// before adding B_c, which never changes q (a clamped sum puts u / 2^S beyond [-2^8, 2^8] either
// way), so nothing overflows int64. The `_ref` twin evaluates (2) in __int128 without the clamp.
//
// Error against (1) in exact arithmetic, for requantization_from_double's constants (m_c, m'_c,
// B_c the nearest integers to the real values times 2^S_c), in output codes:
//   |u / 2^S_c - qmax * y| <= (|acc| + |res| + 1) * 2^-(S_c + 1)                       (3)
// requantization_from_double takes the largest S_c the ranges allow, which normalizes |m_c| to
// [2^30, 2^31) (so 2^-(S_c+1) <= |qmax s_c| 2^-31 and the acc term of (3) is <= |qmax s_c acc| 2^-31,
// i.e. 2^-31 of the accumulator's swing in codes) unless
//   - an int32 residual has the larger real multiplier: then |m'_c| is normalized instead and the
//     bound is (|acc| + |res| + 1) |qmax s'_c| 2^-31 (the shared shift costs m_c precision);
//   - qmax |s_c| < 2^-22 (S_c = 52: the bound is below 2^-53 (|acc| + |res| + 1)), or
//     |t_c / s_c| beyond ~2^30 accumulator units (B_c's range lowers S_c).
// q differs from (1) only where qmax * y lies within (3) of a half-integer k + 1/2: for an
// accumulator swing of ~1000 output codes, within 5e-7 codes. tests/test_kernels_int8.cpp measures
// the disagreement rate (docs/performance.md, "Integer kernels").
//
//   requantize_u8      fast path: AVX-512 when avx512_enabled(), else portable; parallel over rows.
//   requantize_u8_ref  plain loops over (2) in __int128; the twin the fast path is pinned to.
#pragma once

#include <cstdint>
#include <vector>

namespace lowbit::kernels {

enum class RequantResidual { none, s32, u8 };

struct Requantization {
  int32_t qmin = 0, qmax = 255;  // the output clamp (signed codes: 128 -+ the level count)
  RequantResidual residual = RequantResidual::none;
  std::vector<int32_t> multiplier;           // [C] m_c
  std::vector<int32_t> shift;                // [C] S_c
  std::vector<int64_t> offset;               // [C] B_c, in units of 2^-S_c output codes
  std::vector<int64_t> residual_multiplier;  // [C] m'_c; empty without a residual

  // Set by bound_accumulators: the caller's bounds |acc| <= acc_bound, |res| <= residual_bound (0:
  // none declared), and when (2) then stays below 2^53 in magnitude for every channel, its
  // constants scaled by 2^-S_c as doubles (exact): the fast path evaluates (2) in double-precision
  // FMAs, exactly, rounding with roundscale (half to even). Empty: the int64 path.
  int64_t acc_bound = 0, residual_bound = 0;
  std::vector<double> multiplier_f64, residual_multiplier_f64, offset_f64;
  // Also set by bound_accumulators, when single precision was verified to give (2)'s codes for every
  // accumulator in [-acc_bound, acc_bound] (and, with a uint8 residual, every residual in [0,
  // residual_bound]): per channel float32 constants m~_c, m~'_c, b~_c with
  //   q = clamp(nearbyint(fma(res, m~'_c, fma(acc, m~_c, b~_c))), qmin, qmax)     (2f, single precision)
  // equal to (2). Both sides are monotone in acc for a fixed res (the same direction: m~_c has m_c's
  // sign), so agreeing on both sides of each of (2)'s code steps and at the ends proves them equal
  // on the whole range; the check finds the steps by bisection with (2) in __int128. Where the nearest
  // floats fail, a few neighbouring floats of b~_c and m~_c are tried; if a channel still fails, or
  // the check would be too long (more than ~2^20 steps), or acc_bound > 2^24 (acc not exact in
  // float), or the residual is int32, these stay empty and the double (or int64) path runs. The fast
  // path then handles 16 channels per vector instead of 8 (~half the instructions).
  std::vector<float> multiplier_f32, residual_multiplier_f32, offset_f32;

  int64_t channels() const { return int64_t(multiplier.size()); }
};

// The constants of (2) for (1): per channel c < channels, scale s_c, offset t_c and, with a
// residual, residual scale s'_c: m_c = nearbyint(qmax s_c 2^S_c), m'_c likewise,
// B_c = nearbyint(qmax t_c 2^S_c), with S_c the largest shift <= 52 for which m_c, m'_c and B_c are
// within the ranges above. Throws lowbit::Error when a value is not finite, qmax is outside
// [1, 255], residual_scale is null with a residual (or given without), or no shift >= 1 fits
// (qmax |s_c| >= 2^30, an int32 residual's qmax |s'_c| >= 2^30, or |qmax t_c| >= 2^60).
// signed_codes: (1s) instead of (1): qmax <= 127, B_c = nearbyint(qmax t_c 2^S_c) + 128 2^S_c with
// S_c chosen for |qmax t_c| + 128, the clamp [128 - qmax, 128 + qmax].
Requantization requantization_from_double(int64_t channels, const double* scale, const double* offset, int32_t qmax,
                                          RequantResidual residual = RequantResidual::none,
                                          const double* residual_scale = nullptr, bool signed_codes = false);

// Declares |acc| <= acc_bound and |res| <= residual_bound for every call with q (the caller knows
// them from its weights: |acc| <= 255 max|w| R S C). When |acc m_c| + |res m'_c| + |B_c| < 2^53
// for every channel, the fast path then runs (2) in doubles, exactly (~2x faster than int64 on
// AVX-512), or in floats where (2f) was verified equal (above; ~2x faster again); else nothing
// changes. requantize_u8_ref checks the bounds and throws when a value exceeds them, so a wrong
// declaration cannot pass the tests pinning the two.
void bound_accumulators(Requantization& q, int64_t acc_bound, int64_t residual_bound = 0);

// The data of one call: rows x channels int32 accumulators (row stride ld_acc), the residual
// (row stride ld_residual; residual_s32 or residual_u8 as the Requantization's `residual` says, the
// other null), and the uint8 output (row stride ld_out).
struct RequantArgs {
  int64_t rows = 0;
  const int32_t* acc = nullptr;
  int64_t ld_acc = 0;
  const int32_t* residual_s32 = nullptr;
  const uint8_t* residual_u8 = nullptr;
  int64_t ld_residual = 0;
  uint8_t* out = nullptr;
  int64_t ld_out = 0;
};

void requantize_u8(const Requantization& q, const RequantArgs& a);
void requantize_u8_ref(const Requantization& q, const RequantArgs& a);

// A wide layer's epilogue (deploy/engine.cpp: weights beyond int8 run as two int8 halves, hi and lo,
// their accumulators added as 256 hi + lo, which the caller guarantees fits int32): per row the
// accumulator 256 hi + lo and the int32 residual res_a + res_b (each optional; the caller guarantees
// the sum fits int32), then (2) with q's constants (residual RequantResidual::s32). One pass, without
// the combined values in memory; on AVX-512 in floats with a per-lane error bound, the lanes within it
// of a half-integer (~2e-5 of a ResNet-20 first layer's outputs) by the exact rule, so (2)'s codes
// exactly. `_ref`: the combined values, then requantize_u8_ref.
struct WideRequantArgs {
  int64_t rows = 0;
  const int32_t* hi = nullptr;  // [rows] x C, rows ld_acc apart
  const int32_t* lo = nullptr;
  int64_t ld_acc = 0;
  const int32_t* residual_a = nullptr;  // or null
  int64_t ld_a = 0;
  const int32_t* residual_b = nullptr;  // or null
  int64_t ld_b = 0;
  uint8_t* out = nullptr;
  int64_t ld_out = 0;
};
void requantize_wide_u8(const Requantization& q, const WideRequantArgs& a);  // on the calling thread
void requantize_wide_u8_ref(const Requantization& q, const WideRequantArgs& a);

namespace detail {
// Internal (core/kernels/conv_int8.cpp, the fused epilogue): the argument checks of requantize_u8
// for `channels` channels and the residual pointers given, once per call ...
void check_requantization(const Requantization& q, int64_t channels, bool residual_s32, bool residual_u8,
                          const char* op);
// ... then requantize_u8 on the calling thread, unchecked, block by block.
void requantize_u8_rows(const Requantization& q, const RequantArgs& a);
}  // namespace detail

}  // namespace lowbit::kernels
