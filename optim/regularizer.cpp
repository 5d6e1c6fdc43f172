#include "optim/regularizer.h"

#include "autograd/ops.h"

namespace lowbit::optim {

Regularizer::~Regularizer() = default;

namespace {
// Sums term(p) over the group's defined parameters; undefined when there are none.
template <class Term>
Variable sum_over_params(const ParamGroup& group, Term term) {
  Variable total;
  for (const Variable& p : group.params) {
    if (!p.defined()) continue;
    Variable t = term(p);
    total = total.defined() ? total + t : t;
  }
  return total;
}
}  // namespace

L2Regularizer::L2Regularizer(double c) : coefficient(c) {
  LOWBIT_CHECK(c >= 0, "L2Regularizer: coefficient must be >= 0, got ", c);
}

Variable L2Regularizer::loss(const ParamGroup& group, int64_t /*step*/) {
  if (coefficient == 0) return Variable();
  return sum_over_params(group, [&](const Variable& p) { return sum(p * p) * (0.5 * coefficient); });
}

L1Regularizer::L1Regularizer(double c) : coefficient(c) {
  LOWBIT_CHECK(c >= 0, "L1Regularizer: coefficient must be >= 0, got ", c);
}

Variable L1Regularizer::loss(const ParamGroup& group, int64_t /*step*/) {
  if (coefficient == 0) return Variable();
  return sum_over_params(group, [&](const Variable& p) { return sum(abs(p)) * coefficient; });
}

}  // namespace lowbit::optim
