#include "optim/adam.h"

#include <cmath>
#include <type_traits>

#include "core/kernels/cpu.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace lowbit::optim {

namespace {

template <class T>
struct AdamCoeffs {
  T lr, weight_decay, beta1, beta2, eps, step_size, bias_correction2_sqrt;
  bool decoupled, amsgrad;
};

// One fused pass over [lo, hi): decay, both moments, optional running max, parameter update.
// Instantiated per (amsgrad, decoupled) so the loop body is branch-free.
template <class T, bool kAmsgrad, bool kDecoupled>
void adam_update_scalar(T* p, const T* g, T* m, T* v, T* vmax, int64_t lo, int64_t hi, const AdamCoeffs<T>& c) {
  const T one_minus_beta1 = T(1) - c.beta1;
  const T one_minus_beta2 = T(1) - c.beta2;
  const T decay = T(1) - c.lr * c.weight_decay;
  const bool l2_on = c.weight_decay != T(0);  // PyTorch skips the L2 term at 0 (keeps inf params inf)
  for (int64_t i = lo; i < hi; ++i) {
    const T pi = p[i];
    T gi = g[i];
    if constexpr (!kDecoupled)
      if (l2_on) gi = std::fma(c.weight_decay, pi, gi);
    const T mi = std::fma(one_minus_beta1, gi - m[i], m[i]);
    const T vi = std::fma(one_minus_beta2 * gi, gi, c.beta2 * v[i]);
    m[i] = mi;
    v[i] = vi;
    T vu = vi;
    if constexpr (kAmsgrad) {
      vu = vmax[i] > vi ? vmax[i] : vi;
      vmax[i] = vu;
    }
    const T denom = std::sqrt(vu) / c.bias_correction2_sqrt + c.eps;
    const T delta = c.step_size * mi / denom;
    if constexpr (kDecoupled)
      p[i] = std::fma(pi, decay, -delta);  // p * (1 - lr wd) - delta, the decay fused
    else
      p[i] = pi - delta;
  }
}

#if defined(__AVX512F__)
// The same float update, 16 lanes at a time. GCC does not vectorize std::sqrt without
// -fno-math-errno, hence intrinsics. The operation sequence is exactly the scalar one, with the
// same explicit FMAs (and no other multiply-add pair the compiler could contract), so every
// element gets the same bits whichever path or chunking handles it.
// The all-lanes maskz forms avoid GCC 12's false -Wmaybe-uninitialized on _mm512_undefined_ps.
// Returns the first index left for the scalar tail.
template <bool kAmsgrad, bool kDecoupled>
int64_t adam_update_avx512(float* p, const float* g, float* m, float* v, float* vmax, int64_t lo, int64_t hi,
                           const AdamCoeffs<float>& c) {
  const __m512 one_minus_beta1 = _mm512_set1_ps(1.0f - c.beta1);
  const __m512 one_minus_beta2 = _mm512_set1_ps(1.0f - c.beta2);
  const __m512 beta2 = _mm512_set1_ps(c.beta2);
  const __m512 decay = _mm512_set1_ps(1.0f - c.lr * c.weight_decay);
  const __m512 l2 = _mm512_set1_ps(c.weight_decay);
  const bool l2_on = c.weight_decay != 0.0f;
  const __m512 bc2_sqrt = _mm512_set1_ps(c.bias_correction2_sqrt);
  const __m512 eps = _mm512_set1_ps(c.eps);
  const __m512 step_size = _mm512_set1_ps(c.step_size);
  int64_t i = lo;
  for (; i + 16 <= hi; i += 16) {
    const __m512 pi = _mm512_loadu_ps(p + i);
    __m512 gi = _mm512_loadu_ps(g + i);
    if constexpr (!kDecoupled)
      if (l2_on) gi = _mm512_fmadd_ps(l2, pi, gi);
    const __m512 mo = _mm512_loadu_ps(m + i);
    const __m512 mi = _mm512_fmadd_ps(one_minus_beta1, _mm512_sub_ps(gi, mo), mo);
    const __m512 vi =
        _mm512_fmadd_ps(_mm512_mul_ps(one_minus_beta2, gi), gi, _mm512_mul_ps(beta2, _mm512_loadu_ps(v + i)));
    _mm512_storeu_ps(m + i, mi);
    _mm512_storeu_ps(v + i, vi);
    __m512 vu = vi;
    if constexpr (kAmsgrad) {
      vu = _mm512_maskz_max_ps(0xFFFF, _mm512_loadu_ps(vmax + i), vi);  // vmax > vi ? vmax : vi, as the scalar
      _mm512_storeu_ps(vmax + i, vu);
    }
    const __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_maskz_sqrt_ps(0xFFFF, vu), bc2_sqrt), eps);
    const __m512 delta = _mm512_div_ps(_mm512_mul_ps(step_size, mi), denom);
    if constexpr (kDecoupled)
      _mm512_storeu_ps(p + i, _mm512_fmsub_ps(pi, decay, delta));
    else
      _mm512_storeu_ps(p + i, _mm512_sub_ps(pi, delta));
  }
  return i;
}
#endif

template <class T, bool kAmsgrad, bool kDecoupled>
void adam_update(T* p, const T* g, T* m, T* v, T* vmax, int64_t lo, int64_t hi, const AdamCoeffs<T>& c) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>)
    if (kernels::avx512_enabled()) lo = adam_update_avx512<kAmsgrad, kDecoupled>(p, g, m, v, vmax, lo, hi, c);
#endif
  adam_update_scalar<T, kAmsgrad, kDecoupled>(p, g, m, v, vmax, lo, hi, c);
}

Tensor& buffer(ParamState& state, const std::string& name, const Tensor& param) {
  auto it = state.buffers.find(name);
  if (it == state.buffers.end()) it = state.buffers.emplace(name, detail::zeros_like_param(param)).first;
  return it->second;
}

}  // namespace

Adam::Adam(std::vector<ParamGroup> groups) : Adam(std::move(groups), false) {}

Adam::Adam(std::vector<ParamGroup> groups, bool decoupled) : Optimizer(std::move(groups)), decoupled_(decoupled) {
  for (const ParamGroup& g : param_groups()) check_group(g);
}

AdamW::AdamW(std::vector<ParamGroup> groups) : Adam(std::move(groups), true) {}

void Adam::check_group(const ParamGroup& g) const {
  const std::string n = name();
  LOWBIT_CHECK(g.lr >= 0, n, ": group '", g.name, "': lr must be >= 0, got ", g.lr);
  LOWBIT_CHECK(g.weight_decay >= 0, n, ": group '", g.name, "': weight_decay must be >= 0, got ", g.weight_decay);
  LOWBIT_CHECK(g.beta1 >= 0 && g.beta1 < 1, n, ": group '", g.name, "': beta1 must be in [0, 1), got ", g.beta1);
  LOWBIT_CHECK(g.beta2 >= 0 && g.beta2 < 1, n, ": group '", g.name, "': beta2 must be in [0, 1), got ", g.beta2);
  LOWBIT_CHECK(g.eps >= 0, n, ": group '", g.name, "': eps must be >= 0, got ", g.eps);
}

void Adam::update(const ParamGroup& g, Variable& param, const Tensor& grad, ParamState& state) {
  Tensor& pd = param.mutable_data();
  Tensor m = buffer(state, "exp_avg", pd);
  Tensor v = buffer(state, "exp_avg_sq", pd);
  Tensor vmax = g.amsgrad ? buffer(state, "max_exp_avg_sq", pd) : Tensor();
  const int64_t t = ++state.step;
  const double bias_correction1 = 1 - std::pow(g.beta1, static_cast<double>(t));
  const double bias_correction2 = 1 - std::pow(g.beta2, static_cast<double>(t));
  LOWBIT_DISPATCH_FLOAT(pd.dtype(), decoupled_ ? "AdamW" : "Adam", [&] {
    using T = scalar_t;
    const AdamCoeffs<T> c{T(g.lr),
                          T(g.weight_decay),
                          T(g.beta1),
                          T(g.beta2),
                          T(g.eps),
                          T(g.lr / bias_correction1),
                          T(std::sqrt(bias_correction2)),
                          decoupled_,
                          g.amsgrad};
    T* p = pd.data<T>();
    const T* gp = grad.data<T>();
    T* mp = m.data<T>();
    T* vp = v.data<T>();
    T* vmaxp = vmax.defined() ? vmax.data<T>() : nullptr;
    auto kernel = c.amsgrad ? (c.decoupled ? adam_update<T, true, true> : adam_update<T, true, false>)
                            : (c.decoupled ? adam_update<T, false, true> : adam_update<T, false, false>);
    detail::parallel_elementwise(pd.numel(), [&](int64_t lo, int64_t hi) { kernel(p, gp, mp, vp, vmaxp, lo, hi, c); });
  });
}

}  // namespace lowbit::optim
