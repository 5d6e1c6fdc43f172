// The sinusoid's per-element pass of SinReQ / WaveQ (spec §1.1, §2.1): u_i = a x_i + b,
//
//   sin2_sum        returns sum_i sin^2(u_i)
//   sin2_backward   dx[i] = g a sin(2 u_i); returns sum_i x_i sin(2 u_i)
//                   (d sin^2(u) / du = sin(2u): the gradients of g * sin2_sum w.r.t. x and a)
//
// n elements, contiguous; u and the sums in double whatever the element type. The fast versions
// evaluate sin with a vectorizable Cody–Waite reduction and an odd Taylor polynomial (|error| <
// 1e-15 for |u| < 2^26 π; beyond that, and for non-finite u, std::sin), summed over fixed
// chunks so results never depend on the thread count. The `_ref` twins are serial std::sin loops.
#pragma once

#include <cstdint>

namespace lowbit::kernels {

double sin2_sum(int64_t n, const float* x, double a, double b);
double sin2_sum(int64_t n, const double* x, double a, double b);
double sin2_backward(int64_t n, const float* x, double a, double b, double g, float* dx);
double sin2_backward(int64_t n, const double* x, double a, double b, double g, double* dx);

double sin2_sum_ref(int64_t n, const float* x, double a, double b);
double sin2_sum_ref(int64_t n, const double* x, double a, double b);
double sin2_backward_ref(int64_t n, const float* x, double a, double b, double g, float* dx);
double sin2_backward_ref(int64_t n, const double* x, double a, double b, double g, double* dx);

// sin(v[i]) for i < n, the fast path's element function (exposed for its accuracy test).
void sin_fast(int64_t n, const double* v, double* out);

}  // namespace lowbit::kernels
