#include "quant/regularize.h"

#include <algorithm>

#include "autograd/ops.h"

namespace lowbit::quant {

SinReQRegularizer::SinReQRegularizer(std::vector<Variable> weights, std::vector<int> bits, SinReQOptions options,
                                     SinReQSchedule schedule)
    : weights_(std::move(weights)), bits_(std::move(bits)), options_(options), schedule_(schedule) {
  LOWBIT_CHECK(weights_.size() == bits_.size(), "SinReQRegularizer: ", weights_.size(), " weights but ", bits_.size(),
               " bitwidths");
}

Variable SinReQRegularizer::loss(const optim::ParamGroup&, int64_t) {
  const double lambda = this->lambda();
  if (lambda == 0 || weights_.empty()) return Variable();
  return mul(sinreq_penalty(weights_, bits_, options_), lambda);
}

WaveQRegularizer::WaveQRegularizer(std::vector<Variable> weights, std::vector<Variable> betas, WaveQOptions options,
                                   WaveQSchedule schedule)
    : weights_(std::move(weights)), betas_(std::move(betas)), options_(options), schedule_(schedule) {
  LOWBIT_CHECK(weights_.size() == betas_.size(), "WaveQRegularizer: ", weights_.size(), " weights but ", betas_.size(),
               " betas");
}

Variable WaveQRegularizer::loss(const optim::ParamGroup&, int64_t) {
  if (schedule_.snap_beta && snapped_.empty() && t_ >= schedule_.fall * total_) {
    // Spec §1.3 phase 3 with the period frozen on the reported bits: beta := ceil(beta).
    for (const Variable& b : betas_) {
      const double v = std::clamp(double(learned_bits(b.item())), options_.beta_min, options_.beta_max);
      snapped_.push_back(v);
    }
    hold_snapped();
  }
  const WaveQLambdas l = lambdas();
  if (weights_.empty() || (l.w == 0 && l.beta == 0)) return Variable();
  std::vector<Variable> betas = betas_;
  if (!snapped_.empty())
    for (Variable& b : betas) b = b.detach();  // the period no longer learns
  const WaveQTerms terms = waveq_penalty(weights_, betas, options_);
  return add(mul(terms.weight_term, l.w), mul(terms.bitwidth_term, l.beta));
}

void WaveQRegularizer::after_step() {
  clamp_betas(betas_, options_);
  hold_snapped();
}

void WaveQRegularizer::hold_snapped() {
  for (size_t i = 0; i < snapped_.size(); ++i) {
    Variable beta = betas_[i];  // shares the impl; in-place as the optimizers write
    beta.mutable_data().fill_(snapped_[i]);
  }
}

}  // namespace lowbit::quant
