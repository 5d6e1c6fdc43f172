// Inputs and comparisons shared by the kernel parity tests (fast kernel vs its `_ref` twin).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace lowbit::test {

// What random_vec draws: offset + spread * u per element, u from `dist`:
//   uniform   u ~ U(-1, 1)
//   normal    u ~ N(0, 1)
//   quarters  u = k / 4 with k uniform in {-8, ..., 8}: few distinct values, so maxima tie often
// specials: about 1 in 200 elements becomes NaN and 1 in 200 becomes -inf.
struct RandomSpec {
  enum class Dist { uniform, normal, quarters };
  Dist dist = Dist::uniform;
  double offset = 0.0, spread = 1.0;
  bool specials = false;
};

// n values from a std::mt19937 seeded with `seed` (same seed and spec, same values).
template <class T>
std::vector<T> random_vec(int64_t n, uint32_t seed, const RandomSpec& spec = {}) {
  using Dist = RandomSpec::Dist;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_int_distribution<int> quarters(-8, 8), rare(0, 199);
  std::vector<T> v(static_cast<size_t>(n));
  for (auto& e : v) {
    const double u = spec.dist == Dist::uniform  ? uniform(rng)
                     : spec.dist == Dist::normal ? normal(rng)
                                                 : quarters(rng) * 0.25;
    e = T(spec.offset + spec.spread * u);
    if (spec.specials) {
      const int r = rare(rng);
      if (r == 0) e = std::numeric_limits<T>::quiet_NaN();
      if (r == 1) e = -std::numeric_limits<T>::infinity();
    }
  }
  return v;
}

// max |a - b| relative to max |b| (plus a floor so all-zero outputs compare absolutely).
template <class T>
double rel_err(const std::vector<T>& a, const std::vector<T>& b) {
  double diff = 0, scale = 1e-3;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return diff / scale;
}

template <class T>
bool bit_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

}  // namespace lowbit::test
