// Sinusoidal quantization regularizers: SinReQ (spec §2.1, fixed bits) and WaveQ / SINAREQ (spec
// §1.1, learned per-layer bitwidth beta). Both are differentiable functions of Variables built from
// autograd ops (sin, mul, exp, sum, mean), so gradients w.r.t. the weights and w.r.t. beta follow
// by autograd; they equal the closed forms of spec §1.2 / §2.1 (pinned by tests/test_regularizers).
//
// Shapes: every weight tensor may have any shape; each beta is a one-element Variable (shape {} or
// {1}) of the weight's dtype. Results are one-element Variables (shape {} for 0-d betas).
// The regularizers act on the float ("shadow") weights (convention 6), raw, not tanh-normalised.
//
// Grids. A sinusoid sin^2(pi (w + c) / Delta) has zeros at w = m Delta - c and maxima half-way
// between them. With k = weight bits *including the sign bit* (convention 1) the three grids are
// (spec §2.1 table, with q = k - 1 magnitude bits):
//
//   grid         Delta              c          zeros (levels)                 matching quantizer
//   dorefa       2 / (2^k - 1)      Delta/2    odd multiples of 1/(2^k - 1)    dorefa_weight(w, k), 2^k levels
//   wrpn         1 / (2^(k-1) - 1)  0          multiples of 1/(2^(k-1) - 1)    wrpn_weight(w, k), 2^k - 1 levels
//   fixed_point  2^-(k-1)           0          multiples of 2^-(k-1)           signed Q1.(k-1): k-1 fraction bits
//
// WaveQ's beta counts magnitude bits: its grid is the k = beta + 1 grid (spec §1.1 [D], §1.4):
//   wrpn: Delta = 1/(2^beta - 1), c = 0        (the paper's sin^2(pi w (2^beta - 1)), eq. of §1.1)
//   dorefa: Delta = 1/(2^beta - 0.5), c = Delta/2  (the official PyTorch script, §1.4)
//   fixed_point: Delta = 2^-beta, c = 0
// For the DoReFa grid the zeros match the DoReFa levels exactly only in the tanh-normalised domain
// (spec §1.4 caveat); on raw w the alignment is the official code's approximation.
//
// Per layer the penalty is reduced over the weights by `Reduction::sum` (paper formula) or
// `Reduction::mean` (official code; lambda is then scaled by 1/N_i), and the layers are summed.
//
// Weight scale. The grids live on [-1, 1]; raw weights of a Kaiming-initialised layer sit within
// about +-0.1 of 0, so at small beta they all fall in the basin of the level 0 and the sinusoid
// stops resisting the bitwidth penalty (beta collapses to its floor in float training).
// `WeightScale::max_abs` applies the sinusoid to w / s_i with s_i = max_j |w_ij| (the per-layer
// normalisation of the official transformer code, spec §1.5 [O]). A matching quantizer is
// s * wrpn(w / s) (QuantConfig::weight_scale).
// `WeightScale::tanh_max` applies it to y = tanh(w) / max_j |tanh(w_ij)|, the domain DoReFa rounds
// in (spec §8.2): with the DoReFa grid the sinusoid's zeros are then exactly DoReFa's levels, where
// on raw w (the official code) they line up only when max|w| happens to be near 1. Gradients go
// through tanh; the quantizer is dorefa_weight itself.
// The scale is a constant in both (re-read from the weights at every call, no gradient through
// the max; the official code's max is a static per-layer constant): the sinusoid moves weights to
// the levels, not the levels to the weights. Through the max, the whole layer's pull toward the
// level 0 lands on its largest weight, which then grows until every other weight rounds to 0.
#pragma once

#include <string>
#include <vector>

#include "autograd/ops.h"
#include "autograd/variable.h"

namespace lowbit::quant {

enum class Grid { dorefa, wrpn, fixed_point };
enum class WeightScale { none, max_abs, tanh_max };
WeightScale parse_weight_scale(const std::string& name);  // "none" | "max" | "tanh"
// WaveQ's normalisation of the weight term (spec §1.1, §1.4): R0 none, R1 / 2^beta, R2 / 4^beta.
enum class Normalization { R0, R1, R2 };
// Reduction over the weights of one layer is lowbit::Reduction (autograd/ops.h): sum or mean
// (none is rejected); layers are always summed. Reusing the autograd enum keeps `Reduction::mean`
// unambiguous in code that opens both namespaces.

// Step Delta and offset c of the grid for k-bit weights (sign bit included). Requires k >= 1
// (k >= 2 for wrpn, whose k = 1 grid is degenerate).
double grid_step(Grid grid, int bits);
double grid_offset(Grid grid, int bits);
// The quantizer's levels inside [-1, 1] (ascending): the points the sinusoid's zeros coincide with
// (dorefa 2^k, wrpn 2^k - 1, fixed_point 2^k from -1 to 1 - Delta).
std::vector<double> grid_levels(Grid grid, int bits);

struct SinReQOptions {
  Grid grid = Grid::dorefa;
  Reduction reduction = Reduction::mean;
  WeightScale scale = WeightScale::none;
};

// SinReQ, spec §2.1: sum_i reduce_j sin^2(pi (w_ij + c_i) / Delta_i) with Delta_i, c_i of the
// k_i = bits[i] grid. Unweighted: the trainer multiplies by lambda(t) (quant/schedules.h).
// Gradient [D]: d/dw_ij = (pi / Delta_i) sin(2 pi (w_ij + c_i) / Delta_i) (/ N_i for mean).
Variable sinreq_penalty(const std::vector<Variable>& weights, const std::vector<int>& bits,
                        const SinReQOptions& options = {});
// One layer's term (reduce_j sin^2(...)).
Variable sinreq_layer(const Variable& weight, int bits, const SinReQOptions& options = {});

struct WaveQOptions {
  Grid grid = Grid::wrpn;
  Normalization norm = Normalization::R1;
  Reduction reduction = Reduction::mean;
  WeightScale scale = WeightScale::none;
  double beta_min = 1, beta_max = 8;  // convention 3; used by clamp_betas(betas, options)
};

// The two WaveQ terms, returned separately so the trainer weights them by the schedule:
//   R = lambda_w(t) * weight_term + lambda_beta(t) * bitwidth_term.
struct WaveQTerms {
  Variable weight_term;    // sum_i reduce_j sin^2(pi (w_ij + c(beta_i)) / Delta(beta_i)) * n(beta_i)
  Variable bitwidth_term;  // sum_i beta_i
};

// WaveQ, spec §1.1 with the grid alignments of §1.4 and normalisation n(beta) = 1, 2^-beta, 4^-beta
// (R0, R1, R2). For the wrpn grid, R1 and sum reduction it is exactly the paper's
//   sum_i sum_j sin^2(pi w_ij (2^beta_i - 1)) / 2^beta_i,
// whose gradients are (spec §1.2, u = pi w (2^beta - 1)):
//   dR/dw = pi (2^beta - 1) sin(2u) / 2^beta,   dR/dbeta = ln2 sum_j [pi w sin(2u) - sin^2(u) / 2^beta].
// With a fixed beta and R0 the weight term equals sinreq_penalty at k = beta + 1 bits, same grid.
WaveQTerms waveq_penalty(const std::vector<Variable>& weights, const std::vector<Variable>& betas,
                         const WaveQOptions& options = {});
// One layer's weight term.
Variable waveq_layer(const Variable& weight, const Variable& beta, const WaveQOptions& options = {});

// The sinusoid of a WaveQ layer at a real-valued beta: zeros at m * step - offset (the grids of
// the table above with k = beta + 1; used for statistics and plots of the current period).
struct SinusoidGrid {
  double step = 1, offset = 0;
};
SinusoidGrid waveq_grid(Grid grid, double beta);
// The SinReQ sinusoid for k-bit weights (grid_step, grid_offset).
SinusoidGrid sinreq_grid(Grid grid, int bits);

// The per-layer scale s the sinusoid divides the weights by (1 for WeightScale::none).
// For tanh_max it is max|tanh w|, dividing tanh(w) (see SinusoidDomain).
double weight_scale_of(const Tensor& weight, WeightScale scale);

// A layer's weights as the sinusoid sees them, y(w): w, w / max|w| or tanh(w) / max|tanh w|, with
// the scale frozen at the layer's current weights; `from` maps a point y of the grid back to
// weight units (for plotting the levels over a weight histogram).
struct SinusoidDomain {
  WeightScale scale = WeightScale::none;
  double s = 1;
  double to(double w) const;
  double from(double y) const;
};
SinusoidDomain sinusoid_domain(const Tensor& weight, WeightScale scale);
Tensor to_sinusoid_domain(const Tensor& weight, WeightScale scale);

// The k-bit wrpn grid on the layer's scale: s * wrpn_weight(w / s, k), s = weight_scale_of(w, scale)
// held constant (`none` or `max`). STE gradient 1 on [-s, s] (the quantizer of --weight-scale max).
Variable wrpn_on_scale(const Variable& weight, int bits, WeightScale scale);
// Rounds a WaveQ layer's weights onto the zeros of its sinusoid at the learned, real-valued beta
// (wrpn grid), m d with d = s / (2^beta - 1), |m| <= M = floor(2^beta - 1), s = weight_scale_of(w,
// scale) (1 for none; `max` only, not `tanh`): U3's uniform grid at the exact (not power-of-two)
// step d and range M d, uniform_fixed(w, d, M) (quantizers.h, spec §6.1). Its 2M + 1 levels fit in
// the reported k = learned_weight_bits(beta) = ceil(beta) + 1 bits (u3_bits(1, M) <= k, one less
// when 2^beta - 1 is just above an integer); at an integer beta it is s * wrpn_weight(w / s, beta + 1).
// Gradient: the straight-through 1[|w| <= M d] w.r.t. w.
Variable quantize_on_period(const Variable& weight, double beta, WeightScale scale);
// Whether rounding on the period (quantize_on_period) leaves a smaller squared error than rounding
// on the k = ceil(beta) + 1-bit wrpn grid (wrpn_on_scale), at the same bits: the period
// wins where the sinusoid has gathered the weights, the (finer) grid where it has not. Weights only.
bool period_rounds_closer(const Tensor& weight, double beta, WeightScale scale);

// Clamps every beta into [lo, hi] in place (convention 3), to be called after the optimizer step.
void clamp_betas(const std::vector<Variable>& betas, double lo, double hi);
inline void clamp_betas(const std::vector<Variable>& betas, const WaveQOptions& options) {
  clamp_betas(betas, options.beta_min, options.beta_max);
}

// Reported learned bitwidth b = ceil(beta) (convention 2): magnitude bits, as WaveQ's beta.
int learned_bits(double beta);
// The sign-counting weight bitwidth of the same grid, k = ceil(beta) + 1 (convention 1, §1.1 [D]).
int learned_weight_bits(double beta);

}  // namespace lowbit::quant
