#include "optim/clip.h"

#include <cmath>

#include "core/math.h"

namespace lowbit::optim {

double clip_grad_norm(const std::vector<Variable>& params, double max_norm) {
  LOWBIT_CHECK(max_norm >= 0, "clip_grad_norm: max_norm must be >= 0, got ", max_norm);
  double sum_sq = 0;
  for (const Variable& p : params) {
    if (!p.defined() || !p.grad().defined()) continue;
    const Tensor g = p.grad().data().contiguous();
    LOWBIT_DISPATCH_FLOAT(g.dtype(), "clip_grad_norm", [&] {
      const scalar_t* d = g.data<scalar_t>();
      double s = 0;
      for (int64_t i = 0; i < g.numel(); ++i) s += static_cast<double>(d[i]) * static_cast<double>(d[i]);
      sum_sq += s;
    });
  }
  const double total = std::sqrt(sum_sq);
  const double coef = max_norm / (total + 1e-6);
  if (std::isfinite(total) && coef < 1) {
    for (const Variable& p : params) {
      if (!p.defined() || !p.grad().defined()) continue;
      Variable param = p;
      param.set_grad(Variable(math::mul(p.grad().data(), coef)));
    }
  }
  return total;
}

}  // namespace lowbit::optim
