#include "layers/container.h"

#include "autograd/ops.h"
#include "layers/activation.h"
#include "layers/norm.h"

namespace lowbit {

Sequential::Sequential(std::vector<std::shared_ptr<Module>> modules) {
  for (auto& m : modules) push_back(std::move(m));
}

Variable Sequential::forward(const Variable& x) {
  Variable y = x;
  for (size_t i = 0; i < items_.size(); ++i) {
    // BatchNorm -> ReLU runs as one fused op (same values and gradients, one pass fewer each way).
    auto* bn = dynamic_cast<BatchNormBase*>(items_[i].get());
    if (bn && i + 1 < items_.size() && dynamic_cast<ReLU*>(items_[i + 1].get())) {
      y = bn->forward_with_relu(y, *items_[i + 1]);
      ++i;
      continue;
    }
    y = (*items_[i])(y);
  }
  return y;
}

const std::shared_ptr<Module>& Sequential::operator[](size_t i) const {
  LOWBIT_CHECK(i < items_.size(), "Sequential[]: index ", i, " out of range for ", items_.size(), " items");
  return items_[i];
}

Residual::Residual(std::shared_ptr<Module> body, std::shared_ptr<Module> shortcut)
    : body_(std::move(body)), shortcut_(std::move(shortcut)) {
  register_module("body", body_);
  if (shortcut_) register_module("shortcut", shortcut_);
}

Variable Residual::forward(const Variable& x) {
  const Variable b = (*body_)(x);
  const Variable s = shortcut_ ? (*shortcut_)(x) : x;
  LOWBIT_CHECK(b.shape() == s.shape(), "Residual::forward: body output ", shape_str(b.shape()), " and shortcut ",
               shape_str(s.shape()), " differ");
  return b + s;
}

Variable Flatten::forward(const Variable& x) { return flatten(x, start_, end_); }
std::string Flatten::extra_repr() const { return detail::concat("start_dim=", start_, ", end_dim=", end_); }

}  // namespace lowbit
