#include "optim/adam.h"

#include <cmath>

namespace lowbit::optim {

namespace {

template <class T>
struct AdamCoeffs {
  T lr, weight_decay, beta1, beta2, eps, step_size, bias_correction2_sqrt;
  bool decoupled, amsgrad;
};

// One fused pass over [lo, hi): decay, both moments, optional running max, parameter update.
template <class T>
void adam_update(T* p, const T* g, T* m, T* v, T* vmax, int64_t lo, int64_t hi, const AdamCoeffs<T>& c) {
  const T one_minus_beta1 = T(1) - c.beta1;
  const T one_minus_beta2 = T(1) - c.beta2;
  const T decay = T(1) - c.lr * c.weight_decay;
  for (int64_t i = lo; i < hi; ++i) {
    T pi = p[i];
    T gi = g[i];
    if (c.weight_decay != T(0)) {
      if (c.decoupled)
        pi = pi * decay;
      else
        gi = gi + c.weight_decay * pi;
    }
    const T mi = m[i] + one_minus_beta1 * (gi - m[i]);
    const T vi = c.beta2 * v[i] + one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    T vu = vi;
    if (c.amsgrad) {
      vu = vmax[i] > vi ? vmax[i] : vi;
      vmax[i] = vu;
    }
    const T denom = std::sqrt(vu) / c.bias_correction2_sqrt + c.eps;
    p[i] = pi - c.step_size * mi / denom;
  }
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
  LOWBIT_DISPATCH_FLOAT(pd.dtype(), name().c_str(), [&] {
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
    detail::parallel_elementwise(pd.numel(), [&](int64_t lo, int64_t hi) { adam_update<T>(p, gp, mp, vp, vmaxp, lo, hi, c); });
  });
}

}  // namespace lowbit::optim
