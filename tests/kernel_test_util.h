// Comparisons shared by the kernel parity tests (fast kernel vs its `_ref` twin).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace lowbit::test {

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
