#include "layers/linear.h"

#include "autograd/ops.h"
#include "layers/init.h"

namespace lowbit {

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen)
    : in_(in_features), out_(out_features), has_bias_(bias) {
  LOWBIT_CHECK(in_ > 0 && out_ > 0, "Linear: features must be positive, got in=", in_, ", out=", out_);
  weight_ = register_parameter("weight", Tensor::empty({out_, in_}));
  if (has_bias_) bias_ = register_parameter("bias", Tensor::empty({out_}));
  reset_parameters(gen);
}

void Linear::reset_parameters(Generator& gen) {
  Tensor w = weight_.data(), b = has_bias_ ? bias_.data() : Tensor();
  init::default_layer_init_(w, has_bias_ ? &b : nullptr, gen);
}

Variable Linear::effective_weight() { return weight_hook_ ? weight_hook_(weight_) : weight_; }

Variable Linear::forward(const Variable& x) {
  LOWBIT_CHECK(x.dim() >= 1 && x.size(-1) == in_, "Linear::forward: expected input [..., ", in_, "], got ",
               shape_str(x.shape()));
  return linear(x, effective_weight(), bias());
}

std::string Linear::extra_repr() const {
  return detail::concat("in_features=", in_, ", out_features=", out_, ", bias=", has_bias_ ? "true" : "false");
}

}  // namespace lowbit
