// The sinusoid's per-element pass (see sinusoid.h): fast blocked loops and their `_ref` twins.
#include "core/kernels/sinusoid.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <vector>

#include "core/parallel.h"

namespace lowbit::kernels {
namespace {

constexpr double kInvPi = 0.318309886183790671537767526745;
constexpr double kMagic = 0x1.8p52;  // v + kMagic rounds v to an integer kept in the low mantissa bits
// π = kPi1 + kPi2 + kPi3 (Cephes' split of π/4, times 4): kPi1 and kPi2 carry 26 significant bits,
// so k kPi1 and k kPi2 are exact for |k| < 2^27, and r = v − k π keeps its precision.
constexpr double kPi1 = 3.14159250259399414062e0;
constexpr double kPi2 = 1.50995788317231926e-7;
constexpr double kPi3 = 1.07806057163162381e-14;
constexpr double kLimit = 67108864.0 * 3.14159265358979323846;  // 2^26 π: |k| <= 2^26
// Odd Taylor coefficients 1/(2j+1)! with signs; on |r| <= π/2 the first term left out, r^23/23!,
// is below 1.2e-18.
constexpr double kC3 = -1.0 / 6.0, kC5 = 1.0 / 120.0, kC7 = -1.0 / 5040.0, kC9 = 1.0 / 362880.0,
                 kC11 = -1.0 / 39916800.0, kC13 = 1.0 / 6227020800.0, kC15 = -1.0 / 1307674368000.0,
                 kC17 = 1.0 / 355687428096000.0, kC19 = -1.0 / 121645100408832000.0,
                 kC21 = 1.0 / 51090942171709440000.0;

// sin(v) for |v| < kLimit: v = k π + r with |r| <= π/2 (up to rounding), sin v = (−1)^k sin r.
// Branch-free so the loops that call it vectorize.
inline double sin_reduced(double v) {
  const double t = v * kInvPi + kMagic;
  const double k = t - kMagic;
  const uint64_t odd = std::bit_cast<uint64_t>(t) << 63;  // k's parity into the sign bit
  double r = v - k * kPi1;
  r -= k * kPi2;
  r -= k * kPi3;
  const double r2 = r * r;
  double p = kC21;
  p = p * r2 + kC19;
  p = p * r2 + kC17;
  p = p * r2 + kC15;
  p = p * r2 + kC13;
  p = p * r2 + kC11;
  p = p * r2 + kC9;
  p = p * r2 + kC7;
  p = p * r2 + kC5;
  p = p * r2 + kC3;
  const double s = r + r * r2 * p;
  return std::bit_cast<double>(std::bit_cast<uint64_t>(s) ^ odd);
}

constexpr int64_t kChunk = 1 << 14;  // elements per parallel task (fixed: sums independent of threads)
constexpr int64_t kBlock = 256;      // elements per inner block (stack buffers)
constexpr int kLanes = 8;            // independent partial sums per block loop

// out[j] = sin(v[j]) for j < m; the polynomial unless some |v| is out of its range (or NaN).
void sin_block(int64_t m, const double* v, double* out) {
  int out_of_range = 0;
  for (int64_t j = 0; j < m; ++j) out_of_range |= !(std::fabs(v[j]) < kLimit);
  if (out_of_range) {
    for (int64_t j = 0; j < m; ++j) out[j] = std::sin(v[j]);
  } else {
    for (int64_t j = 0; j < m; ++j) out[j] = sin_reduced(v[j]);
  }
}

// Sum of term[j], j < m, m padded with zeros to a multiple of kLanes, into lanes acc[0..kLanes).
void accumulate(int64_t m, double* term, double* acc) {
  const int64_t padded = (m + kLanes - 1) / kLanes * kLanes;
  for (int64_t j = m; j < padded; ++j) term[j] = 0.0;
  for (int64_t j = 0; j < padded; j += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += term[j + l];
}

double lanes_total(const double* acc) {
  double total = 0;
  for (int l = 0; l < kLanes; ++l) total += acc[l];
  return total;
}

// Runs chunk(lo, hi) -> double over fixed chunks in parallel and adds the results in chunk order.
template <class F>
double chunked(int64_t n, F&& chunk) {
  const int64_t chunks = std::max<int64_t>(1, (n + kChunk - 1) / kChunk);
  std::vector<double> partial(chunks, 0.0);
  parallel_chunks(0, n, chunks, [&](int64_t c, int64_t lo, int64_t hi) { partial[c] = chunk(lo, hi); });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

template <class T>
double sin2_sum_impl(int64_t n, const T* x, double a, double b) {
  return chunked(n, [&](int64_t lo, int64_t hi) {
    alignas(64) double u[kBlock], s[kBlock];
    double acc[kLanes] = {};
    for (int64_t i = lo; i < hi; i += kBlock) {
      const int64_t m = std::min(kBlock, hi - i);
      for (int64_t j = 0; j < m; ++j) u[j] = a * double(x[i + j]) + b;
      sin_block(m, u, s);
      for (int64_t j = 0; j < m; ++j) s[j] *= s[j];
      accumulate(m, s, acc);
    }
    return lanes_total(acc);
  });
}

template <class T>
double sin2_backward_impl(int64_t n, const T* x, double a, double b, double g, T* dx) {
  const double ga = g * a;
  return chunked(n, [&](int64_t lo, int64_t hi) {
    alignas(64) double u[kBlock], s[kBlock];
    double acc[kLanes] = {};
    for (int64_t i = lo; i < hi; i += kBlock) {
      const int64_t m = std::min(kBlock, hi - i);
      for (int64_t j = 0; j < m; ++j) u[j] = 2 * (a * double(x[i + j]) + b);
      sin_block(m, u, s);  // s = sin(2u)
      for (int64_t j = 0; j < m; ++j) {
        dx[i + j] = static_cast<T>(ga * s[j]);
        s[j] *= double(x[i + j]);
      }
      accumulate(m, s, acc);
    }
    return lanes_total(acc);
  });
}

template <class T>
double sin2_sum_ref_impl(int64_t n, const T* x, double a, double b) {
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double s = std::sin(a * double(x[i]) + b);
    total += s * s;
  }
  return total;
}

template <class T>
double sin2_backward_ref_impl(int64_t n, const T* x, double a, double b, double g, T* dx) {
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double s2 = std::sin(2 * (a * double(x[i]) + b));
    dx[i] = static_cast<T>(g * a * s2);
    total += double(x[i]) * s2;
  }
  return total;
}

}  // namespace

double sin2_sum(int64_t n, const float* x, double a, double b) { return sin2_sum_impl(n, x, a, b); }
double sin2_sum(int64_t n, const double* x, double a, double b) { return sin2_sum_impl(n, x, a, b); }
double sin2_backward(int64_t n, const float* x, double a, double b, double g, float* dx) {
  return sin2_backward_impl(n, x, a, b, g, dx);
}
double sin2_backward(int64_t n, const double* x, double a, double b, double g, double* dx) {
  return sin2_backward_impl(n, x, a, b, g, dx);
}

double sin2_sum_ref(int64_t n, const float* x, double a, double b) { return sin2_sum_ref_impl(n, x, a, b); }
double sin2_sum_ref(int64_t n, const double* x, double a, double b) { return sin2_sum_ref_impl(n, x, a, b); }
double sin2_backward_ref(int64_t n, const float* x, double a, double b, double g, float* dx) {
  return sin2_backward_ref_impl(n, x, a, b, g, dx);
}
double sin2_backward_ref(int64_t n, const double* x, double a, double b, double g, double* dx) {
  return sin2_backward_ref_impl(n, x, a, b, g, dx);
}

void sin_fast(int64_t n, const double* v, double* out) {
  for (int64_t i = 0; i < n; i += kBlock) sin_block(std::min(kBlock, n - i), v + i, out + i);
}

}  // namespace lowbit::kernels
