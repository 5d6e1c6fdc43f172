// Per-layer quantization statistics for the epoch table and the report (no gradients).
//
//   level_stats: how close a weight tensor sits to the levels of a k-bit grid (regularizers.h).
//     The distance of a weight x is |x - nearest level|, the levels being the quantizer's finite set
//     inside [-1, 1] (grid_levels), so weights beyond +-1 are measured to the end level: the
//     distance is exactly the rounding error of the matching quantizer. It is measured on
//       Domain::raw             the float weights themselves (what the sinusoid regularizes; the
//                               exact domain of WRPN and fixed point, which clip raw w), or
//       Domain::tanh_normalized x = tanh(w) / max|tanh(w)| over the tensor, the domain in which
//                               DoReFa rounds (spec §8.2: w_q = 2 quantize_k(x/2 + 1/2) - 1).
//     mean_distance is in weight units; mean_distance_steps divides by the step Delta (0 on the
//     levels, at most 0.5 inside [-1, 1]); share_near is the fraction of weights with distance
//     <= near_fraction * Delta (default: within 1% of a level spacing).
//   weight_memory: bytes of weights stored at per-layer bits (numel * bits / 8, no packing
//     overhead) vs FP32 (4 bytes each); KB = 1024 bytes (convention 4); ratio = fp32 / quantized.
//   histogram: counts of finite values in `bins` equal bins over [lo, hi] (the last bin includes
//     hi); values outside are counted in below / above, NaN and inf in non_finite.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "quant/regularizers.h"

namespace lowbit::quant {

enum class Domain { raw, tanh_normalized };

struct LevelStats {
  int64_t count = 0;
  double step = 0;                 // Delta of the grid
  double mean_distance = 0;        // mean |x - nearest level|
  double mean_distance_steps = 0;  // mean_distance / Delta
  double share_near = 0;           // fraction with |x - nearest level| <= near_fraction * Delta
};

LevelStats level_stats(const Tensor& weight, Grid grid, int bits, Domain domain = Domain::raw,
                       double near_fraction = 0.01);

// The same statistics against the zeros of a sinusoid (m * step - offset, every integer m): how
// close the weights sit to the levels the regularizer pulls them to, at its current period.
LevelStats sinusoid_stats(const Tensor& weight, const SinusoidGrid& grid, double near_fraction = 0.01);

struct MemoryFootprint {
  double bytes = 0;       // at the given bits
  double fp32_bytes = 0;  // 4 bytes per weight
  double kb() const { return bytes / 1024; }
  double fp32_kb() const { return fp32_bytes / 1024; }
  double compression_ratio() const { return bytes > 0 ? fp32_bytes / bytes : 0; }
};

// numels[i] weights of layer i stored at bits[i] bits each.
MemoryFootprint weight_memory(const std::vector<int64_t>& numels, const std::vector<int>& bits);

struct Histogram {
  double lo = 0, hi = 1;
  std::vector<int64_t> counts;
  int64_t below = 0, above = 0, non_finite = 0;
  double bin_width() const { return counts.empty() ? 0 : (hi - lo) / static_cast<double>(counts.size()); }
  int64_t in_range() const;  // sum of counts
};

Histogram histogram(const Tensor& values, int bins, double lo, double hi);
// Range [min, max] of the finite values (widened by 0.5 on each side when they are all equal).
Histogram histogram(const Tensor& values, int bins);

}  // namespace lowbit::quant
