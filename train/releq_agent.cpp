#include "train/releq_agent.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/ops.h"
#include "core/error.h"
#include "train/rl.h"

namespace lowbit::train {

namespace {

using StateFn = std::function<std::vector<double>(int64_t, const std::vector<int>&)>;

Tensor f32_tensor(const std::vector<double>& v, const Shape& shape) {
  return Tensor::from_vector(v, shape).to(DType::f32);
}

}  // namespace

// ---- Episode ----

void Episode::set_reward(double reward) {
  LOWBIT_CHECK(!rewards.empty(), "Episode::set_reward: the episode has no steps");
  std::fill(rewards.begin(), rewards.end(), 0.0);
  rewards.back() = reward;  // §5.1: the reward comes at the end, intermediate layers get 0
}

double Episode::reward() const { return std::accumulate(rewards.begin(), rewards.end(), 0.0); }

// ---- ReleqPolicyNet ----

ReleqPolicyNet::ReleqPolicyNet(const ReleqAgentOptions& opt, Generator& gen)
    : kind_(opt.net), temperature_(opt.temperature) {
  const int64_t S = opt.state_dim, H = opt.hidden, H2 = std::max<int64_t>(1, opt.hidden / 2);
  const auto A = static_cast<int64_t>(opt.bit_choices.size());
  LOWBIT_CHECK(S > 0 && H > 0, "ReleqPolicyNet: state_dim and hidden must be positive, got ", S, " and ", H);
  LOWBIT_CHECK(A >= 2, "ReleqPolicyNet: need at least two bit choices, got ", A);
  LOWBIT_CHECK(temperature_ > 0, "ReleqPolicyNet: temperature must be positive, got ", temperature_);
  if (kind_ == ReleqNet::lstm) {
    lstm1_ = register_module("lstm1", std::make_shared<LSTM>(S, H, true, gen));
    lstm2_ = register_module("lstm2", std::make_shared<LSTM>(H, H, true, gen));
  } else {
    shared_ = register_module("shared", std::make_shared<Linear>(S, H, true, gen));
    pi1_ = register_module("pi1", std::make_shared<Linear>(H, H, true, gen));
    pi2_ = register_module("pi2", std::make_shared<Linear>(H, H, true, gen));
  }
  pi_ = register_module("pi", std::make_shared<Linear>(H, A, true, gen));
  v1_ = register_module("v1", std::make_shared<Linear>(H, H, true, gen));
  v2_ = register_module("v2", std::make_shared<Linear>(H, H2, true, gen));
  v3_ = register_module("v3", std::make_shared<Linear>(H2, 1, true, gen));
}

ReleqPolicyNet::Carry ReleqPolicyNet::initial_carry(int64_t batch) const {
  if (kind_ != ReleqNet::lstm) return {};
  return {lstm1_->zero_state(batch), lstm2_->zero_state(batch)};
}

Variable ReleqPolicyNet::policy_logits(const Variable& features) const {
  // Policy_net: FC-ReLU, FC-ReLU, divided by the temperature, then the action FC (§5.1).
  const Variable h = relu((*pi2_)(relu((*pi1_)(features))));
  return (*pi_)(mul(h, 1.0 / temperature_));
}

Variable ReleqPolicyNet::value(const Variable& features) const {
  const Variable v = (*v3_)(relu((*v2_)(relu((*v1_)(features)))));
  return squeeze(v, v.dim() - 1);
}

std::pair<Variable, Variable> ReleqPolicyNet::step(const Variable& s, Carry& carry) {
  if (kind_ == ReleqNet::lstm) {
    auto [h1, s1] = lstm1_->step(s, carry.s1);
    auto [h2, s2] = lstm2_->step(h1, carry.s2);
    carry = {s1, s2};
    return {(*pi_)(h2), value(h1)};
  }
  const Variable z = relu((*shared_)(s));
  return {policy_logits(z), value(z)};
}

std::pair<Variable, Variable> ReleqPolicyNet::sequence(const Variable& s) {
  if (kind_ == ReleqNet::lstm) {
    const Variable h1 = lstm1_->forward(s);
    const Variable h2 = lstm2_->forward(h1);
    return {(*pi_)(h2), value(h1)};
  }
  const Variable z = relu((*shared_)(s));
  return {policy_logits(z), value(z)};
}

// ---- ReleqAgent ----

ReleqAgent::ReleqAgent(ReleqAgentOptions opt) : opt_(std::move(opt)) {
  for (int b : opt_.bit_choices) LOWBIT_CHECK(b >= 1 && b <= 32, "ReleqAgent: bit choices must be in 1..32, got ", b);
  LOWBIT_CHECK(opt_.ppo_epochs >= 1, "ReleqAgent: ppo_epochs must be >= 1, got ", opt_.ppo_epochs);
  Generator gen(opt_.seed);
  net_ = std::make_shared<ReleqPolicyNet>(opt_, gen);
  optim::ParamGroup group{.name = "agent", .lr = opt_.lr, .eps = opt_.adam_eps};
  for (auto& [name, p] : net_->named_parameters()) {
    group.params.push_back(p);
    group.param_names.push_back(name);
  }
  optimizer_ = std::make_unique<optim::Adam>(std::vector<optim::ParamGroup>{std::move(group)});
}

Episode ReleqAgent::walk(int64_t layers, const StateFn& state_of, Generator* gen) {
  LOWBIT_CHECK(layers > 0, "ReleqAgent::run_episode: need at least one layer, got ", layers);
  NoGradGuard no_grad;
  Episode ep;
  ReleqPolicyNet::Carry carry = net_->initial_carry(1);
  for (int64_t l = 0; l < layers; ++l) {
    std::vector<double> s = state_of(l, ep.bits);
    LOWBIT_CHECK(static_cast<int64_t>(s.size()) == opt_.state_dim, "ReleqAgent::run_episode: the state of layer ", l,
                 " has ", s.size(), " entries, expected ", opt_.state_dim);
    auto [logits, value] = net_->step(Variable(f32_tensor(s, {1, opt_.state_dim})), carry);
    const std::vector<double> lsm = log_softmax(logits, 1).data().to_vector();
    int64_t a = 0;
    if (gen) {
      std::vector<double> probs(lsm.size());
      std::transform(lsm.begin(), lsm.end(), probs.begin(), [](double v) { return std::exp(v); });
      a = sample_categorical(probs, *gen);
    } else {
      a = std::max_element(lsm.begin(), lsm.end()) - lsm.begin();
    }
    ep.states.push_back(std::move(s));
    ep.actions.push_back(a);
    ep.bits.push_back(opt_.bit_choices[static_cast<size_t>(a)]);
    ep.log_probs.push_back(lsm[static_cast<size_t>(a)]);
    ep.values.push_back(value.item());
    ep.rewards.push_back(0.0);
  }
  return ep;
}

Episode ReleqAgent::run_episode(const std::vector<std::vector<double>>& states, Generator& gen) {
  return walk(
      static_cast<int64_t>(states.size()),
      [&](int64_t l, const std::vector<int>&) { return states[static_cast<size_t>(l)]; }, &gen);
}

Episode ReleqAgent::run_episode(int64_t layers, const StateFn& state_of, Generator& gen) {
  return walk(layers, state_of, &gen);
}

std::vector<int> ReleqAgent::greedy_bits(const std::vector<std::vector<double>>& states) {
  return walk(
             static_cast<int64_t>(states.size()),
             [&](int64_t l, const std::vector<int>&) { return states[static_cast<size_t>(l)]; }, nullptr)
      .bits;
}

ReleqUpdateStats ReleqAgent::update(const std::vector<Episode>& episodes) {
  LOWBIT_CHECK(!episodes.empty(), "ReleqAgent::update: no episodes");
  const size_t L = episodes[0].actions.size(), E = episodes.size();
  const auto S = static_cast<size_t>(opt_.state_dim);
  const auto A = static_cast<int64_t>(opt_.bit_choices.size());
  const size_t B = L * E;
  std::vector<double> x(B * S), old_lp(B), adv(B), ret(B);
  std::vector<int64_t> actions(B);
  for (size_t e = 0; e < E; ++e) {
    const Episode& ep = episodes[e];
    LOWBIT_CHECK(ep.actions.size() == L && ep.states.size() == L && ep.log_probs.size() == L && ep.values.size() == L &&
                     ep.rewards.size() == L,
                 "ReleqAgent::update: episode ", e, " has ", ep.actions.size(), " steps, episode 0 has ", L,
                 " (episodes of one update must be of one length, with every field filled)");
    std::vector<bool> dones(L, false);
    dones.back() = true;  // the episode ends after its last layer
    const Gae g = gae(ep.rewards, ep.values, 0.0, opt_.gamma, opt_.lambda, dones);
    for (size_t t = 0; t < L; ++t) {
      const size_t b = t * E + e;  // sequence-first order, as the networks' outputs
      LOWBIT_CHECK(ep.states[t].size() == S, "ReleqAgent::update: episode ", e, " layer ", t, " state has ",
                   ep.states[t].size(), " entries, expected ", S);
      std::copy(ep.states[t].begin(), ep.states[t].end(), x.begin() + static_cast<std::ptrdiff_t>(b * S));
      actions[b] = ep.actions[t];
      old_lp[b] = ep.log_probs[t];
      adv[b] = g.advantages[t];
      ret[b] = g.returns[t];
    }
  }
  if (opt_.normalize_advantages && B > 1) {
    const double m = std::accumulate(adv.begin(), adv.end(), 0.0) / static_cast<double>(B);
    double v = 0;
    for (double a : adv) v += (a - m) * (a - m);
    const double sd = std::sqrt(v / static_cast<double>(B));
    for (double& a : adv) a = (a - m) / (sd + 1e-8);
  }
  const auto Bi = static_cast<int64_t>(B);
  const Variable xs(f32_tensor(x, {static_cast<int64_t>(L), static_cast<int64_t>(E), opt_.state_dim}));
  const Variable old_v(f32_tensor(old_lp, {Bi})), adv_v(f32_tensor(adv, {Bi})), ret_v(f32_tensor(ret, {Bi}));

  ReleqUpdateStats stats;
  stats.decisions = Bi;
  net_->train();
  for (int epoch = 0; epoch < opt_.ppo_epochs; ++epoch) {
    optimizer_->zero_grad();
    auto [logits, values] = net_->sequence(xs);
    const Categorical pi = categorical(reshape(logits, {Bi, A}), actions);
    const PpoLoss loss = ppo_clipped_loss(pi.log_probs, old_v, adv_v, reshape(values, {Bi}), ret_v, pi.entropy,
                                          opt_.clip_eps, opt_.c1, opt_.c2);
    loss.total.backward();
    optimizer_->step();
    stats.loss = loss.total.item();
    stats.policy = loss.policy.item();
    stats.value = loss.value.item();
    stats.entropy = loss.entropy.item();
  }
  return stats;
}

}  // namespace lowbit::train
