#include "optim/sgd.h"

#include <cmath>

namespace lowbit::optim {

namespace {

// One fused pass over [lo, hi): weight decay, momentum buffer, nesterov, parameter update.
template <class T>
void sgd_update(T* p, const T* g, T* buf, int64_t lo, int64_t hi, T lr, T wd, T momentum, T dampening, bool nesterov,
                bool first) {
  // Multiply-adds are explicit FMAs so the vectorized body and the scalar tail round alike
  // whatever the compiler's contraction choices (thread-count independence).
  const T keep = T(1) - dampening;
  for (int64_t i = lo; i < hi; ++i) {
    T d = wd != T(0) ? std::fma(wd, p[i], g[i]) : g[i];
    if (buf != nullptr) {
      const T b = first ? d : std::fma(momentum, buf[i], keep * d);
      buf[i] = b;
      d = nesterov ? std::fma(momentum, b, d) : b;
    }
    p[i] = std::fma(-lr, d, p[i]);
  }
}

}  // namespace

SGD::SGD(std::vector<ParamGroup> groups) : Optimizer(std::move(groups)) {
  for (const ParamGroup& g : param_groups()) check_group(g);
}

void SGD::check_group(const ParamGroup& g) const {
  LOWBIT_CHECK(g.lr >= 0, "SGD: group '", g.name, "': lr must be >= 0, got ", g.lr);
  LOWBIT_CHECK(g.weight_decay >= 0, "SGD: group '", g.name, "': weight_decay must be >= 0, got ", g.weight_decay);
  LOWBIT_CHECK(g.momentum >= 0, "SGD: group '", g.name, "': momentum must be >= 0, got ", g.momentum);
  LOWBIT_CHECK(!g.nesterov || (g.momentum > 0 && g.dampening == 0), "SGD: group '", g.name,
               "': nesterov needs momentum > 0 and dampening 0, got momentum ", g.momentum, ", dampening ",
               g.dampening);
}

void SGD::update(const ParamGroup& g, Variable& param, const Tensor& grad, ParamState& state) {
  Tensor& pd = param.mutable_data();
  const bool first = !state.buffers.count("momentum_buffer");
  Tensor buf;
  if (g.momentum != 0) {
    auto it = state.buffers.find("momentum_buffer");
    if (it == state.buffers.end()) it = state.buffers.emplace("momentum_buffer", Tensor::empty_like(pd)).first;
    buf = it->second;
  }
  ++state.step;
  LOWBIT_DISPATCH_FLOAT(pd.dtype(), "SGD", [&] {
    using T = scalar_t;
    T* p = pd.data<T>();
    const T* gp = grad.data<T>();
    T* b = buf.defined() ? buf.data<T>() : nullptr;
    detail::parallel_elementwise(pd.numel(), [&](int64_t lo, int64_t hi) {
      sgd_update<T>(p, gp, b, lo, hi, T(g.lr), T(g.weight_decay), T(g.momentum), T(g.dampening), g.nesterov, first);
    });
  });
}

}  // namespace lowbit::optim
