// SinReQ and WaveQ as optimizer-level regularizers (optim::Regularizer): attached to a parameter
// group, they add lambda(t) * penalty to the loss through Optimizer::regularization_loss(), acting
// on the float (shadow) weights of the layers they were given (spec convention 6).
//
//   SinReQRegularizer   lambda(t) * sinreq_penalty(W, k)                          spec §2.1, §2.2
//   WaveQRegularizer    lambda_w(t) * weight_term(W, beta) + lambda_beta(t) * sum beta   §1.1, §1.3
//                       beta: one trainable scalar per layer (put them in their own optimizer group);
//                       learn_beta = false freezes them (homogeneous "WaveQ with beta fixed" runs).
//                       With schedule.snap_beta, the first loss() at t >= fall T sets beta := ceil(beta)
//                       and from then on beta gets no gradient and after_step() holds it there.
// The position t (fractional epochs) is set by the fit loop with set_position() before each step
// (Optimizer::set_position forwards it to every attached regularizer).
#pragma once

#include <vector>

#include "optim/regularizer.h"
#include "quant/regularizers.h"
#include "quant/schedules.h"

namespace lowbit::quant {

class SinReQRegularizer : public optim::Regularizer {
 public:
  SinReQRegularizer(std::vector<Variable> weights, std::vector<int> bits, SinReQOptions options,
                    SinReQSchedule schedule);
  std::string name() const override { return "sinreq"; }
  Variable loss(const optim::ParamGroup& group, int64_t step) override;
  void set_position(double t, double total) override { t_ = t, total_ = total; }
  double lambda() const { return sinreq_lambda(schedule_, t_, total_); }

 private:
  std::vector<Variable> weights_;
  std::vector<int> bits_;
  SinReQOptions options_;
  SinReQSchedule schedule_;
  double t_ = 0, total_ = 1;
};

class WaveQRegularizer : public optim::Regularizer {
 public:
  WaveQRegularizer(std::vector<Variable> weights, std::vector<Variable> betas, WaveQOptions options,
                   WaveQSchedule schedule);
  std::string name() const override { return "waveq"; }
  Variable loss(const optim::ParamGroup& group, int64_t step) override;
  void set_position(double t, double total) override { t_ = t, total_ = total; }
  WaveQLambdas lambdas() const { return waveq_lambdas(schedule_, t_, total_); }
  // Clamps beta into [beta_min, beta_max] (convention 3) and, once snapped, puts every beta back on
  // its snapped integer (undoing weight decay and momentum): call after each optimizer step.
  void after_step();
  bool snapped() const { return !snapped_.empty(); }
  const std::vector<Variable>& betas() const { return betas_; }
  const WaveQOptions& options() const { return options_; }

 private:
  std::vector<Variable> weights_, betas_;
  WaveQOptions options_;
  WaveQSchedule schedule_;
  double t_ = 0, total_ = 1;
  std::vector<double> snapped_;  // the betas' integer values once snapped (empty before)
  void hold_snapped();
};

}  // namespace lowbit::quant
