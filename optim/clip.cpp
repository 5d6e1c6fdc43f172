#include "optim/clip.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/math.h"
#include "core/parallel.h"

namespace lowbit::optim {

namespace {
constexpr int64_t kChunk = 1 << 16;
}  // namespace

double clip_grad_norm(const std::vector<Variable>& params, double max_norm) {
  LOWBIT_CHECK(max_norm >= 0, "clip_grad_norm: max_norm must be >= 0, got ", max_norm);
  double sum_sq = 0;
  for (const Variable& p : params) {
    if (!p.defined() || !p.grad().defined()) continue;
    const Tensor g = p.grad().data().contiguous();
    LOWBIT_DISPATCH_FLOAT(g.dtype(), "clip_grad_norm", [&] {
      const scalar_t* d = g.data<scalar_t>();
      // Fixed chunks summed in chunk order: the norm depends on the sizes only, not on threads.
      const int64_t n = g.numel();
      const int64_t chunks = (n + kChunk - 1) / kChunk;
      std::vector<double> partial(static_cast<size_t>(std::max<int64_t>(chunks, 1)), 0.0);
      parallel_chunks(0, n, chunks, [&](int64_t c, int64_t lo, int64_t hi) {
        double s = 0;
        for (int64_t i = lo; i < hi; ++i) s += static_cast<double>(d[i]) * static_cast<double>(d[i]);
        partial[static_cast<size_t>(c)] = s;
      });
      for (double s : partial) sum_sq += s;
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
