// Quantization statistics; see stats.h.
#include "quant/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace lowbit::quant {

LevelStats level_stats(const Tensor& weight, Grid grid, int bits, Domain domain, double near_fraction) {
  LOWBIT_CHECK(weight.defined(), "level_stats: undefined weight");
  LOWBIT_CHECK(near_fraction >= 0, "level_stats: near_fraction must be >= 0, got ", near_fraction);
  const std::vector<double> levels = grid_levels(grid, bits);
  std::vector<double> x = weight.to_vector();
  if (domain == Domain::tanh_normalized) {
    double m = 0;
    for (double& v : x) {
      v = std::tanh(v);
      m = std::max(m, std::abs(v));
    }
    if (m > 0)
      for (double& v : x) v /= m;
  }
  LevelStats s;
  s.count = static_cast<int64_t>(x.size());
  s.step = grid_step(grid, bits);
  if (x.empty()) return s;
  const double near = near_fraction * s.step;
  double total = 0;
  int64_t near_count = 0;
  for (double v : x) {
    const auto it = std::lower_bound(levels.begin(), levels.end(), v);
    double d = std::numeric_limits<double>::infinity();
    if (it != levels.end()) d = *it - v;
    if (it != levels.begin()) d = std::min(d, v - *(it - 1));
    total += d;
    // Relative slack so a weight exactly on a level computed in float still counts.
    if (d <= near * (1 + 1e-9)) ++near_count;
  }
  s.mean_distance = total / static_cast<double>(x.size());
  s.mean_distance_steps = s.mean_distance / s.step;
  s.share_near = static_cast<double>(near_count) / static_cast<double>(x.size());
  return s;
}

LevelStats sinusoid_stats(const Tensor& weight, const SinusoidGrid& grid, double near_fraction) {
  LOWBIT_CHECK(weight.defined(), "sinusoid_stats: undefined weight");
  LOWBIT_CHECK(grid.step > 0 && near_fraction >= 0, "sinusoid_stats: need step > 0 and near_fraction >= 0");
  const std::vector<double> x = weight.to_vector();
  LevelStats s;
  s.count = static_cast<int64_t>(x.size());
  s.step = grid.step;
  if (x.empty()) return s;
  double total = 0;
  int64_t near_count = 0;
  for (double v : x) {
    const double t = (v + grid.offset) / grid.step;
    const double d = std::abs(t - std::nearbyint(t)) * grid.step;
    total += d;
    if (d <= near_fraction * grid.step * (1 + 1e-9)) ++near_count;
  }
  s.mean_distance = total / static_cast<double>(x.size());
  s.mean_distance_steps = s.mean_distance / s.step;
  s.share_near = static_cast<double>(near_count) / static_cast<double>(x.size());
  return s;
}

MemoryFootprint weight_memory(const std::vector<int64_t>& numels, const std::vector<int>& bits) {
  LOWBIT_CHECK(numels.size() == bits.size(), "weight_memory: ", numels.size(), " layers but ", bits.size(),
               " bitwidths");
  MemoryFootprint m;
  for (size_t i = 0; i < numels.size(); ++i) {
    LOWBIT_CHECK(numels[i] >= 0 && bits[i] >= 1 && bits[i] <= 32, "weight_memory: layer ", i, " has ", numels[i],
                 " weights at ", bits[i], " bits");
    m.bytes += static_cast<double>(numels[i]) * bits[i] / 8;
    m.fp32_bytes += static_cast<double>(numels[i]) * 4;
  }
  return m;
}

int64_t Histogram::in_range() const {
  int64_t n = 0;
  for (int64_t c : counts) n += c;
  return n;
}

Histogram histogram(const Tensor& values, int bins, double lo, double hi) {
  LOWBIT_CHECK(bins >= 1, "histogram: bins must be >= 1, got ", bins);
  LOWBIT_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo < hi, "histogram: bad range [", lo, ", ", hi, "]");
  Histogram h;
  h.lo = lo;
  h.hi = hi;
  h.counts.assign(static_cast<size_t>(bins), 0);
  const double scale = bins / (hi - lo);
  for (double v : values.to_vector()) {
    if (!std::isfinite(v)) {
      ++h.non_finite;
    } else if (v < lo) {
      ++h.below;
    } else if (v > hi) {
      ++h.above;
    } else {
      const int b = std::min(bins - 1, static_cast<int>((v - lo) * scale));
      ++h.counts[static_cast<size_t>(b)];
    }
  }
  return h;
}

Histogram histogram(const Tensor& values, int bins) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : values.to_vector())
    if (std::isfinite(v)) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  if (!(lo <= hi)) lo = 0, hi = 1;  // no finite values
  if (lo == hi) lo -= 0.5, hi += 0.5;
  return histogram(values, bins, lo, hi);
}

}  // namespace lowbit::quant
