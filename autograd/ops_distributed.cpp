// Ops across data-parallel ranks (core/distributed.h): forward and backward are both sums over ranks.
#include "autograd/ops.h"
#include "core/distributed.h"

namespace lowbit {

// y = sum_r x_r on every rank. With L = sum_r L_r, dL/dx_r = sum_r' dL_r'/dy: the backward is the same
// all-reduce of the incoming gradient (every rank runs it at the same point of its backward pass).
Variable all_reduce_sum(const Variable& a) {
  Tensor out = a.data().contiguous().clone();
  LOWBIT_DISPATCH_FLOAT(out.dtype(), "all_reduce_sum", [&] { dist::allreduce_sum(out.data<scalar_t>(), out.numel()); });
  return make_result(std::move(out), "all_reduce_sum", {a},
                     [](const Variable& g, const Variable&) { return std::vector<Variable>{all_reduce_sum(g)}; });
}

}  // namespace lowbit
