#include "train/rl.h"

#include <cmath>

#include "autograd/ops.h"
#include "core/error.h"

namespace lowbit::train {

Gae gae(const std::vector<double>& rewards, const std::vector<double>& values, double last_value, double gamma,
        double lambda, const std::vector<bool>& dones) {
  const size_t T = rewards.size();
  LOWBIT_CHECK(values.size() == T, "gae: ", T, " rewards but ", values.size(), " values");
  LOWBIT_CHECK(dones.empty() || dones.size() == T, "gae: ", T, " rewards but ", dones.size(), " done flags");
  Gae out;
  out.advantages.assign(T, 0.0);
  out.returns.assign(T, 0.0);
  double next_value = last_value, next_adv = 0;
  for (size_t k = T; k-- > 0;) {
    const double live = (!dones.empty() && dones[k]) ? 0.0 : 1.0;
    const double delta = rewards[k] + gamma * live * next_value - values[k];
    next_adv = delta + gamma * lambda * live * next_adv;
    out.advantages[k] = next_adv;
    out.returns[k] = next_adv + values[k];
    next_value = values[k];
  }
  return out;
}

PpoLoss ppo_clipped_loss(const Variable& new_log_probs, const Variable& old_log_probs, const Variable& advantages,
                         const Variable& values, const Variable& returns, const Variable& entropy, double clip_eps,
                         double c1, double c2) {
  const Shape shape = new_log_probs.shape();
  LOWBIT_CHECK(shape.size() == 1 && shape[0] > 0, "ppo_clipped_loss: new_log_probs must be [B], got ",
               shape_str(shape));
  const std::pair<const char*, const Variable*> others[] = {{"old_log_probs", &old_log_probs},
                                                            {"advantages", &advantages},
                                                            {"values", &values},
                                                            {"returns", &returns},
                                                            {"entropy", &entropy}};
  for (const auto& [name, v] : others)
    LOWBIT_CHECK(v->defined() && v->shape() == shape, "ppo_clipped_loss: ", name, " must be ", shape_str(shape),
                 ", got ", v->defined() ? shape_str(v->shape()) : std::string("undefined"));
  LOWBIT_CHECK(clip_eps >= 0 && clip_eps < 1, "ppo_clipped_loss: clip_eps must be in [0, 1), got ", clip_eps);
  const Variable adv = advantages.detach();
  const Variable ratio = exp(sub(new_log_probs, old_log_probs.detach()));
  const Variable surr = mul(ratio, adv);
  const Variable clipped = mul(clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps), adv);
  PpoLoss out;
  // Inside the clip range both terms are equal: minimum splits the gradient between them, and clamp
  // passes it, so the sum is the unclipped gradient.
  out.policy = neg(mean(minimum(surr, clipped)));
  const Variable err = sub(values, returns.detach());
  out.value = mean(mul(err, err));
  out.entropy = mean(entropy);
  out.total = sub(add(out.policy, mul(out.value, c1)), mul(out.entropy, c2));
  return out;
}

Categorical categorical(const Variable& logits, const std::vector<int64_t>& actions) {
  LOWBIT_CHECK(logits.dim() == 2 && logits.size(0) == static_cast<int64_t>(actions.size()),
               "categorical: expected logits [", actions.size(), ", A], got ", shape_str(logits.shape()));
  const int64_t A = logits.size(1);
  std::vector<int32_t> target(actions.size());
  for (size_t b = 0; b < actions.size(); ++b) {
    LOWBIT_CHECK(actions[b] >= 0 && actions[b] < A, "categorical: action ", actions[b], " at ", b, " is outside [0, ",
                 A, ")");
    target[b] = static_cast<int32_t>(actions[b]);
  }
  const Variable lsm = log_softmax(logits, 1);
  Categorical out;
  out.log_probs =
      neg(nll_loss(lsm, Tensor::from_vector(target, {static_cast<int64_t>(target.size())}), Reduction::none));
  out.entropy = neg(sum(mul(exp(lsm), lsm), {1}));
  return out;
}

int64_t sample_categorical(const std::vector<double>& probs, Generator& gen) {
  LOWBIT_CHECK(!probs.empty(), "sample_categorical: no probabilities");
  const double u = gen.uniform();
  double acc = 0;
  for (size_t a = 0; a < probs.size(); ++a) {
    acc += probs[a];
    if (u < acc) return static_cast<int64_t>(a);
  }
  return static_cast<int64_t>(probs.size()) - 1;
}

}  // namespace lowbit::train
