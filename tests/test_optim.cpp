// Optimizers, schedules, gradient clipping, state dicts and the regularizer hook.
// Reference recurrences are written out here in double, independently of optim/.
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "core/kernels/cpu.h"
#include "core/math.h"
#include "core/parallel.h"
#include "optim/optim.h"

using namespace lowbit;
using namespace lowbit::optim;

namespace {

using Vec = std::vector<double>;

Variable param(const Vec& v, DType dtype = DType::f64) {
  return Variable(Tensor::from_vector(v, {static_cast<int64_t>(v.size())}).to(dtype), true);
}
void give_grad(Variable& p, const Vec& g) {
  p.set_grad(Variable(Tensor::from_vector(g, {static_cast<int64_t>(g.size())}).to(p.dtype())));
}
Vec values(const Variable& v) { return v.data().to_vector(); }

// Gradients for step k (0-based) of a 3-element parameter: signs and sizes vary so that momentum,
// the second moment and amsgrad's running max all matter.
Vec grad_at(int k) {
  static const std::vector<Vec> g = {
      {0.5, -1.0, 2.0}, {-0.25, 0.75, 0.1}, {1.5, 0.2, -0.05}, {0.05, -0.3, 0.01}, {-0.6, 0.01, 0.4}};
  return g[static_cast<size_t>(k)];
}
const Vec kStart = {1.0, -2.0, 0.5};

void check_close(const Vec& got, const Vec& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == doctest::Approx(want[i]).epsilon(tol).scale(1.0));
  }
}

// ---- independent reference recurrences (double) ----
struct RefSGD {
  double lr, wd = 0, momentum = 0, dampening = 0;
  bool nesterov = false;
  Vec buf;  // empty until the first step, which sets buffer = gradient
  void step(Vec& p, const Vec& g) {
    const bool first = buf.empty();
    buf.resize(p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      double d = g[i] + wd * p[i];
      if (momentum != 0) {
        buf[i] = first ? d : momentum * buf[i] + (1 - dampening) * d;
        d = nesterov ? d + momentum * buf[i] : buf[i];
      }
      p[i] -= lr * d;
    }
  }
};

struct RefAdam {
  double lr, wd = 0, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  bool amsgrad = false, decoupled = false;
  Vec m, v, vmax;
  int t = 0;
  void step(Vec& p, const Vec& g) {
    if (m.empty()) m.assign(p.size(), 0), v.assign(p.size(), 0), vmax.assign(p.size(), 0);
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      double gi = g[i];
      if (decoupled)
        p[i] -= lr * wd * p[i];
      else
        gi += wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * gi;
      v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      vmax[i] = std::max(vmax[i], v[i]);
      const double mhat = m[i] / (1 - std::pow(b1, t));
      const double vhat = (amsgrad ? vmax[i] : v[i]) / (1 - std::pow(b2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
};

ParamGroup group_of(std::string name, std::vector<Variable> params, double lr) {
  ParamGroup g;
  g.name = std::move(name);
  g.params = std::move(params);
  g.lr = lr;
  return g;
}

}  // namespace

TEST_CASE("SGD: plain, momentum, dampening, nesterov, weight decay against the recurrence") {
  struct Config {
    const char* what;
    double wd, momentum, dampening;
    bool nesterov;
  };
  for (const Config& c :
       {Config{"plain", 0, 0, 0, false}, Config{"weight decay", 0.1, 0, 0, false}, Config{"momentum", 0, 0.9, 0, false},
        Config{"dampening", 0, 0.9, 0.3, false}, Config{"nesterov", 0, 0.8, 0, true}, Config{"all", 0.05, 0.9, 0, true},
        Config{"momentum+wd+dampening", 0.05, 0.7, 0.5, false}}) {
    CAPTURE(c.what);
    Variable p = param(kStart);
    ParamGroup g = group_of("w", {p}, 0.1);
    g.weight_decay = c.wd;
    g.momentum = c.momentum;
    g.dampening = c.dampening;
    g.nesterov = c.nesterov;
    SGD opt({g});
    RefSGD ref{0.1, c.wd, c.momentum, c.dampening, c.nesterov, {}};
    Vec expect = kStart;
    for (int k = 0; k < 5; ++k) {
      give_grad(p, grad_at(k));
      opt.step();
      ref.step(expect, grad_at(k));
      check_close(values(p), expect, 1e-13);
    }
    CHECK(opt.step_count() == 5);
    CHECK(opt.state(0, 0).buffers.count("momentum_buffer") == (c.momentum != 0 ? 1u : 0u));
  }
}

TEST_CASE("SGD momentum with a constant unit gradient: hand-derived values") {
  // buf_1 = 1, buf_2 = 1.9, buf_3 = 2.71 -> p = -1, -2.9, -5.61 (lr 1, momentum 0.9, from p = 0).
  Variable p = param({0.0});
  ParamGroup g = group_of("w", {p}, 1.0);
  g.momentum = 0.9;
  SGD opt({g});
  const Vec expect = {-1.0, -2.9, -5.61};
  for (double e : expect) {
    give_grad(p, {1.0});
    opt.step();
    CHECK(p.data().item() == doctest::Approx(e).epsilon(1e-14));
  }
}

TEST_CASE("Adam, Adam with L2, amsgrad and AdamW against the recurrence") {
  struct Config {
    const char* what;
    double wd;
    bool amsgrad, decoupled;
  };
  for (const Config& c : {Config{"adam", 0, false, false}, Config{"adam wd", 0.1, false, false},
                          Config{"amsgrad", 0, true, false}, Config{"amsgrad wd", 0.1, true, false},
                          Config{"adamw", 0.1, false, true}, Config{"adamw amsgrad", 0.2, true, true}}) {
    CAPTURE(c.what);
    Variable p = param(kStart);
    ParamGroup g = group_of("w", {p}, 0.05);
    g.weight_decay = c.wd;
    g.amsgrad = c.amsgrad;
    g.beta1 = 0.8;
    g.beta2 = 0.9;  // short memory so the second moment falls and amsgrad's max differs
    g.eps = 1e-6;
    std::unique_ptr<Optimizer> opt;
    if (c.decoupled)
      opt = std::make_unique<AdamW>(std::vector<ParamGroup>{g});
    else
      opt = std::make_unique<Adam>(std::vector<ParamGroup>{g});
    CHECK(opt->name() == (c.decoupled ? "AdamW" : "Adam"));
    RefAdam ref{0.05, c.wd, 0.8, 0.9, 1e-6, c.amsgrad, c.decoupled, {}, {}, {}, 0};
    Vec expect = kStart;
    for (int k = 0; k < 5; ++k) {
      give_grad(p, grad_at(k));
      opt->step();
      ref.step(expect, grad_at(k));
      check_close(values(p), expect, 1e-12);
    }
    CHECK(opt->state(0, 0).step == 5);
    CHECK(opt->state(0, 0).buffers.count("max_exp_avg_sq") == (c.amsgrad ? 1u : 0u));
  }
}

TEST_CASE("amsgrad changes the trajectory once the second moment falls") {
  // Guards the test above against a configuration where amsgrad would be a no-op.
  RefAdam plain{0.05, 0, 0.8, 0.9, 1e-6, false, false, {}, {}, {}, 0};
  RefAdam ams = plain;
  ams.amsgrad = true;
  Vec a = kStart, b = kStart;
  for (int k = 0; k < 5; ++k) plain.step(a, grad_at(k)), ams.step(b, grad_at(k));
  CHECK(std::abs(a[0] - b[0]) > 1e-4);
}

TEST_CASE("Adam's first step moves each weight by lr * g / (|g| + eps): about lr against the gradient") {
  // m_1 = (1 - b1) g, v_1 = (1 - b2) g^2 -> bias-corrected m = g, sqrt(v) = |g|.
  Variable p = param({0.3, -0.7, 2.0});
  const Vec g = {4.0, -1e-3, 0.25};
  ParamGroup grp = group_of("w", {p}, 0.01);
  Adam opt({grp});
  give_grad(p, g);
  opt.step();
  const Vec start = {0.3, -0.7, 2.0};
  for (size_t i = 0; i < 3; ++i)
    CHECK(values(p)[i] == doctest::Approx(start[i] - 0.01 * g[i] / (std::abs(g[i]) + 1e-8)).epsilon(1e-12));
}

TEST_CASE("float32 parameters: large tensors (parallel path) match the double recurrence; thread-count independent") {
  const int64_t n = (1 << 17) + 3;
  Generator gen(7);
  const Tensor start = Tensor::randn({n}, gen, DType::f32);
  const Tensor grad = Tensor::randn({n}, gen, DType::f32);
  auto run = [&](bool adam, int threads) {
    set_num_threads(threads);
    Variable p(start.clone(), true);
    ParamGroup g = group_of("w", {p}, 0.01);
    g.momentum = 0.9;
    g.weight_decay = 1e-3;
    std::unique_ptr<Optimizer> opt;
    if (adam)
      opt = std::make_unique<Adam>(std::vector<ParamGroup>{g});
    else
      opt = std::make_unique<SGD>(std::vector<ParamGroup>{g});
    for (int k = 0; k < 3; ++k) {
      p.set_grad(Variable(math::mul(grad, 1.0 + k)));
      opt->step();
    }
    set_num_threads(2);
    return values(p);
  };
  for (bool adam : {false, true}) {
    CAPTURE(adam);
    const Vec one = run(adam, 1), two = run(adam, 2);
    CHECK(one == two);
    const Vec s = start.to_vector(), gv = grad.to_vector();
    double worst = 0;
    for (int64_t i = 0; i < n; i += 997) {
      Vec p = {s[i]};
      RefSGD sgd{0.01, 1e-3, 0.9, 0, false, {}};
      RefAdam ad{0.01, 1e-3, 0.9, 0.999, 1e-8, false, false, {}, {}, {}, 0};
      for (int k = 0; k < 3; ++k) {
        const Vec gk = {static_cast<double>(static_cast<float>(gv[i] * (1.0 + k)))};
        adam ? ad.step(p, gk) : sgd.step(p, gk);
      }
      worst = std::max(worst, std::abs(p[0] - two[i]));
    }
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("Adam float32: the AVX-512 loop and the portable loop give identical bits") {
  Generator gen(5);
  for (int64_t n : {int64_t{1}, int64_t{15}, int64_t{16}, int64_t{17}, int64_t{1000}, int64_t{(1 << 16) + 5}}) {
    for (int variant = 0; variant < 4; ++variant) {
      const bool amsgrad = variant & 1, decoupled = variant & 2;
      CAPTURE(n);
      CAPTURE(variant);
      const Tensor start = Tensor::randn({n}, gen, DType::f32);
      std::vector<Tensor> grads;
      for (int k = 0; k < 3; ++k) grads.push_back(Tensor::randn({n}, gen, DType::f32, 0, k == 0 ? 2.0 : 0.1));
      auto run = [&](bool simd) {
        const kernels::Avx512Guard avx512(simd);
        Variable p(start.clone(), true);
        ParamGroup g = group_of("w", {p}, 0.01);
        g.amsgrad = amsgrad;
        g.weight_decay = 0.05;
        std::unique_ptr<Optimizer> opt;
        if (decoupled)
          opt = std::make_unique<AdamW>(std::vector<ParamGroup>{g});
        else
          opt = std::make_unique<Adam>(std::vector<ParamGroup>{g});
        for (const Tensor& gr : grads) {
          p.set_grad(Variable(gr));
          opt->step();
        }
        return values(p);
      };
      const Vec simd = run(true), portable = run(false);
      CHECK(simd == portable);
      CHECK(simd != start.to_vector());
    }
  }
}

TEST_CASE("parameter groups keep their own lr; group lookup names the known groups") {
  Variable a = param({1.0, 2.0}), b = param({3.0});
  SGD opt({group_of("weights", {a}, 0.1), group_of("bitwidths", {b}, 0.01)});
  give_grad(a, {1.0, -1.0});
  give_grad(b, {2.0});
  opt.step();
  check_close(values(a), {0.9, 2.1}, 1e-15);
  check_close(values(b), {2.98}, 1e-15);
  CHECK(opt.group("bitwidths").params[0].same(b));
  const auto all = opt.parameters();
  REQUIRE(all.size() == 2);
  CHECK((all[0].same(a) && all[1].same(b)));
  opt.group("bitwidths").lr = 0.5;
  opt.step();  // gradients still there: accumulated until zero_grad
  check_close(values(b), {1.98}, 1e-15);
  CHECK_THROWS_WITH_AS(opt.group("biases"), doctest::Contains("'weights', 'bitwidths'"), Error);
  opt.zero_grad();
  CHECK_FALSE(a.grad().defined());
  CHECK_FALSE(b.grad().defined());
}

TEST_CASE("groups from designated initializers (the documented form); initial_lr follows lr") {
  Variable w = param({1.0}), beta = param({8.0});
  SGD opt({ParamGroup{.name = "weights", .params = {w}, .param_names = {"fc.weight"}, .lr = 0.1, .momentum = 0.9},
           ParamGroup{.name = "bitwidths", .params = {beta}, .lr = 0.01}});
  CHECK(opt.group("weights").initial_lr == 0.1);
  CHECK(opt.group("bitwidths").initial_lr == 0.01);
  CHECK(opt.group("weights").momentum == 0.9);
  CHECK(opt.group("bitwidths").momentum == 0);
  give_grad(w, {1.0});
  opt.step();
  CHECK(opt.state_dict().count("weights.fc.weight.momentum_buffer"));
}

TEST_CASE("params without a gradient are skipped and keep their per-param step") {
  Variable a = param(kStart), b = param(kStart);
  ParamGroup g = group_of("w", {a, b}, 0.05);
  g.param_names = {"a", "b"};
  Adam opt({g});
  RefAdam ref_a{0.05, 0, 0.9, 0.999, 1e-8, false, false, {}, {}, {}, 0}, ref_b = ref_a;
  Vec ea = kStart, eb = kStart;
  for (int k = 0; k < 3; ++k) {
    opt.zero_grad();
    give_grad(a, grad_at(k));
    ref_a.step(ea, grad_at(k));
    if (k > 0) {  // b has no gradient on the first step
      give_grad(b, grad_at(k));
      ref_b.step(eb, grad_at(k));
    }
    opt.step();
    if (k == 0) CHECK(values(b) == kStart);
  }
  check_close(values(a), ea, 1e-12);
  check_close(values(b), eb, 1e-12);  // bias correction uses b's own step count (2)
  CHECK(opt.state(0, 0).step == 3);
  CHECK(opt.state(0, 1).step == 2);
}

TEST_CASE("a dense channels-last parameter with a row-major gradient updates the right elements") {
  Generator gen(3);
  const Tensor logical = Tensor::randn({2, 3, 2, 2}, gen, DType::f64);
  Tensor cl = Tensor::empty({2, 3, 2, 2}, DType::f64, MemoryFormat::channels_last);
  cl.copy_(logical);
  Variable p(cl, true);
  const Tensor grad = Tensor::randn({2, 3, 2, 2}, gen, DType::f64);  // row-major
  p.set_grad(Variable(grad));
  SGD opt({group_of("w", {p}, 0.5)});
  opt.step();
  CHECK(p.data().is_contiguous(MemoryFormat::channels_last));
  const Vec s = logical.to_vector(), gv = grad.to_vector(), got = values(p);
  for (size_t i = 0; i < s.size(); ++i) CHECK(got[i] == doctest::Approx(s[i] - 0.5 * gv[i]).epsilon(1e-15));
}

TEST_CASE("hyper-parameter and group validation") {
  Variable p = param({1.0});
  ParamGroup g = group_of("w", {p}, 0.1);
  g.nesterov = true;
  CHECK_THROWS_WITH_AS(SGD({g}), doctest::Contains("nesterov"), Error);
  ParamGroup a = group_of("w", {p}, 0.1);
  a.beta1 = 1.0;
  CHECK_THROWS_WITH_AS(Adam({a}), doctest::Contains("beta1"), Error);
  CHECK_THROWS_WITH_AS(SGD({group_of("w", {p}, 0.1), group_of("w", {param({2.0})}, 0.1)}),
                       doctest::Contains("two parameter groups are named 'w'"), Error);
  Variable non_leaf = p * 2.0;
  CHECK_THROWS_WITH_AS(SGD({group_of("w", {non_leaf}, 0.1)}), doctest::Contains("not a leaf"), Error);
  CHECK_THROWS_WITH_AS(SGD({group_of("w", {p}, 0.1), group_of("b", {p}, 0.1)}),
                       doctest::Contains("'b.0' is the same Variable as 'w.0'"), Error);
  ParamGroup named = group_of("w", {p, param({2.0})}, 0.1);
  named.param_names = {"x"};
  CHECK_THROWS_WITH_AS(SGD({named}), doctest::Contains("param_names"), Error);
  // Changing a group after construction is checked at step().
  SGD opt({group_of("w", {p}, 0.1)});
  opt.group("w").lr = -1;
  give_grad(p, {1.0});
  CHECK_THROWS_WITH_AS(opt.step(), doctest::Contains("lr must be >= 0"), Error);
}

// ---- schedules ----

TEST_CASE("schedules: factors at given epochs") {
  CHECK(constant()->factor(123.5) == 1);
  auto st = step_lr(30, 0.1);
  CHECK(st->factor(0) == 1);
  CHECK(st->factor(29.99) == 1);
  CHECK(st->factor(30) == doctest::Approx(0.1));
  CHECK(st->factor(65) == doctest::Approx(0.01));
  auto ms = multistep({80, 120}, 0.2);
  CHECK(ms->factor(79.9) == 1);
  CHECK(ms->factor(80) == doctest::Approx(0.2));
  CHECK(ms->factor(119) == doctest::Approx(0.2));
  CHECK(ms->factor(120) == doctest::Approx(0.04));
  auto ex = exponential(0.95);
  CHECK(ex->factor(2) == doctest::Approx(0.9025));
  CHECK(ex->factor(0.5) == doctest::Approx(std::sqrt(0.95)));
  auto co = cosine(100);
  CHECK(co->factor(0) == doctest::Approx(1));
  CHECK(co->factor(50) == doctest::Approx(0.5));
  CHECK(co->factor(25) == doctest::Approx(0.5 * (1 + std::cos(std::numbers::pi / 4))));
  CHECK(co->factor(100) == doctest::Approx(0).scale(1));
  CHECK(co->factor(150) == doctest::Approx(0).scale(1));
  CHECK(cosine(100, 0.1)->factor(50) == doctest::Approx(0.55));
  CHECK(cosine(100, 0.1)->factor(100) == doctest::Approx(0.1));
  auto wu = with_warmup(step_lr(10, 0.5), 5, 0.2);
  CHECK(wu->factor(0) == doctest::Approx(0.2));
  CHECK(wu->factor(2.5) == doctest::Approx(0.6));
  CHECK(wu->factor(5) == doctest::Approx(1));
  CHECK(wu->factor(14.9) == doctest::Approx(1));
  CHECK(wu->factor(15) == doctest::Approx(0.5));
}

TEST_CASE("parse_schedule: command-line forms") {
  CHECK(parse_schedule("constant", 10)->factor(7) == 1);
  auto st = parse_schedule("step:30:0.1", 100);
  CHECK(st->factor(29) == 1);
  CHECK(st->factor(30) == doctest::Approx(0.1));
  CHECK(parse_schedule("step:10", 100)->factor(25) == doctest::Approx(0.01));  // gamma 0.1 by default
  auto ms = parse_schedule("multistep:80,120", 160);
  CHECK(ms->factor(100) == doctest::Approx(0.1));
  CHECK(ms->factor(130) == doctest::Approx(0.01));
  CHECK(parse_schedule("multistep:60,75:0.2", 90)->factor(80) == doctest::Approx(0.04));
  CHECK(parse_schedule("exp:0.95", 10)->factor(3) == doctest::Approx(0.95 * 0.95 * 0.95));
  auto co = parse_schedule("cosine", 90);
  CHECK(co->factor(45) == doctest::Approx(0.5));
  CHECK(co->factor(90) == doctest::Approx(0).scale(1));
  CHECK(parse_schedule("cosine:0.2", 90)->factor(90) == doctest::Approx(0.2));
  // Warmup then a cosine over the remaining 100 epochs.
  auto wc = parse_schedule("warmup:5+cosine", 105);
  CHECK(wc->factor(0) == doctest::Approx(0.1));
  CHECK(wc->factor(5) == doctest::Approx(1));
  CHECK(wc->factor(55) == doctest::Approx(0.5));
  CHECK(wc->factor(105) == doctest::Approx(0).scale(1));
  CHECK(parse_schedule("warmup:4:0.5+step:10:0.5", 100)->factor(2) == doctest::Approx(0.75));
  CHECK(parse_schedule("warmup:4:0.5+step:10:0.5", 100)->factor(14) == doctest::Approx(0.5));
  CHECK(parse_schedule("warmup:3", 100)->factor(50) == 1);
}

TEST_CASE("parse_schedule: errors name the string and what is wrong") {
  struct Bad {
    const char* spec;
    const char* says;
  };
  for (const Bad& b : {Bad{"bogus", "unknown schedule 'bogus'"}, Bad{"step:x", "step size 'x' is not a number"},
                       Bad{"step", "expected step:STEP_SIZE[:GAMMA]"}, Bad{"step:30:0.1:2", "expected step"},
                       Bad{"step:0", "step size must be > 0"}, Bad{"multistep:80,a", "milestone 'a' is not a number"},
                       Bad{"multistep:120,80", "increasing"}, Bad{"multistep:80,120:-1", "gamma must be > 0"},
                       Bad{"exp", "expected exp:GAMMA"}, Bad{"exp:0.9x", "gamma '0.9x' is not a number"},
                       Bad{"cosine:2", "eta_min ratio must be in [0, 1]"}, Bad{"warmup:0+cosine", "warmup epochs"},
                       Bad{"warmup:5+", "nothing after '+'"}, Bad{"warmup:5+bogus", "unknown schedule"},
                       Bad{"warmup:10+cosine", "leaves no epochs"}, Bad{"", "unknown schedule ''"}}) {
    CAPTURE(b.spec);
    CHECK_THROWS_WITH_AS(parse_schedule(b.spec, 10), doctest::Contains(b.says), Error);
    std::string quoted = "'";
    quoted += b.spec;
    CHECK_THROWS_WITH_AS(parse_schedule(b.spec, 10), doctest::Contains(quoted.c_str()), Error);
  }
}

TEST_CASE("apply_schedule scales each group's initial lr") {
  Variable a = param({1.0}), b = param({1.0});
  SGD opt({group_of("weights", {a}, 0.1), group_of("bitwidths", {b}, 0.02)});
  CHECK(opt.group("weights").initial_lr == 0.1);
  auto sched = parse_schedule("multistep:2,4:0.5", 6);
  apply_schedule(opt, *sched, 3);
  CHECK(opt.group("weights").lr == doctest::Approx(0.05));
  CHECK(opt.group("bitwidths").lr == doctest::Approx(0.01));
  apply_schedule(opt, *sched, 1);  // pure function of the epoch: going back restores the lr
  CHECK(opt.group("weights").lr == doctest::Approx(0.1));
  give_grad(a, {1.0});
  apply_schedule(opt, *sched, 5);
  opt.step();
  CHECK(a.data().item() == doctest::Approx(1 - 0.025));
}

// ---- clipping ----

TEST_CASE("clip_grad_norm: total 2-norm, scales only above max_norm, ignores params without grad") {
  Variable a = param({0, 0}), b = param({0}), c = param({5});
  give_grad(a, {3, 4});
  give_grad(b, {12});  // total norm 13
  const double n = clip_grad_norm({a, b, c}, 100);
  CHECK(n == doctest::Approx(13));
  CHECK(values(a.grad()) == Vec{3, 4});
  const double before = clip_grad_norm({a, b, c}, 6.5);
  CHECK(before == doctest::Approx(13));
  const double s = 6.5 / (13 + 1e-6);
  check_close(values(a.grad()), {3 * s, 4 * s}, 1e-15);
  check_close(values(b.grad()), {12 * s}, 1e-15);
  CHECK_FALSE(c.grad().defined());
  CHECK(clip_grad_norm({a, b, c}, 100) == doctest::Approx(6.5));
}

TEST_CASE("clip_grad_norm on large float32 gradients: the exact norm, independent of the thread count") {
  Generator gen(9);
  const Tensor g1 = Tensor::randn({300001}, gen, DType::f32);
  const Tensor g2 = Tensor::randn({77}, gen, DType::f32);
  double sum_sq = 0;
  for (const Tensor& g : {g1, g2})
    for (double x : g.to_vector()) sum_sq += x * x;
  std::vector<double> norms;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Variable a(Tensor::zeros({300001}), true), b(Tensor::zeros({77}), true);
    a.set_grad(Variable(g1));
    b.set_grad(Variable(g2));
    norms.push_back(clip_grad_norm({a, b}, 1.0));
    CHECK(clip_grad_norm({a, b}, 10.0) == doctest::Approx(1.0).epsilon(1e-6));  // clipped to ~max_norm
  }
  set_num_threads(2);
  CHECK(norms[0] == norms[1]);
  CHECK(norms[0] == doctest::Approx(std::sqrt(sum_sq)).epsilon(1e-12));
}

TEST_CASE("clip_grad_norm scales gradients that share one tensor only once") {
  Variable a = param({0, 0}), b = param({0, 0});
  Variable shared(Tensor::from_list({3, 4}, {2}, DType::f64));
  a.set_grad(shared);
  b.set_grad(shared);  // norm sqrt(50)
  clip_grad_norm({a, b}, 1);
  const double s = 1 / (std::sqrt(50.0) + 1e-6);
  check_close(values(a.grad()), {3 * s, 4 * s}, 1e-14);
  check_close(values(b.grad()), {3 * s, 4 * s}, 1e-14);
  CHECK(values(shared) == Vec{3, 4});
}

// ---- state dicts ----

namespace {
// Runs `steps` steps of a real backward pass on loss = sum(p^3 / 3 - 0.3 p^2) (+ q^2 on the 2nd param).
void train(Optimizer& opt, std::vector<Variable>& ps, int steps) {
  for (int k = 0; k < steps; ++k) {
    opt.zero_grad();
    Variable loss = sum(ps[0] * ps[0] * ps[0] * (1.0 / 3) - ps[0] * ps[0] * 0.3) + sum(ps[1] * ps[1]);
    loss.backward();
    opt.step();
  }
}

std::unique_ptr<Optimizer> make(const std::string& kind, std::vector<Variable> ps) {
  ParamGroup w = group_of("weights", {ps[0]}, 0.05);
  w.param_names = {"conv1.weight"};
  w.weight_decay = 0.01;
  ParamGroup b = group_of("bitwidths", {ps[1]}, 0.02);
  if (kind == "sgd") {
    w.momentum = 0.9;
    w.nesterov = true;
    b.momentum = 0.5;
    b.dampening = 0.1;
    return std::make_unique<SGD>(std::vector<ParamGroup>{w, b});
  }
  w.amsgrad = true;
  if (kind == "adam") return std::make_unique<Adam>(std::vector<ParamGroup>{w, b});
  return std::make_unique<AdamW>(std::vector<ParamGroup>{w, b});
}
}  // namespace

TEST_CASE("state_dict round trip: a loaded optimizer continues bit-identically") {
  for (const std::string kind : {"sgd", "adam", "adamw"}) {
    CAPTURE(kind);
    std::vector<Variable> pa = {param({0.9, -0.4, 1.7}, DType::f32), param({0.5, 2.0}, DType::f32)};
    auto a = make(kind, pa);
    train(*a, pa, 3);
    a->group("weights").lr = 0.04;  // a hyper-parameter change must travel too
    const auto saved = a->state_dict();
    CHECK(saved.at("step").item() == 3);
    CHECK(saved.at("weights.lr").item() == doctest::Approx(0.04));
    if (kind == "sgd") {
      CHECK(saved.count("weights.conv1.weight.momentum_buffer"));
      CHECK(saved.count("bitwidths.0.momentum_buffer"));
    } else {
      CHECK(saved.count("weights.conv1.weight.max_exp_avg_sq"));
      CHECK(saved.at("bitwidths.0.step").item() == 3);
    }
    // The checkpoint is a snapshot: later steps must not change it.
    std::vector<Variable> pb = {Variable(pa[0].data().clone(), true), Variable(pa[1].data().clone(), true)};
    auto b = make(kind, pb);
    b->load_state_dict(saved);
    CHECK(b->step_count() == 3);
    CHECK(b->group("weights").lr == doctest::Approx(0.04));
    std::map<std::string, Vec> saved_values;
    for (const auto& [key, t] : saved) saved_values[key] = t.to_vector();
    train(*a, pa, 3);
    train(*b, pb, 3);
    for (int i = 0; i < 2; ++i) CHECK(values(pa[i]) == values(pb[i]));
    for (const auto& [key, t] : saved) CHECK_MESSAGE(t.to_vector() == saved_values[key], key);
    // A fresh optimizer without the state diverges (so the check above can fail).
    std::vector<Variable> pd = {param({0.9, -0.4, 1.7}, DType::f32), param({0.5, 2.0}, DType::f32)};
    auto d = make(kind, pd);
    train(*d, pd, 3);
    auto e = make(kind, {Variable(pd[0].data().clone(), true), Variable(pd[1].data().clone(), true)});
    std::vector<Variable> pe = {e->param_groups()[0].params[0], e->param_groups()[1].params[0]};
    train(*d, pd, 3);
    train(*e, pe, 3);
    CHECK(values(pd[0]) != values(pe[0]));
    // The state dict of the loaded optimizer equals the one it loaded (before the extra steps).
    auto f = make(kind, {Variable(pa[0].data().clone(), true), Variable(pa[1].data().clone(), true)});
    f->load_state_dict(saved);
    const auto again = f->state_dict();
    REQUIRE(again.size() == saved.size());
    for (const auto& [key, t] : saved) {
      CAPTURE(key);
      REQUIRE(again.count(key));
      CHECK(again.at(key).to_vector() == t.to_vector());
    }
  }
}

TEST_CASE("load_state_dict throws naming the key and leaves the optimizer unchanged") {
  std::vector<Variable> ps = {param({0.9, -0.4, 1.7}, DType::f32), param({0.5, 2.0}, DType::f32)};
  auto sgd = make("sgd", ps);
  train(*sgd, ps, 2);
  const auto good = sgd->state_dict();
  auto adam = make("adam", ps);
  CHECK_THROWS_WITH_AS(adam->load_state_dict(good),
                       doctest::Contains("momentum_buffer' (Adam keeps no buffer 'momentum_buffer')"), Error);
  CHECK(adam->step_count() == 0);

  auto bad = good;
  bad["biases.0.momentum_buffer"] = Tensor::zeros({2});
  CHECK_THROWS_WITH_AS(sgd->load_state_dict(bad), doctest::Contains("unknown key 'biases.0.momentum_buffer'"), Error);
  bad = good;
  bad["bitwidths.0.momentum_buffer"] = Tensor::zeros({3});
  CHECK_THROWS_WITH_AS(sgd->load_state_dict(bad), doctest::Contains("'bitwidths.0.momentum_buffer' has shape [3]"),
                       Error);
  bad = good;
  bad["bitwidths.0.momentum_buffer"] = Tensor::zeros({2}, DType::f64);
  CHECK_THROWS_WITH_AS(sgd->load_state_dict(bad), doctest::Contains("float64"), Error);
  bad = good;
  bad.erase("bitwidths.momentum");
  CHECK_THROWS_WITH_AS(sgd->load_state_dict(bad), doctest::Contains("missing key 'bitwidths.momentum'"), Error);
  bad = good;
  bad["weights.lr"] = Tensor::scalar(-1, DType::f64);
  CHECK_THROWS_WITH_AS(sgd->load_state_dict(bad), doctest::Contains("lr must be >= 0"), Error);
  // Nothing of the failed loads stuck.
  const auto now = sgd->state_dict();
  for (const auto& [key, t] : good) CHECK(now.at(key).to_vector() == t.to_vector());
}

// ---- regularizer hook ----

TEST_CASE("L2 and L1 regularizers: analytic gradients and float64 finite differences") {
  Generator gen(11);
  Variable w(Tensor::randn({3, 4}, gen, DType::f64), true);
  Variable v(Tensor::randn({5}, gen, DType::f64), true);
  ParamGroup g = group_of("weights", {w, v}, 0.1);
  auto l2 = std::make_shared<L2Regularizer>(0.3);
  auto l1 = std::make_shared<L1Regularizer>(0.2);
  for (int which = 0; which < 2; ++which) {
    CAPTURE(which);
    std::shared_ptr<Regularizer> reg = which == 0 ? std::shared_ptr<Regularizer>(l2) : l1;
    g.regularizers = {reg};
    SGD opt({g});
    w.zero_grad();
    v.zero_grad();
    Variable loss = opt.regularization_loss();
    REQUIRE(loss.defined());
    double expect_loss = 0;
    for (const Variable& p : {w, v})
      for (double x : values(p)) expect_loss += which == 0 ? 0.15 * x * x : 0.2 * std::abs(x);
    CHECK(loss.item() == doctest::Approx(expect_loss));
    loss.backward();
    for (const Variable& p : {w, v}) {
      const Vec x = values(p), gr = values(p.grad());
      for (size_t i = 0; i < x.size(); ++i)
        CHECK(gr[i] == doctest::Approx(which == 0 ? 0.3 * x[i] : 0.2 * (x[i] > 0 ? 1.0 : -1.0)));
    }
    const auto res = gradcheck(
        [&](const std::vector<Variable>& in) {
          ParamGroup pg;
          pg.params = in;
          return reg->loss(pg, 0);
        },
        {w, v});
    CHECK_MESSAGE(res.ok, res.message);
  }
}

namespace {
// A regularizer with a trainable parameter of its own, like WaveQ's per-layer bitwidth:
// loss = beta * sum(p^2) + lambda * beta. Records the step it was asked for.
struct ScaledByBeta : Regularizer {
  Variable beta;
  double lambda;
  int64_t last_step = -1;
  ScaledByBeta(Variable b, double l) : beta(std::move(b)), lambda(l) {}
  std::string name() const override { return "scaled_by_beta"; }
  Variable loss(const ParamGroup& group, int64_t step) override {
    last_step = step;
    Variable total = beta * lambda;
    for (const Variable& p : group.params) total = total + beta * sum(p * p);
    return total;
  }
};
}  // namespace

TEST_CASE("regularizer hook: its gradient reaches the group's params and its own parameter in another group") {
  Variable w = param({1.0, -2.0});
  Variable beta = param({0.5});
  auto reg = std::make_shared<ScaledByBeta>(beta, 0.25);  // the optimizer updates beta in place
  ParamGroup weights = group_of("weights", {w}, 0.1);
  weights.regularizers = {reg};
  ParamGroup bits = group_of("bitwidths", {beta}, 0.01);
  SGD opt({weights, bits});
  for (int k = 0; k < 2; ++k) {
    opt.zero_grad();
    Variable task = sum(w * 0.0);  // a task loss independent of the regularizer
    Variable loss = task + opt.regularization_loss();
    CHECK(reg->last_step == k);
    const Vec w0 = values(w);
    const double b0 = beta.data().item();
    loss.backward();
    // d/dw = 2 beta w, d/dbeta = sum(w^2) + lambda
    check_close(values(w.grad()), {2 * b0 * w0[0], 2 * b0 * w0[1]}, 1e-15);
    CHECK(beta.grad().item() == doctest::Approx(w0[0] * w0[0] + w0[1] * w0[1] + 0.25));
    opt.step();
    check_close(values(w), {w0[0] - 0.1 * 2 * b0 * w0[0], w0[1] - 0.1 * 2 * b0 * w0[1]}, 1e-15);
    CHECK(beta.data().item() == doctest::Approx(b0 - 0.01 * (w0[0] * w0[0] + w0[1] * w0[1] + 0.25)));
  }
}

namespace {
struct PositionRecorder : Regularizer {
  std::vector<std::pair<double, double>> calls;
  std::string name() const override { return "position_recorder"; }
  Variable loss(const ParamGroup&, int64_t) override { return Variable(); }
  void set_position(double t, double total) override { calls.emplace_back(t, total); }
};
}  // namespace

TEST_CASE("set_position reaches every regularizer once; an undefined term adds nothing") {
  auto shared = std::make_shared<PositionRecorder>();
  auto own = std::make_shared<PositionRecorder>();
  ParamGroup a = group_of("a", {param({1.0})}, 0.1), b = group_of("b", {param({2.0})}, 0.1);
  a.regularizers = {shared, own};
  b.regularizers = {shared};
  SGD opt({a, b});
  opt.set_position(3.25, 10);
  CHECK(shared->calls == std::vector<std::pair<double, double>>{{3.25, 10}});
  CHECK(own->calls == std::vector<std::pair<double, double>>{{3.25, 10}});
  CHECK_FALSE(opt.regularization_loss().defined());
}

TEST_CASE("regularization_loss is undefined without regularizers and sums several") {
  Variable w = param({1.0, -2.0});
  SGD none({group_of("w", {w}, 0.1)});
  CHECK_FALSE(none.regularization_loss().defined());
  ParamGroup g = group_of("w", {w}, 0.1);
  g.regularizers = {std::make_shared<L2Regularizer>(2.0), std::make_shared<L1Regularizer>(0.5),
                    std::make_shared<L2Regularizer>(0.0)};
  SGD both({g});
  CHECK(both.regularization_loss().item() == doctest::Approx(0.5 * 2.0 * 5 + 0.5 * 3));
}
