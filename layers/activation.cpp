#include "layers/activation.h"

#include "autograd/ops.h"

namespace lowbit {

Variable ReLU::forward(const Variable& x) { return relu(x); }

Hardtanh::Hardtanh(double min_val, double max_val) : lo_(min_val), hi_(max_val) {
  LOWBIT_CHECK(lo_ < hi_, "Hardtanh: need min_val < max_val, got ", lo_, " and ", hi_);
}
Variable Hardtanh::forward(const Variable& x) { return clamp(x, lo_, hi_); }
std::string Hardtanh::extra_repr() const { return detail::concat("min_val=", lo_, ", max_val=", hi_); }

Variable Sigmoid::forward(const Variable& x) { return sigmoid(x); }
Variable Tanh::forward(const Variable& x) { return tanh(x); }

}  // namespace lowbit
