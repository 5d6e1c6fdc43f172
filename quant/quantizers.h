// Quantizers with straight-through gradients (spec §6, §8). Each is a differentiable function of
// Variables; the surrogate gradient stated with each one is what backward computes (pinned by
// tests/test_quantizers.cpp). k counts all bits, including the sign bit for weights (convention 1).
#pragma once

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
Variable dorefa_gradient(const Variable& x, int k_g, Generator& gen);

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

// Uhlich et al. uniform quantizer, parametrization U3 = [d, q_max] (both Variables, scalars):
//   Q(x) = sign(x) d floor(|x|/d + 1/2) for |x| <= q_max, sign(x) q_max otherwise.       §6.1
//   Gradients (§6.2): dQ/dx = 1[|x| <= q_max]; dQ/dd = (Q(x) - x)/d inside, 0 outside;
//   dQ/dq_max = 0 inside, sign(x) outside. With signed = false the input is first clipped at 0
//   (activations after ReLU).
Variable uniform_u3(const Variable& x, const Variable& d, const Variable& q_max, bool signed_ = true);
// Inferred bitwidth b = ceil(log2(q_max/d + 1) + 1) (signed), ceil(log2(q_max/d + 1)) (unsigned),
// at least b_min (2 for weights, 1 for activations).                                    §6.3
int u3_bits(double d, double q_max, bool signed_ = true);

// LSQ: v_q = s round(clip(v/s, -Q_N, Q_P)), Q_N = 2^(b-1), Q_P = 2^(b-1) - 1 (signed) or Q_N = 0,
//   Q_P = 2^b - 1 (unsigned). Gradients: dv = 1 inside; ds = (round(v/s) - v/s) inside, -Q_N
//   or Q_P outside, times the gradient scale g = 1/sqrt(N Q_P) (N = v.numel()).          §8.4
Variable lsq(const Variable& v, const Variable& s, int b, bool signed_ = true);
// LSQ's step-size initialisation 2 mean|v| / sqrt(Q_P).
double lsq_init_step(const Tensor& v, int b, bool signed_ = true);

// PACT: y = clip(x, 0, alpha), y_q = round(y (2^k - 1)/alpha) alpha/(2^k - 1).
//   Gradients (Distiller): dx = 1[0 < x < alpha], dalpha = sum 1[x >= alpha].            §8.5
Variable pact(const Variable& x, const Variable& alpha, int k);

}  // namespace lowbit::quant
