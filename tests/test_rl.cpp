// ReLeQ's reinforcement-learning pieces (train/rl.h, train/releq_agent.h; spec §5.1): GAE and PPO's
// clipped loss against values worked out by hand, their gradients (by hand and by central
// differences), the categorical helper, the agent's determinism, and the agent finding the best bit
// vector of a toy reward.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "core/random.h"
#include "test_util.h"
#include "train/releq_agent.h"
#include "train/rl.h"

using namespace lowbit;

namespace {

Variable vec(const std::vector<double>& v, bool requires_grad = false) {
  return Variable(Tensor::from_vector(v, {static_cast<int64_t>(v.size())}), requires_grad);
}

void check_near(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-12) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element ", i);
    CHECK(got[i] == doctest::Approx(want[i]).epsilon(tol));
  }
}

// The toy problem: 4 layers, reward -sum_l |bits_l - target_l|, best vector = target.
const std::vector<int> kTarget = {3, 8, 2, 5};
double toy_reward(const std::vector<int>& bits) {
  double r = 0;
  for (size_t l = 0; l < bits.size(); ++l) r -= std::abs(bits[l] - kTarget[l]);
  return r;
}
// 7-dim states of the main variant: [l/L, b/8, StateQuant, n, c, k, std(W)] (made-up layer shapes).
std::vector<std::vector<double>> toy_states() {
  return {{0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.30},
          {0.25, 1.0, 1.0, 0.4, 0.2, 1.0, 0.12},
          {0.5, 1.0, 1.0, 1.0, 0.4, 0.0, 0.05},
          {0.75, 1.0, 1.0, 0.1, 1.0, 0.0, 0.08}};
}

// Trains with batches of `batch` episodes until the greedy bits equal the target; returns the number
// of episodes used (or -1 after max_episodes).
int episodes_to_target(train::ReleqAgent& agent, Generator& gen, int batch, int max_episodes) {
  const auto states = toy_states();
  for (int used = 0; used < max_episodes;) {
    std::vector<train::Episode> eps;
    for (int e = 0; e < batch; ++e, ++used) {
      train::Episode ep = agent.run_episode(states, gen);
      ep.set_reward(toy_reward(ep.bits));
      eps.push_back(std::move(ep));
    }
    agent.update(eps);
    if (agent.greedy_bits(states) == kTarget) return used;
  }
  return -1;
}

}  // namespace

TEST_CASE("gae: 3 steps, gamma 0.9, lambda 0.8, by hand") {
  // rewards 1, 0, 2; values 0.5, 0.4, 0.3; value after the last step 0.6.
  //   delta_2 = 2 + 0.9*0.6 - 0.3 = 2.24      A_2 = 2.24
  //   delta_1 = 0 + 0.9*0.3 - 0.4 = -0.13     A_1 = -0.13 + 0.72*2.24   = 1.4828
  //   delta_0 = 1 + 0.9*0.4 - 0.5 = 0.86      A_0 = 0.86 + 0.72*1.4828  = 1.927616
  const train::Gae g = train::gae({1, 0, 2}, {0.5, 0.4, 0.3}, 0.6, 0.9, 0.8);
  check_near(g.advantages, {1.927616, 1.4828, 2.24});
  check_near(g.returns, {1.927616 + 0.5, 1.4828 + 0.4, 2.24 + 0.3});

  // The episode ends after step 1: nothing after it is bootstrapped or carried back.
  //   A_2 = 2.24;  A_1 = 0 - 0.4 = -0.4;  A_0 = 0.86 + 0.72*(-0.4) = 0.572
  const train::Gae d = train::gae({1, 0, 2}, {0.5, 0.4, 0.3}, 0.6, 0.9, 0.8, {false, true, false});
  check_near(d.advantages, {0.572, -0.4, 2.24});

  // lambda = 1, terminal reward only (ReLeQ): A_t = gamma^(T-1-t) r - V_t.
  const train::Gae t = train::gae({0, 0, 5}, {1, 2, 3}, 0.0, 0.9, 1.0, {false, false, true});
  check_near(t.advantages, {0.81 * 5 - 1, 0.9 * 5 - 2, 5 - 3.0});
  check_near(t.returns, {0.81 * 5, 0.9 * 5, 5.0});

  // lambda = 0: returns are the one-step TD targets r + gamma V'.
  const train::Gae z = train::gae({1, 0, 2}, {0.5, 0.4, 0.3}, 0.6, 0.9, 0.0);
  check_near(z.returns, {1 + 0.9 * 0.4, 0.9 * 0.3, 2 + 0.9 * 0.6});

  testing::expect_error([] { train::gae({1, 2}, {0.5}, 0, 0.9, 1); }, {"gae", "2 rewards but 1 values"});
  testing::expect_error([] { train::gae({1, 2}, {0.5, 1}, 0, 0.9, 1, {true}); }, {"gae", "1 done flags"});
}

TEST_CASE("ppo_clipped_loss: value and gradients by hand, inside and outside the clip range") {
  // eps = 0.3: clip range [0.7, 1.3].
  //   ratio  A    r A    clip(r) A   min    d(-mean min)/d new_log_prob = -A r / 5 where r A is the min
  //   1.1    2    2.2    2.2         2.2    -0.44   (inside)
  //   1.5    1    1.5    1.3         1.3     0      (above, A > 0: clipped)
  //   1.5   -1   -1.5   -1.3        -1.5     0.3    (above, A < 0: not clipped)
  //   0.5   -2   -1.0   -1.4        -1.4     0      (below, A < 0: clipped)
  //   0.5    3    1.5    2.1         1.5    -0.3    (below, A > 0: not clipped)
  // policy = -(2.2 + 1.3 - 1.5 - 1.4 + 1.5) / 5 = -0.42
  // value  = mean((V - R)^2) = (0.25 + 0 + 1 + 4 + 0.25) / 5 = 1.1;   d/dV = 2 (V - R) / 5
  // entropy = mean(1, 1.2, 0.8, 1.5, 0.5) = 1.0;                        d/dH = -c2 / 5
  const std::vector<double> ratio = {1.1, 1.5, 1.5, 0.5, 0.5}, old = {-1, -0.5, -2, -1.2, -0.7};
  std::vector<double> lp(5);
  for (size_t i = 0; i < 5; ++i) lp[i] = old[i] + std::log(ratio[i]);
  Variable new_lp = vec(lp, true), old_lp = vec(old, true), adv = vec({2, 1, -1, -2, 3}, true);
  Variable values = vec({0.5, 1, -1, 2, 0}, true), returns = vec({1, 1, 0, 0, 0.5}, true);
  Variable entropy = vec({1, 1.2, 0.8, 1.5, 0.5}, true);

  const train::PpoLoss l = train::ppo_clipped_loss(new_lp, old_lp, adv, values, returns, entropy);
  CHECK(l.policy.item() == doctest::Approx(-0.42).epsilon(1e-12));
  CHECK(l.value.item() == doctest::Approx(1.1).epsilon(1e-12));
  CHECK(l.entropy.item() == doctest::Approx(1.0).epsilon(1e-12));
  CHECK(l.total.item() == doctest::Approx(-0.42 + 1.1 - 0.01).epsilon(1e-12));
  l.total.backward();
  check_near(new_lp.grad().data().to_vector(), {-0.44, 0, 0.3, 0, -0.3}, 1e-10);
  check_near(values.grad().data().to_vector(), {-0.2, 0, -0.4, 0.8, -0.2}, 1e-12);
  check_near(entropy.grad().data().to_vector(), std::vector<double>(5, -0.002), 1e-12);
  // Constants: no gradient reaches them.
  CHECK(!old_lp.grad().defined());
  CHECK(!adv.grad().defined());
  CHECK(!returns.grad().defined());

  // Other coefficients and a narrower clip (eps 0.05: 1.1 is now outside, clipped since A > 0).
  const train::PpoLoss k =
      train::ppo_clipped_loss(vec(lp), vec(old), vec({2, 1, -1, -2, 3}), vec({0.5, 1, -1, 2, 0}),
                              vec({1, 1, 0, 0, 0.5}), vec({1, 1.2, 0.8, 1.5, 0.5}), 0.05, 0.5, 0.1);
  // min terms: 2*1.05 = 2.1, 1.05, -1.5, -2*0.95 = -1.9, 1.5 -> policy = -(2.1 + 1.05 - 1.5 - 1.9 + 1.5) / 5 = -0.25
  CHECK(k.policy.item() == doctest::Approx(-0.25).epsilon(1e-12));
  CHECK(k.total.item() == doctest::Approx(-0.25 + 0.5 * 1.1 - 0.1 * 1.0).epsilon(1e-12));

  testing::expect_error(
      [&] {
        train::ppo_clipped_loss(new_lp, vec({1, 2}), adv, values, returns, entropy);
      },
      {"ppo_clipped_loss", "old_log_probs", "[5]"});
}

TEST_CASE("gradcheck: ppo_clipped_loss and categorical (float64)") {
  Generator g(3);
  // Ratios 1.1, 1.5, 0.6, 0.9 (two inside, two outside, away from the kinks at 0.7 and 1.3).
  const std::vector<double> old = {-1, -0.3, -2, -0.8}, r = {1.1, 1.5, 0.6, 0.9};
  std::vector<double> lp(4);
  for (size_t i = 0; i < 4; ++i) lp[i] = old[i] + std::log(r[i]);
  const Variable old_v = vec(old), adv = vec({1.5, -0.5, 2, -1}), ret = vec({0.3, -0.2, 1, 0});
  const auto ppo = gradcheck(
      [&](const std::vector<Variable>& in) {
        return train::ppo_clipped_loss(in[0], old_v, adv, in[1], ret, in[2]).total;
      },
      {vec(lp, true), vec({0.1, 0.4, -0.6, 0.2}, true), vec({0.9, 1.1, 0.4, 1.3}, true)});
  INFO(ppo.message);
  CHECK(ppo.ok);

  const auto cat = gradcheck(
      [&](const std::vector<Variable>& in) {
        const train::Categorical c = train::categorical(in[0], {2, 0, 4});
        return add(c.log_probs, mul(c.entropy, 0.7));
      },
      {Variable(Tensor::randn({3, 5}, g, DType::f64), true)});
  INFO(cat.message);
  CHECK(cat.ok);
}

TEST_CASE("categorical: log-probabilities and entropy from logits; sampling frequencies") {
  // Row 0: logits 0, 1, 2 -> log p_2 = 2 - log(1 + e + e^2). Row 1: uniform -> log p = -log 3, H = log 3.
  const train::Categorical c =
      train::categorical(Variable(Tensor::from_list({0, 1, 2, 1, 1, 1}, {2, 3}, DType::f64)), {2, 0});
  const double z = 1 + std::exp(1.0) + std::exp(2.0);
  const std::vector<double> p0 = {1 / z, std::exp(1.0) / z, std::exp(2.0) / z};
  double h0 = 0;
  for (double p : p0) h0 -= p * std::log(p);
  check_near(c.log_probs.data().to_vector(), {2 - std::log(z), -std::log(3.0)});
  check_near(c.entropy.data().to_vector(), {h0, std::log(3.0)});
  testing::expect_error([] { train::categorical(Variable(Tensor::zeros({1, 3})), {3}); }, {"categorical", "action 3"});

  Generator g(5);
  std::vector<int> counts(4, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[static_cast<size_t>(train::sample_categorical({0.2, 0.5, 0.0, 0.3}, g))];
  CHECK(counts[0] / double(n) == doctest::Approx(0.2).epsilon(0.05));
  CHECK(counts[1] / double(n) == doctest::Approx(0.5).epsilon(0.05));
  CHECK(counts[2] == 0);
  CHECK(counts[3] / double(n) == doctest::Approx(0.3).epsilon(0.05));
}

TEST_CASE("ReleqAgent: networks, episodes, step vs sequence log-probs, determinism") {
  for (train::ReleqNet kind : {train::ReleqNet::lstm, train::ReleqNet::mlp}) {
    const std::string kind_name = kind == train::ReleqNet::lstm ? "lstm" : "mlp";
    INFO(kind_name);
    const train::ReleqAgentOptions opt{.net = kind, .hidden = 16, .lr = 1e-3, .seed = 3};
    train::ReleqAgent a(opt), b(opt);
    const auto params = a.net().named_parameters();
    if (kind == train::ReleqNet::lstm) {
      CHECK(params.front().first == "lstm1.weight_ih");
      CHECK(params.front().second.shape() == Shape{64, 7});
    } else {
      CHECK(params.front().first == "shared.weight");
    }
    CHECK(params.back().first == "v3.bias");

    const auto states = toy_states();
    Generator ga(11), gb(11);
    std::vector<train::Episode> ea, eb;
    for (int e = 0; e < 6; ++e) {
      ea.push_back(a.run_episode(states, ga));
      eb.push_back(b.run_episode(states, gb));
      ea.back().set_reward(toy_reward(ea.back().bits));
      eb.back().set_reward(toy_reward(eb.back().bits));
      CHECK(ea.back().bits == eb.back().bits);
      CHECK(ea.back().log_probs == eb.back().log_probs);
    }
    const train::Episode& ep = ea[0];
    REQUIRE(ep.bits.size() == 4);
    for (size_t l = 0; l < 4; ++l) CHECK(opt.bit_choices[static_cast<size_t>(ep.actions[l])] == ep.bits[l]);
    CHECK(ep.rewards == std::vector<double>{0, 0, 0, toy_reward(ep.bits)});
    CHECK(ep.reward() == toy_reward(ep.bits));

    // The batched sequence pass over all 6 episodes ([L, E, 7], sequence first) gives the
    // log-probabilities and values the step-by-step walks recorded.
    std::vector<double> x;
    for (const auto& s : states)
      for (int e = 0; e < 6; ++e) x.insert(x.end(), s.begin(), s.end());
    const auto [logits, values] = a.net().sequence(Variable(Tensor::from_vector(x, {4, 6, 7}).to(DType::f32)));
    std::vector<int64_t> actions;
    for (size_t l = 0; l < 4; ++l)
      for (const auto& e : ea) actions.push_back(e.actions[l]);
    const train::Categorical pi = train::categorical(reshape(logits, {24, 5}), actions);
    const auto lp = pi.log_probs.data().to_vector(), v = values.data().to_vector();
    for (size_t l = 0; l < 4; ++l)
      for (size_t e = 0; e < 6; ++e) {
        CHECK(lp[l * 6 + e] == doctest::Approx(ea[e].log_probs[l]).epsilon(1e-5));
        CHECK(v[l * 6 + e] == doctest::Approx(ea[e].values[l]).epsilon(1e-5));
      }

    // Same seeds, same updates: bit-identical parameters.
    const train::ReleqUpdateStats sa = a.update(ea), sb = b.update(eb);
    CHECK(sa.decisions == 24);
    CHECK(sa.loss == sb.loss);
    CHECK(std::isfinite(sa.loss));
    const auto pa = a.net().parameters(), pb = b.net().parameters();
    for (size_t i = 0; i < pa.size(); ++i) CHECK(max_abs_diff(pa[i].data(), pb[i].data()) == 0);
    CHECK(a.greedy_bits(states) == b.greedy_bits(states));
    train::ReleqAgent fresh(opt);  // the update moved the weights
    CHECK(max_abs_diff(fresh.net().parameters().back().data(), pa.back().data()) > 0);
    CHECK(max_abs_diff(fresh.net().parameters().front().data(), pa.front().data()) > 0);
  }
}

TEST_CASE("ReleqAgent: states computed during the episode and update errors") {
  train::ReleqAgent agent({.bit_choices = {4, 8}, .state_dim = 2, .hidden = 8});
  Generator g(1);
  std::vector<std::vector<int>> seen;
  const train::Episode ep = agent.run_episode(
      3,
      [&](int64_t l, const std::vector<int>& bits) {
        seen.push_back(bits);
        double sum = 0;
        for (int b : bits) sum += b;
        return std::vector<double>{double(l) / 3, sum / 24};
      },
      g);
  REQUIRE(seen.size() == 3);
  CHECK(seen[0].empty());
  CHECK(seen[2] == std::vector<int>{ep.bits[0], ep.bits[1]});
  for (int b : ep.bits) CHECK((b == 4 || b == 8));

  testing::expect_error([&] { agent.run_episode({{0.0, 1.0, 2.0}}, g); }, {"state of layer 0", "expected 2"});
  train::Episode shorter = agent.run_episode({{0.0, 1.0}}, g);
  testing::expect_error([&] { agent.update({ep, shorter}); }, {"episode 1 has 1 steps", "episode 0 has 3"});

  // With normalised advantages (an option, off by default) over the batch: an ordinary update.
  train::ReleqAgent norm({.bit_choices = {4, 8}, .state_dim = 2, .hidden = 8, .normalize_advantages = true});
  std::vector<train::Episode> eps;
  for (int e = 0; e < 3; ++e) {
    eps.push_back(norm.run_episode({{0.0, 1.0}, {0.5, 0.2}}, g));
    eps.back().set_reward(e);
  }
  const train::ReleqUpdateStats st = norm.update(eps);
  CHECK(st.decisions == 6);
  CHECK(std::isfinite(st.loss));
}

TEST_CASE("ReleqAgent finds the best bit vector of a toy reward (lstm; mlp ablation)") {
  // reward = -sum_l |bits_l - target_l|, target 3, 8, 2, 5 over 4 layers: 5^4 = 625 vectors, one best.
  // Toy settings: lr 1e-3 (the spec's 1e-4 is for real oracles over ~1000 episodes) and entropy
  // coefficient 0.3 (the spec's 0.01 is for ReLeQ's rewards, which span ~3; these span 24), batches of
  // 16 episodes, raw advantages. Both networks reach the target greedily within the bound for seeds
  // s = 1..6 (agent seed s, sampling seed s + 1: lstm 1280-1680 episodes, mlp 592-2224); a run is
  // deterministic, so s = 1 is pinned here.
  const auto start = std::chrono::steady_clock::now();
  for (train::ReleqNet kind : {train::ReleqNet::lstm, train::ReleqNet::mlp}) {
    const std::string kind_name = kind == train::ReleqNet::lstm ? "lstm" : "mlp";
    INFO(kind_name);
    train::ReleqAgent agent({.net = kind, .lr = 1e-3, .c2 = 0.3, .seed = 1});
    Generator gen(2);
    const int used = episodes_to_target(agent, gen, 16, 3200);
    MESSAGE(kind_name, ": greedy bits = target after ", used, " episodes");
    CHECK(used > 0);
    // Sampled episodes now score far above a uniform policy's expected reward, -9.6
    // (per layer E|b - t| = 1.8, 3.6, 2.4, 1.8 over b in {2, 3, 4, 5, 8}).
    double mean_reward = 0;
    for (int e = 0; e < 50; ++e) mean_reward += toy_reward(agent.run_episode(toy_states(), gen).bits) / 50;
    MESSAGE(kind_name, ": mean sampled reward ", mean_reward);
    CHECK(mean_reward > -4.5);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE("toy search: ", secs, " s");
}
