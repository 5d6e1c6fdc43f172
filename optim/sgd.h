// Stochastic gradient descent with momentum, PyTorch semantics (torch.optim.SGD):
//   d = g + weight_decay * p
//   momentum != 0:  buf = d on a param's first update, else buf = momentum * buf + (1 - dampening) * d
//                   d = nesterov ? d + momentum * buf : buf
//   p -= lr * d
// Per-parameter buffer: "momentum_buffer" (only when momentum != 0). Nesterov needs momentum > 0
// and dampening 0. Arithmetic runs in the parameter's dtype.
#pragma once

#include "optim/optimizer.h"

namespace lowbit::optim {

class SGD : public Optimizer {
 public:
  explicit SGD(std::vector<ParamGroup> groups);
  std::string name() const override { return "SGD"; }

 protected:
  void check_group(const ParamGroup& group) const override;
  void update(const ParamGroup& group, Variable& param, const Tensor& grad, ParamState& state) override;
  std::vector<std::string> buffer_names() const override { return {"momentum_buffer"}; }
};

}  // namespace lowbit::optim
