// Regularizer hook: a differentiable loss term attached to a parameter group.
//
// Contract
//   - loss(group, step) returns a Variable built only from differentiable ops (autograd/ops.h) on
//     the group's parameters and, optionally, trainable parameters the regularizer owns (which the
//     caller puts in another optimizer group, e.g. WaveQ's per-layer bitwidth beta). It may return
//     an undefined Variable for "no term" (e.g. an empty group or a zero coefficient schedule).
//   - Optimizer::regularization_loss() sums the terms of every group at the optimizer's step count;
//     the trainer adds that sum to the task loss before backward().
//   - set_position(t, total) is called by the fit loop (train/fit.h) before every step, t in
//     fractional epochs (epoch + batch / batches) of `total`, for schedules of the regularizer's
//     strength (e.g. the three-phase lambda schedule, spec methods.md section 1.3).
#pragma once

#include <cstdint>
#include <string>

#include "autograd/variable.h"
#include "optim/optimizer.h"

namespace lowbit::optim {

class Regularizer {
 public:
  virtual ~Regularizer();
  virtual std::string name() const = 0;
  virtual Variable loss(const ParamGroup& group, int64_t step) = 0;
  virtual void set_position(double /*t*/, double /*total*/) {}
};

// (coefficient / 2) * sum_p ||p||^2 over the group's parameters: gradient coefficient * p.
class L2Regularizer : public Regularizer {
 public:
  explicit L2Regularizer(double coefficient);
  std::string name() const override { return "l2"; }
  Variable loss(const ParamGroup& group, int64_t step) override;
  double coefficient;
};

// coefficient * sum_p ||p||_1 over the group's parameters: gradient coefficient * sign(p) (0 at 0).
class L1Regularizer : public Regularizer {
 public:
  explicit L1Regularizer(double coefficient);
  std::string name() const override { return "l1"; }
  Variable loss(const ParamGroup& group, int64_t step) override;
  double coefficient;
};

}  // namespace lowbit::optim
