// Gradient-norm clipping (PyTorch torch.nn.utils.clip_grad_norm_ with norm_type 2).
//   total = sqrt(sum over params with a gradient of ||grad||_2^2)   (accumulated in double)
//   if total > max_norm: every such grad *= max_norm / (total + 1e-6)
// Returns the norm before clipping. Clipped gradients are replaced by new tensors (set_grad), so
// gradients that share storage with other tensors are never scaled twice. A non-finite total
// leaves the gradients unchanged (PyTorch would turn them into NaN); the caller sees the norm.
#pragma once

#include <vector>

#include "autograd/variable.h"

namespace lowbit::optim {

double clip_grad_norm(const std::vector<Variable>& params, double max_norm);

}  // namespace lowbit::optim
