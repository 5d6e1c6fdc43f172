// Finite-difference checks of analytic gradients (float64 inputs).
//
//   gradcheck(f, inputs): for a random direction v over f's output, compares the analytic
//     vector-Jacobian product d<f(x), v>/dx with central differences
//     (<f(x + eps e_j), v> - <f(x - eps e_j), v>) / (2 eps) for every element j of every input
//     that requires grad. Passes when |analytic - numeric| <= atol + rtol |numeric| everywhere.
//   gradgradcheck(f, inputs): the same check applied to the first-order gradient function
//     (x, v) -> sum_i <d<f(x), v>/dx_i, w_i> computed with create_graph, i.e. it checks the
//     recorded backward pass (second derivatives and the linearity in v).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/variable.h"

namespace lowbit {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
  uint64_t seed = 1234;
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  std::string message;  // first failure, naming input and element
};

using VariableFn = std::function<Variable(const std::vector<Variable>&)>;

GradcheckResult gradcheck(const VariableFn& f, const std::vector<Variable>& inputs, const GradcheckOptions& opt = {});
GradcheckResult gradgradcheck(const VariableFn& f, const std::vector<Variable>& inputs,
                              const GradcheckOptions& opt = {});

}  // namespace lowbit
