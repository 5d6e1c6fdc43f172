#include "quant/regularize.h"

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
  const WaveQLambdas l = lambdas();
  if (weights_.empty() || (l.w == 0 && l.beta == 0)) return Variable();
  const WaveQTerms terms = waveq_penalty(weights_, betas_, options_);
  return add(mul(terms.weight_term, l.w), mul(terms.bitwidth_term, l.beta));
}

}  // namespace lowbit::quant
