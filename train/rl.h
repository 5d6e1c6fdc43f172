// Reinforcement-learning pieces for ReLeQ (spec §5.1, "PPO"): generalized advantage estimation,
// PPO's clipped surrogate loss built from autograd ops, and a categorical policy's log-probabilities
// and entropy from logits.
//
//   train::Gae g = train::gae(rewards, values, 0.0, 0.9, 1.0);          // one episode, terminal at the end
//   train::Categorical pi = train::categorical(logits, actions);         // logits [B, A] -> [B], [B]
//   train::PpoLoss l = train::ppo_clipped_loss(pi.log_probs, old_log_probs, advantages, values, returns,
//                                              pi.entropy);             // clip 0.3, c1 = 1, c2 = 0.01
//   l.total.backward();
#pragma once

#include <cstdint>
#include <vector>

#include "autograd/variable.h"
#include "core/random.h"

namespace lowbit::train {

// ---- generalized advantage estimation (Schulman et al. 2016), spec §5.1 ----
struct Gae {
  std::vector<double> advantages;  // A_t
  std::vector<double> returns;     // R_t = A_t + V_t (the value head's regression target)
};

// Over one trajectory of T steps, with V_T = last_value (the value after the last step):
//   delta_t = r_t + gamma (1 - done_t) V_{t+1} - V_t
//   A_t     = delta_t + gamma lambda (1 - done_t) A_{t+1},   A_T = 0
// done_t: the episode ended after step t (nothing after it is bootstrapped); `dones` empty = none.
// lambda = 1 gives the discounted sum of TD residuals (ReLeQ's choice); lambda = 0 gives R_t = r_t +
// gamma V_{t+1}, the TD target of the official code's value loss. Throws on mismatched sizes.
Gae gae(const std::vector<double>& rewards, const std::vector<double>& values, double last_value, double gamma,
        double lambda, const std::vector<bool>& dones = {});

// ---- PPO's clipped objective (Schulman et al. 2017), spec §5.1: eps 0.3, c1 = 1, c2 = 0.01 ----
struct PpoLoss {
  Variable total;    // policy + c1 value - c2 entropy: the loss to minimise
  Variable policy;   // -mean(min(r A, clip(r, 1 - eps, 1 + eps) A)), r = exp(new_log_probs - old_log_probs)
  Variable value;    // mean((V - R)^2)
  Variable entropy;  // mean(entropy)
};

// Every argument is [B] (one entry per decision). Gradients flow to new_log_probs, values and entropy;
// old_log_probs, advantages and returns are constants (detached here). Where r A is the smaller term
// (inside the clip range, or outside it on the side that makes the objective worse), the policy
// gradient is -A r / B per element (d/d new_log_prob); where the clipped term is smaller it is 0.
PpoLoss ppo_clipped_loss(const Variable& new_log_probs, const Variable& old_log_probs, const Variable& advantages,
                         const Variable& values, const Variable& returns, const Variable& entropy,
                         double clip_eps = 0.3, double c1 = 1.0, double c2 = 0.01);

// ---- a categorical policy over logits ----
struct Categorical {
  Variable log_probs;  // [B]: log softmax(logits)[b, actions[b]]
  Variable entropy;    // [B]: -sum_a p_a log p_a
};

// logits [B, A] (any floating dtype), actions: B indices in [0, A). Built from log_softmax, so both
// outputs are differentiable in the logits.
Categorical categorical(const Variable& logits, const std::vector<int64_t>& actions);

// One draw from the distribution `probs` (non-negative, summing to ~1) with one uniform of gen:
// the first index whose cumulative probability exceeds u (the last index on rounding).
int64_t sample_categorical(const std::vector<double>& probs, Generator& gen);

}  // namespace lowbit::train
