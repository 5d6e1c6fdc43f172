// Quantizers with straight-through gradients (spec §6, §8). Each is a differentiable function of
// Variables; the surrogate gradient stated with each one is what backward computes (pinned by
// tests/test_quantizers.cpp). k counts all bits, including the sign bit for weights (convention 1).
#pragma once

#include <memory>

#include "autograd/variable.h"
#include "core/random.h"

namespace lowbit::quant {

// quantize_k(r) = round((2^k - 1) r) / (2^k - 1), r in [0, 1]; identity STE.          §8.2
Variable quantize_unit(const Variable& r, int k);

// DoReFa weights, k >= 2: w_q = 2 quantize_k(tanh(w) / (2 max|tanh w|) + 1/2) - 1  (2^k levels in
//   [-1, 1], zero not a level). Gradient: identity STE through the round, exact through tanh and
//   the max (as tensorpack's autodiff).                                                 §8.2
// k = 1: w_q = E sign(w / E), E = mean|w| detached, sign(0) = +1; gradient identity.
//   With scaled = false, Distiller's unscaled sign(w) (gradient identity).
Variable dorefa_weight(const Variable& w, int k, bool scaled = true);
// DoReFa activations: a_q = quantize_k(clip(a, 0, 1)); gradient 1[0 <= a <= 1].        §8.2
Variable dorefa_activation(const Variable& a, int k);
// DoReFa gradient quantization (k_G bits): identity forward; backward replaces the incoming
// gradient dr by (quantize_kG(clip(dr / maxx / 2 + 1/2 + U(-1/2n, 1/2n), 0, 1)) - 1/2) 2 maxx,
// maxx = max|dr| per sample (all axes but the batch axis), n = 2^kG - 1.               §8.2
// The noise is drawn from gen when backward runs; the closure shares ownership of gen, so it
// stays alive as long as the graph does. gen must not be null.
Variable dorefa_gradient(const Variable& x, int k_g, std::shared_ptr<Generator> gen);

// WRPN weights: w_q = round((2^(k-1) - 1) clip(w, -1, 1)) / (2^(k-1) - 1): 2^k - 1 levels.
//   Gradient 1[-1 <= w <= 1].                                                           §8.3
Variable wrpn_weight(const Variable& w, int k);
// WRPN activations: a_q = round((2^k - 1) clip(a, 0, 1)) / (2^k - 1); gradient 1[0 <= a <= 1].
Variable wrpn_activation(const Variable& a, int k);

// Binary weights, BNN: sign(w) (sign(0) = +1); gradient 1[|w| <= 1] (hardtanh STE).    §8.6
Variable binary_weight(const Variable& w);
// Ternary weights, TWN: delta = 0.7 mean|W|, alpha = mean over |W| > delta of |W|,
//   W_t = alpha sign(W) 1[|W| > delta]; gradient identity to W.                          §8.6
Variable ternary_weight(const Variable& w);

// Uhlich et al., parametrization U3 = [d, q_max] (both one-element Variables).          §6.1-§6.5
//   Forward (§6.3 and the official code, parametric_fixed_point_quantize_d_xmax): the step is
//   rounded to a power of two and the range snapped to a multiple of it,
//     d' = 2^round(log2 d),   n = max(round(q_max / d'), 1),   q' = n d'      (round: half away from 0)
//     Q(x) = sign(x) d' floor(min(|x|, q') / d' + 1/2)        signed: 2n + 1 levels {-q', ..., q'}
//     Q(x) = d' floor(clip(x, 0, q') / d' + 1/2)              unsigned (after ReLU): n + 1 levels
//   i.e. d' round(clip(x, -q', q') / d'). Its values equal the official d' round(clip(x, -q_max,
//   q_max) / d') (ties aside); snapping q' = round(q_max / d') d' is what train_resnet.py does
//   before it infers the bitwidth, so forward and u3_bits describe the same grid. Monotone in x.
//   Backward: the chain rule of that forward with an identity STE for every round (nnabla's
//   F.round), exact through 2^(.) and log2 (so dd'/dd = d'/d, dq'/dq_max = 1, dq'/dd' = (q' -
//   q_max)/d'). It equals the official code's gradients except for |x| between q_max and q'
//   (the official code splits inside/outside at q_max). With Q the output, q' the snapped range
//   (also when the guard max(., 1) is active), backward computes:
//     inside  (|x| <= q'; unsigned 0 <= x <= q'):  dQ/dx = 1, dQ/dd = (Q - x)/d, dQ/dq_max = 0
//     outside (|x| > q';  unsigned x > q'):        dQ/dx = 0, dQ/dd = sign(x)(q' - q_max)/d,
//                                                  dQ/dq_max = sign(x)
//     unsigned x < 0:                              all three 0
//   (§6.2's U3 gradients; the outside dQ/dd is 0 whenever q_max is a multiple of d'.)
Variable uniform_u3(const Variable& x, const Variable& d, const Variable& q_max, bool signed_ = true);

// The same symmetric grid with a fixed step that is not rounded and not learned (for callers
// that need an exact step, e.g. WaveQ's period in quant/regularizers): n >= 1 steps a side,
//   Q(x) = sign(x) d floor(min(|x|, n d) / d + 1/2),  2n + 1 levels; gradient 1[|x| <= n d] to x.
// Its bitwidth is u3_bits(1, n). (This was uniform_u3 before it rounded d, for q_max = n d.)
Variable uniform_fixed(const Variable& x, double d, int64_t n);

struct U3Params {
  double d = 0, q_max = 0;
};
// The grid uniform_u3 uses: {d', q'} as above.
U3Params u3_effective(double d, double q_max);
// Inferred bitwidth on that grid (§6.3, train_resnet.py): n = q'/d',
//   b = max(ceil(log2(n + 1) + 1), 2) signed (2n + 1 <= 2^b - 1 levels),
//   b = max(ceil(log2(n + 1)), 1) unsigned (n + 1 <= 2^b levels). No upper clip.
int u3_bits(double d, double q_max, bool signed_ = true);
// §6.5 initialisation (model_resnet.py find_delta): d = 2^floor(log2(m / (2^(b-1) - 1))), ceil
//   instead of floor when b > 4, m = max|w| + 2^-23 (float32 eps, as the official code);
//   q_max = d (2^(b-1) - 1), so u3_bits(d, q_max) = b. b >= 2.
U3Params u3_init_weight(const Tensor& w, int bits);
// Without pre-trained weights (§6.5 "from random init"): d = 2^-3, q_max = d (2^(b-1) - 1).
U3Params u3_init_weight(int bits);
// Activations (official nonl(), data independent): d = 2^-3, q_max = d (2^b - 1); u3_bits
//   (unsigned) = b. b >= 1.
U3Params u3_init_activation(int bits);
// §6.4 value clipping, to be called by the caller after every optimizer step; in place, in the
// order of train_resnet.py clip_quant_vals (margins 1e-5 as there):
//   d, q_max <- min(d, q_max - 1e-5), max(d + 1e-5, q_max)   (both from the old values)
//   d      <- clip(d, 2^-8 + 1e-5, 1 - 1e-5)
//   q_max  <- clip(q_max, 2^-8 + 1e-5, 127 - 1e-5) signed (weights), 255 - 1e-5 unsigned
// (leaves d < q_max except when both end at the lower bound.)
void u3_clip_parameters(Variable& d, Variable& q_max, bool signed_ = true);

// Uhlich et al. uniform quantizer, parametrizations U1 = [b, d] and U2 = [b, q_max] (one-element
// Variables), on uniform_u3's grid.                                                      §6.1-§6.3
//   Forward (§6.3; the official parametric_fixed_point_quantize_d_b / _b_xmax): b is rounded to an
//   integer and clamped, b' = min(max(round(b), b_min), 16) (round: half away from 0), b_min = 2
//   signed (one sign bit, §6.1's b >= 2), 1 unsigned (after ReLU: {0, d'}); 16 is the official
//   n_max. With N = 2^(b'-1) signed, 2^b' unsigned, and n = N - 1 steps a side, the step is a
//   power of two and the range follows from the tie relation q_max = n d (§6.1; unsigned as u3_bits):
//     U1:  d' = 2^round(log2 d),            q' = n d'
//     U2:  d' = 2^round(log2(q_max / n)),   q' = n d'
//   and Q(x) is uniform_u3's on {d', q'}: sign(x) d' floor(min(|x|, q') / d' + 1/2) signed (2n + 1 =
//   2^b' - 1 levels), d' floor(clip(x, 0, q') / d' + 1/2) unsigned (n + 1 = 2^b' levels), so that
//   u3_bits(d', q') = b'. U1 is the official forward; for U2 the official code clips at the raw
//   q_max, whose top level round(q_max / d') d' can exceed n d' (up to sqrt(2) n steps, b' + 1 bits);
//   here the tie holds and the grid has b' bits, and inside/outside split at q', not at q_max.
//   Backward: the chain rule of that forward with an identity STE for every round (b's included),
//   exact through 2^(.) and log2; the clamp of b is passed through as the identity, like
//   uniform_u3's guard (the official clip_scalar zeroes b's gradient outside [n_min, n_max]; keep b
//   in range after each step). So dn/db = N ln2, and dd'/dd = d'/d (U1), dd'/dq_max = d'/q_max and
//   dd'/db = -d' N ln2 / n (U2). With Q the output and s = sign(x) (sign(0) = 0, Q(0) = 0):
//   U1, theta = [b, d]:
//     inside  (|x| <= q'; unsigned 0 <= x <= q'):  dQ/dx = 1, dQ/db = 0,           dQ/dd = (Q - x)/d
//     outside (|x| > q';  unsigned x > q'):        dQ/dx = 0, dQ/db = s N ln2 d',  dQ/dd = s n d'/d
//     unsigned x < 0:                              all three 0
//   (§6.2's U1 gradients. Outside, §6.2 prints 2^(b-1) ln2 d sign(x) and (2^(b-1) - 1) sign(x); the
//   rounding of d puts d' for d in the first and the factor d'/d in [1/sqrt(2), sqrt(2)] in the
//   second: they agree when d is a power of two. Inside, (Q - x)/d is with the raw d, as U3's.)
//   U2, theta = [b, q_max]:
//     inside  (|x| <= q'; unsigned 0 <= x <= q'):  dQ/dx = 1, dQ/db = -(N ln2 / n)(Q - x),
//                                                  dQ/dq_max = (Q - x)/q_max
//     outside (|x| > q';  unsigned x > q'):        dQ/dx = 0, dQ/db = 0, dQ/dq_max = s q'/q_max
//     unsigned x < 0:                              all three 0
//   (§6.2's U2 gradients, the inside dQ/dq_max being the spec's [D] re-derivation; the rounding of d'
//   changes only the outside dQ/dq_max, sign(x) in §6.2, by the factor q'/q_max in [1/sqrt(2),
//   sqrt(2)], 1 when q_max / n is a power of two.) Both grow exponentially with b (§6.2).
//   Initialisation (§6.5): b = bits with d (U1) or q_max (U2) of u3_init_weight / u3_init_activation,
//   whose d is a power of two and q_max = n d: u1_effective / u2_effective then give that grid.
Variable uniform_u1(const Variable& x, const Variable& b, const Variable& d, bool signed_ = true);
Variable uniform_u2(const Variable& x, const Variable& b, const Variable& q_max, bool signed_ = true);
// b' above: the bitwidth U1 and U2 quantize at, which is also u3_bits of their grid.
int u12_bits(double b, bool signed_ = true);
// The grid uniform_u1 / uniform_u2 use: {d', q'} as above.
U3Params u1_effective(double b, double d, bool signed_ = true);
U3Params u2_effective(double b, double q_max, bool signed_ = true);

// Uhlich et al. power-of-two quantizer, parametrization P3 = [q_min, q_max] (one-element
// Variables).                                                                            §6.1-§6.3
//   Forward: q_min' = 2^round(log2 q_min), q_max' = max(2^round(log2 q_max), q_min'), and with
//   s = sign(x), sign(0) = +1 (nnabla's F.sign):
//     Q(x) = s q_min'                     |x| <= q_min'
//          = s 2^round(log2 |x|)          q_min' < |x| <= q_max'
//          = s q_max'                     |x| > q_max'
//   M = log2(q_max'/q_min') + 1 magnitudes, 2M levels (no zero, as §6.1). Unsigned (after ReLU):
//   Q(x) = 0 for x <= 0, else as above: M + 1 levels.
//   Backward: §6.2's P3 gradients with the official code's detached sign(x), an identity STE for
//   every round, exact through 2^(.) and log2 (so dq_min'/dq_min = q_min'/q_min, likewise q_max):
//     |x| <= q_min':          dQ/dx = 0,          dQ/dq_min = s q_min'/q_min, dQ/dq_max = 0
//     q_min' < |x| <= q_max': dQ/dx = |Q|/|x|,    dQ/dq_min = 0,              dQ/dq_max = 0
//     |x| > q_max':           dQ/dx = 0,          dQ/dq_min = 0,              dQ/dq_max = s q_max'/q_max
//     unsigned x <= 0:        all three 0
Variable pow2_p3(const Variable& x, const Variable& q_min, const Variable& q_max, bool signed_ = true);
// Inferred bitwidth (§6.3 b(theta_P), train_resnet.py), on the rounded q_min', q_max':
//   b = max(ceil(log2(M) + 1), b_min), b_min = 2 signed, 1 unsigned. 2M <= 2^b (signed) and
//   M + 1 <= 2^b (unsigned) levels.
int p3_bits(double q_min, double q_max, bool signed_ = true);
// §6.5 initialisation of P3 (model_resnet.py get_quantizers / nonl): from U3's d at b bits
//   (u3_init_weight; activations d = 2^-3), q_max = 2^round(log2(d (2^(b-1) - 1))) for weights,
//   2^round(log2(d (2^b - 1))) for activations, q_min = q_max / 2^(2^(b-1) - 1), then clipped as
//   p3_clip_parameters does; p3_bits of the result is b when the clips leave it alone.
struct P3Params {
  double q_min = 0, q_max = 0;
};
P3Params p3_init_weight(const Tensor& w, int bits);
P3Params p3_init_activation(int bits);
// §6.4 value clipping after every optimizer step (train_resnet.py clip_quant_vals, margins 1e-5):
//   q_min, q_max <- min(q_min, q_max - 1e-5), max(q_min + 1e-5, q_max)   (from the old values)
//   q_min <- clip(q_min, 2^-16 + 1e-5, 127 - 1e-5) signed, (2^-14 + 1e-5, 255 - 1e-5) unsigned
//   q_max <- clip(q_max, 2^-8 + 1e-5, 127 - 1e-5) signed, 255 - 1e-5 unsigned
void p3_clip_parameters(Variable& q_min, Variable& q_max, bool signed_ = true);

// Uhlich et al. power-of-two quantizer, parametrizations P1 = [b, q_max] and P2 = [b, q_min]
// (one-element Variables), on pow2_p3's grid.                                            §6.1-§6.3
//   Forward (§6.3; the official parametric_pow2_quantize_b_xmax / _b_xmin, signed as with_zero =
//   False, unsigned with with_zero = True's tie, without its pruning of |x| < q_min'/sqrt(2) to 0):
//   b' = min(max(round(b), b_min), 8) (round: half away from 0), b_min = 2 signed (as p3_bits), 1
//   unsigned; 8 is the official n_max (127 octaves). E = 2^(b'-1) - 1 octaves, M = E + 1 = 2^(b'-1)
//   magnitudes, the tie relation q_max = 2^E q_min (§6.1) both signed and unsigned: p3_bits's
//   convention (signed 2M = 2^b' levels; unsigned M + 1 <= 2^b', zero keeping a code of its own), so
//   that p3_bits(q_min', q_max') = b'. The given range parameter is rounded to a power of two, the
//   other follows exactly:
//     P1:  q_max' = 2^round(log2 q_max),   q_min' = 2^-E q_max'
//     P2:  q_min' = 2^round(log2 q_min),   q_max' = 2^E q_min'
//   and Q(x) is pow2_p3's on {q_min', q_max'} (s = sign(x), sign(0) = +1; unsigned: Q = 0 for x <= 0).
//   Backward (§6.2 gives none): the chain rule of that forward with an identity STE for every round
//   (b's included), exact through 2^(.) and log2, the clamp of b passed through as in U1/U2 and
//   sign(x) detached as in pow2_p3. So dE/db = 2^(b'-1) ln2 and
//     P1: dq_max'/dq_max = q_max'/q_max, dq_min'/dq_max = q_min'/q_max, dq_min'/db = -q_min' ln2 dE/db
//     P2: dq_min'/dq_min = q_min'/q_min, dq_max'/dq_min = q_max'/q_min, dq_max'/db =  q_max' ln2 dE/db
//   With L = 2^(b'-1) (ln 2)^2:
//                               dQ/dx     P1: dQ/db      dQ/dq_max        P2: dQ/db     dQ/dq_min
//     |x| <= q_min':            0         -s L q_min'    s q_min'/q_max   0             s q_min'/q_min
//     q_min' < |x| <= q_max':   |Q|/|x|   0              0                0             0
//     |x| > q_max':             0         0              s q_max'/q_max   s L q_max'    s q_max'/q_min
//     unsigned x <= 0:          all 0
//   Without the rounding (q' = q) P1's nonzero entries are -s 2^(b-1) ln^2(2) q_min, s 2^-E, s and
//   P2's s, s 2^E, s 2^(b-1) ln^2(2) q_max: the rounding brings the factors q'/q in [1/sqrt(2),
//   sqrt(2)] of pow2_p3. The b entries grow exponentially with b, the 2^E ones doubly (cf. §6.2's remark
//   on U1 / U2).
Variable pow2_p1(const Variable& x, const Variable& b, const Variable& q_max, bool signed_ = true);
Variable pow2_p2(const Variable& x, const Variable& b, const Variable& q_min, bool signed_ = true);
// b' above: the bitwidth P1 and P2 quantize at, which is also p3_bits of their grid.
int p12_bits(double b, bool signed_ = true);
// The grid pow2_p1 / pow2_p2 use: {q_min', q_max'} as above.
P3Params p1_effective(double b, double q_max, bool signed_ = true);
P3Params p2_effective(double b, double q_min, bool signed_ = true);

// LSQ: v_q = s round(clip(v/s, -Q_N, Q_P)), Q_N = 2^(b-1), Q_P = 2^(b-1) - 1 (signed) or Q_N = 0,
//   Q_P = 2^b - 1 (unsigned). Gradients: dv = 1 inside; ds = (round(v/s) - v/s) inside, -Q_N
//   or Q_P outside, times the gradient scale g = 1/sqrt(N Q_P).                          §8.4
//   N is the number of weights (batched = false: N = v.numel()), or for activations the number
//   of features per sample (batched = true: dim 0 is the batch, N = v.numel() / v.size(0)), so
//   that g does not depend on the batch size. Runs as quant::step_quantize (StepGradient::full),
//   one fused pass each way, the same values as the composed round_ste(clamp(v / s)) s.
Variable lsq(const Variable& v, const Variable& s, int b, bool signed_ = true, bool batched = false);
// LSQ's step-size initialisation 2 mean|v| / sqrt(Q_P).
double lsq_init_step(const Tensor& v, int b, bool signed_ = true);

// PACT: y = clip(x, 0, alpha), y_q = round(y (2^k - 1)/alpha) alpha/(2^k - 1).
//   Gradients (Distiller): dx = 1[0 < x < alpha], dalpha = sum 1[x >= alpha].            §8.5
//   Both PACTs: one pass forward (kernels::clip_quantize_forward), one backward giving dx and the
//   dalpha sums (kernels::clip_open_backward); under a double backward, the same from masks.
Variable pact(const Variable& x, const Variable& alpha, int k);

// Signed PACT, for a signed activation without an activation function (MobileNet v2's residual
// stream; layers/container.h StreamPoint): symmetric, n = 2^(k-1) - 1 levels a side (k >= 2 counts
// the sign bit; 2n + 1 levels, zero one of them),
//   y = clip(x, -alpha, alpha),  y_q = round(y n / alpha) alpha / n          (round: half to even)
// Surrogate gradients, PACT's on each side (the rounding passed straight through):
//   dy_q/dx = 1[-alpha < x < alpha],  dy_q/dalpha = 1[x >= alpha] - 1[x <= -alpha]
// (so dL/dalpha = sum of the incoming gradient over the elements clipped above minus those clipped
// below). alpha must be a positive one-element Variable. The integer engine stores the codes
// round(y n / alpha) as 128 + code in uint8 (docs/format.md).
Variable signed_pact(const Variable& x, const Variable& alpha, int k);

}  // namespace lowbit::quant
