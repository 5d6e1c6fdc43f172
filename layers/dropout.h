// Dropout(p): inverted dropout (autograd/ops_nn.h) in training, identity in eval. The mask comes from a
// Generator owned by the module (seeded from default_generator() at construction unless a seed is given),
// exposed so checkpoints can save and restore its state.
#pragma once

#include <optional>

#include "core/random.h"
#include "layers/module.h"

namespace lowbit {

class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5, std::optional<uint64_t> seed = std::nullopt);
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "Dropout"; }
  std::string extra_repr() const override;
  double p() const { return p_; }
  Generator& generator() { return gen_; }

 private:
  double p_;
  Generator gen_;
};

}  // namespace lowbit
