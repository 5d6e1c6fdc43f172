// The ReLeQ agent (spec §5.1): a policy over per-layer weight bitwidths trained with PPO.
//
// An episode walks the L quantizable layers in order; at layer l the agent reads the caller's state
// vector s_l (the 7-dim main variant of §5.1: [l/L, b_l/8, StateQuant, n, c, k (min-max normalised),
// std(W_l)]) and samples one bitwidth from `bit_choices` ({2, 3, 4, 5, 8}, the "flexible action").
// The reward comes only at the end (Episode::set_reward: the oracle's shaped reward on the last
// step, 0 before). update() runs PPO epochs over a batch of finished episodes with GAE advantages.
//
// Networks (§5.1 "Agent network"):
//   lstm (primary, RPolicy_net): s -> LSTM(hidden) = h1; policy: h1 -> LSTM(hidden) -> FC -> softmax;
//        value: h1 -> FC(hidden)-ReLU -> FC(hidden/2)-ReLU -> FC(1).
//   mlp (ablation, Policy_net): s -> FC(hidden)-ReLU = z; policy: z -> FC(hidden)-ReLU -> FC(hidden)-ReLU
//        -> / temperature (0.5) -> FC -> softmax; value: z -> FC(hidden)-ReLU -> FC(hidden/2)-ReLU -> FC(1).
// hidden = 128 gives the official 128 / 64 widths. The networks compute in float32.
//
// Determinism: the weights come from Generator(options.seed); run_episode draws one uniform per
// layer from the caller's generator; update() has no randomness (full batch, fixed order). So a run
// is a pure function of the seeds and the rewards.
//
//   train::ReleqAgent agent({.seed = 1});
//   Generator gen(7);
//   for (int round = 0; round < rounds; ++round) {
//     std::vector<train::Episode> batch;
//     for (int e = 0; e < 8; ++e) {
//       train::Episode ep = agent.run_episode(states, gen);   // states: L vectors of 7
//       ep.set_reward(oracle(ep.bits));
//       batch.push_back(std::move(ep));
//     }
//     agent.update(batch);
//   }
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "core/random.h"
#include "layers/linear.h"
#include "layers/lstm.h"
#include "layers/module.h"
#include "optim/adam.h"

namespace lowbit::train {

enum class ReleqNet { lstm, mlp };

struct ReleqAgentOptions {
  std::vector<int> bit_choices{2, 3, 4, 5, 8};  // the actions (§5.1 "flexible action")
  int64_t state_dim = 7;                        // §5.1 main variant
  ReleqNet net = ReleqNet::lstm;                // lstm: primary; mlp: ablation
  int64_t hidden = 128;
  double temperature = 0.5;    // mlp only: the policy head's hidden divided by it before the last FC
  double lr = 1e-4;            // Adam (§5.1)
  double adam_eps = 1e-5;      // Adam (§5.1)
  double gamma = 0.9;          // ppo_all_layers.py
  double lambda = 1.0;         // GAE lambda (§5.1)
  double clip_eps = 0.3;       // PPO clip (§5.1)
  double c1 = 1.0, c2 = 0.01;  // value and entropy coefficients (§5.1)
  int ppo_epochs = 4;          // optimisation passes over each batch (not in the spec)
  // (A - mean) / std over the batch: off by default (not in the spec; on the toy test it amplified the
  // value head's noise once the batch's rewards were nearly equal and collapsed the policy early).
  bool normalize_advantages = false;
  uint64_t seed = 1;  // weight init
};

// One pass over the layers. Filled by run_episode except the rewards, which the caller sets.
struct Episode {
  std::vector<std::vector<double>> states;  // [L][state_dim], as read
  std::vector<int64_t> actions;             // [L] indices into bit_choices
  std::vector<int> bits;                    // [L] the chosen bitwidths
  std::vector<double> log_probs;            // [L] log pi(action) under the sampling policy
  std::vector<double> values;               // [L] the value head's estimate at each layer
  std::vector<double> rewards;              // [L] zeros; set_reward puts the episode's reward last
  void set_reward(double reward);
  double reward() const;  // sum of rewards
};

// The policy and value networks (children: lstm1, lstm2, pi for lstm; shared, pi1, pi2, pi for mlp;
// v1, v2, v3 for both).
class ReleqPolicyNet : public Module {
 public:
  ReleqPolicyNet(const ReleqAgentOptions& opt, Generator& gen);

  // Recurrent state between layers (unused by the mlp).
  struct Carry {
    LSTMState s1, s2;
  };
  Carry initial_carry(int64_t batch) const;

  // One layer: s [N, state_dim] -> (logits [N, A], values [N]); advances carry.
  std::pair<Variable, Variable> step(const Variable& s, Carry& carry);
  // A whole sequence from the initial carry: s [L, N, state_dim] -> (logits [L, N, A], values [L, N]).
  std::pair<Variable, Variable> sequence(const Variable& s);
  // Module interface: the logits of sequence(s).
  Variable forward(const Variable& s) override { return sequence(s).first; }
  std::string type_name() const override { return "ReleqPolicyNet"; }

 private:
  Variable policy_logits(const Variable& features) const;  // mlp: from the shared features
  Variable value(const Variable& features) const;          // [..., 1] -> squeezed by callers

  ReleqNet kind_;
  double temperature_;
  std::shared_ptr<LSTM> lstm1_, lstm2_;
  std::shared_ptr<Linear> shared_, pi1_, pi2_, pi_, v1_, v2_, v3_;
};

struct ReleqUpdateStats {
  double loss = 0, policy = 0, value = 0, entropy = 0;  // of the last PPO epoch (before its step)
  int64_t decisions = 0;                                // episodes x layers
};

class ReleqAgent {
 public:
  explicit ReleqAgent(ReleqAgentOptions opt = {});

  // Samples one bitwidth per layer; states: L vectors of state_dim.
  Episode run_episode(const std::vector<std::vector<double>>& states, Generator& gen);
  // The same with states computed as the episode goes: state_of(l, bits chosen for layers < l).
  Episode run_episode(int64_t layers,
                      const std::function<std::vector<double>(int64_t, const std::vector<int>&)>& state_of,
                      Generator& gen);
  // The most probable bitwidth per layer (no sampling).
  std::vector<int> greedy_bits(const std::vector<std::vector<double>>& states);
  // PPO epochs with Adam over finished episodes (all of one length, rewards set); GAE per episode,
  // terminal after its last layer.
  ReleqUpdateStats update(const std::vector<Episode>& episodes);

  ReleqPolicyNet& net() { return *net_; }
  optim::Adam& optimizer() { return *optimizer_; }
  const ReleqAgentOptions& options() const { return opt_; }

 private:
  Episode walk(int64_t layers, const std::function<std::vector<double>(int64_t, const std::vector<int>&)>& state_of,
               Generator* gen);

  ReleqAgentOptions opt_;
  std::shared_ptr<ReleqPolicyNet> net_;
  std::unique_ptr<optim::Adam> optimizer_;
};

}  // namespace lowbit::train
