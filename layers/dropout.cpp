#include "layers/dropout.h"

#include "autograd/ops.h"

namespace lowbit {

Dropout::Dropout(double p, std::optional<uint64_t> seed) : p_(p), gen_(seed ? *seed : default_generator().next_u64()) {
  LOWBIT_CHECK(p_ >= 0 && p_ < 1, "Dropout: probability must be in [0, 1), got ", p_);
}

Variable Dropout::forward(const Variable& x) { return dropout(x, p_, is_training(), gen_); }

std::string Dropout::extra_repr() const { return detail::concat("p=", p_); }

}  // namespace lowbit
