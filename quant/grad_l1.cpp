// Gradient-l1 regularization (grad_l1.h; Alizadeh et al., spec §7).
#include "quant/grad_l1.h"

#include <cmath>
#include <optional>
#include <vector>

#include "autograd/kink_tape.h"
#include "autograd/ops.h"
#include "core/math.h"
#include "core/parallel.h"
#include "core/random.h"
#include "layers/activation.h"
#include "layers/conv.h"
#include "layers/dropout.h"
#include "layers/linear.h"

namespace lowbit::quant {
namespace {

// sum |x| in one pass over x's memory (no |x| tensor): partial sums in double per chunk (the chunks a
// function of the size alone) merged in order, so deterministic for any thread count. With
// `scaled_sign`, also writes scale * sign(x) there (a new tensor laid out as x) in the same pass.
double l1_sum(const Tensor& x_in, Tensor* scaled_sign = nullptr, double scale = 0) {
  const Tensor x = x_in.is_dense() ? x_in : x_in.contiguous();
  const int64_t n = x.numel();
  constexpr int64_t kChunk = 1 << 16;
  const int64_t chunks = std::max<int64_t>(1, (n + kChunk - 1) / kChunk);
  std::vector<double> part(static_cast<size_t>(chunks), 0.0);
  if (scaled_sign) *scaled_sign = Tensor::empty_like(x);
  LOWBIT_DISPATCH_FLOAT(x.dtype(), "grad_l1_norm", [&] {
    const scalar_t* p = x.data<scalar_t>();  // dense: its elements are the first numel() from here
    scalar_t* o = scaled_sign ? scaled_sign->data<scalar_t>() : nullptr;
    const scalar_t k = scalar_t(scale);
    parallel_chunks(0, n, chunks, [&](int64_t c, int64_t lo, int64_t hi) {
      // 16 lanes summed in the element type over blocks of 64 rows of 16, then into double: the inner
      // loop vectorizes (a plain floating-point reduction would not), the order is fixed.
      constexpr int64_t kLanes = 16, kBlock = 64 * kLanes;
      double s = 0;
      int64_t i = lo;
      for (; i + kBlock <= hi; i += kBlock) {
        scalar_t lane[kLanes] = {};
        for (int64_t r = 0; r < kBlock; r += kLanes)
          for (int64_t j = 0; j < kLanes; ++j) lane[j] += std::abs(p[i + r + j]);
        for (int64_t j = 0; j < kLanes; ++j) s += double(lane[j]);
      }
      for (; i < hi; ++i) s += std::abs(double(p[i]));
      if (o)
        for (int64_t m = lo; m < hi; ++m) o[m] = k * scalar_t((p[m] > scalar_t(0)) - (p[m] < scalar_t(0)));
      part[size_t(c)] = s;
    });
  });
  double total = 0;
  for (double v : part) total += v;
  return total;
}

// ||x||_1 as an op: a scalar of x's dtype (l1_sum). Gradient g * sign(x) in x's layout in one pass;
// recorded (third derivatives) as mul(g, sign(x)).
Variable l1_norm(const Variable& x_in) {
  const double total = l1_sum(x_in.data());
  const Tensor& x = x_in.data();
  return make_result(Tensor::full({}, total, x.dtype()), "grad_l1_norm", {x_in},
                     [x_in](const Variable& g, const Variable&) {
                       if (GradMode::enabled()) return std::vector<Variable>{mul(g, Variable(math::sign(x_in.data())))};
                       const Tensor xt = x_in.data().is_dense() ? x_in.data() : x_in.data().contiguous();
                       Tensor out = Tensor::empty_like(xt);
                       const int64_t m = xt.numel();
                       LOWBIT_DISPATCH_FLOAT(xt.dtype(), "grad_l1_norm_backward", [&] {
                         const scalar_t gv = scalar_t(g.item());
                         const scalar_t* p = xt.data<scalar_t>();
                         scalar_t* o = out.data<scalar_t>();
                         parallel_for(0, m, 1 << 15, [&](int64_t lo, int64_t hi) {
                           for (int64_t i = lo; i < hi; ++i)
                             o[i] = gv * scalar_t((p[i] > scalar_t(0)) - (p[i] < scalar_t(0)));
                         });
                       });
                       return std::vector<Variable>{Variable(std::move(out))};
                     });
}

// r(x) = max|x| (range scaling, grad_l1.h): the op max_abs (gradient sign(x) at the largest element,
// ties split), and its value without a graph.
Variable range_of(const Variable& x) { return max_abs(x); }
double range_value(const Tensor& x) { return math::max_abs(x); }

}  // namespace

ActivationCapture::ActivationCapture(std::vector<std::shared_ptr<Module>> modules)
    : captured_(std::make_shared<std::vector<Variable>>()) {
  for (auto& m : modules) {
    VariableTransform prev = m->output_hook();
    saved_.emplace_back(m, prev);
    // The module's own output is a_l (spec §7.1: pre-quantization); the previous hook still runs on it.
    m->set_output_hook([prev, store = captured_](const Variable& y) {
      if (y.requires_grad()) store->push_back(y);
      return prev ? prev(y) : y;
    });
  }
}

ActivationCapture::ActivationCapture(ActivationCapture&& o) noexcept
    : saved_(std::move(o.saved_)), captured_(std::move(o.captured_)) {
  o.saved_.clear();
}

ActivationCapture::~ActivationCapture() {
  for (auto& [m, hook] : saved_) m->set_output_hook(hook);
}

GradL1Regularizer::GradL1Regularizer(Module& model, GradL1Options options) : options_(options) {
  LOWBIT_CHECK(options_.lambda_w >= 0 && options_.lambda_a >= 0, "grad-l1: lambdas must be >= 0, got lambda_w ",
               options_.lambda_w, ", lambda_a ", options_.lambda_a);
  LOWBIT_CHECK(options_.mode == GradL1Mode::exact || options_.fd_step > 0, "grad-l1: the fd step must be > 0, got ",
               options_.fd_step);
  for (auto& [name, m] : model.named_modules()) {
    if (auto* c = dynamic_cast<Conv2d*>(m.get())) weights_.emplace_back(join_name(name, "weight"), c->weight());
    if (auto* l = dynamic_cast<Linear*>(m.get())) weights_.emplace_back(join_name(name, "weight"), l->weight());
    if (dynamic_cast<const ReLU*>(m.get()) || dynamic_cast<const Hardtanh*>(m.get())) {  // ReLU6 is a Hardtanh
      activation_modules_.push_back(m);
      activation_names_.push_back(name);
    }
  }
  LOWBIT_CHECK(!weights_.empty() || !activation_modules_.empty(),
               "grad-l1: the model has no Conv2d, Linear or activation module to regularize");
}

GradL1Penalty GradL1Regularizer::penalty(const Variable& loss, const std::vector<Variable>& activations,
                                         bool across_ranks) const {
  LOWBIT_CHECK(loss.defined() && loss.numel() == 1, "grad-l1: the loss must be a scalar");
  LOWBIT_CHECK(loss.requires_grad(), "grad-l1: the loss has no graph (computed without grad mode?)");
  // The tensors whose gradients enter: weights (lambda_w > 0) then activations (lambda_a > 0).
  std::vector<Variable> inputs;
  size_t n_weights = 0;
  if (options_.lambda_w > 0)
    for (const auto& [name, w] : weights_)
      if (w.requires_grad()) inputs.push_back(w), ++n_weights;
  if (options_.lambda_a > 0)
    for (const Variable& a : activations)
      if (a.requires_grad()) inputs.push_back(a);
  const bool ranged = options_.scale != GradL1Scale::none;
  const bool second_order = options_.scale != GradL1Scale::range_only;  // range_only: the norms constant
  LOWBIT_CHECK(!(ranged && across_ranks),
               "grad-l1: range scaling (--grad-l1-scale range) is not supported across ranks (MPI)");
  GradL1Penalty out;
  if (inputs.empty()) {
    out.value = mul(loss, 0.0);
    return out;
  }
  // Double backpropagation (spec §7.2 (a)): the first-order gradients, recorded.
  const std::vector<Variable> g =
      grad({loss}, inputs, {}, /*retain_graph=*/true, /*create_graph=*/second_order, /*allow_unused=*/true);
  Variable wsum, asum;
  for (size_t i = 0; i < g.size(); ++i) {
    if (!g[i].defined()) continue;
    // Across ranks: the whole batch's weight gradient is the sum of the ranks' (share-weighted) ones.
    const Variable gi = across_ranks && i < n_weights ? all_reduce_sum(g[i]) : g[i];
    // ||.||_1 over every element (batch included for a_l); range_only: a constant.
    Variable l1 = second_order ? l1_norm(gi) : Variable(Tensor::full({}, l1_sum(gi.data()), gi.dtype()));
    // r(x_l) ||g_l||_1 (range scaling, grad_l1.h); range_fixed: r a constant.
    if (options_.scale == GradL1Scale::range_fixed)
      l1 = mul(l1, range_value(inputs[i].data()));
    else if (ranged)
      l1 = mul(l1, range_of(inputs[i]));
    Variable& acc = i < n_weights ? wsum : asum;
    acc = acc.defined() ? add(acc, l1) : l1;
    ++(i < n_weights ? out.weights : out.activations);
  }
  // Alizadeh et al.'s penalty, spec §7.1: lambda_w sum ||dL/dW_l||_1 + lambda_a sum ||dL/da_l||_1.
  Variable value;
  if (wsum.defined()) {
    out.weight_l1 = wsum.item();
    value = mul(wsum, options_.lambda_w);
  }
  if (across_ranks && asum.defined()) asum = all_reduce_sum(asum);  // every rank's samples
  if (asum.defined()) {
    out.act_l1 = asum.item();
    const Variable t = mul(asum, options_.lambda_a);
    value = value.defined() ? add(value, t) : t;
  }
  out.value = value.defined() ? reshape(value, loss.shape()) : mul(loss, 0.0);
  return out;
}

namespace {

// The state a forward pass changes besides the graph: buffers (batch-norm running statistics), every
// Dropout's generator and the default generator.
struct ForwardState {
  std::vector<std::pair<Tensor, Tensor>> buffers;  // (the buffer, a copy)
  std::vector<std::pair<Generator*, std::pair<uint64_t, uint64_t>>> generators;

  explicit ForwardState(Module& model) {
    for (auto& [name, t] : model.named_buffers()) buffers.emplace_back(t, t.clone());
    for (auto& [name, m] : model.named_modules())
      if (auto* d = dynamic_cast<Dropout*>(m.get())) generators.push_back({&d->generator(), {0, 0}});
    generators.push_back({&default_generator(), {0, 0}});
    for (auto& [g, st] : generators) st = {g->seed(), g->offset()};
  }
  void restore() {
    for (auto& [t, copy] : buffers) t.copy_(copy);
    for (auto& [g, st] : generators) g->set_state(st.first, st.second);
  }
};

// Activation offsets for the perturbed pass: the k-th captured output (call order, as
// ActivationCapture records them) gets offsets[k] added before the module's own hook.
class ActivationOffsets {
 public:
  ActivationOffsets(const std::vector<std::shared_ptr<Module>>& modules, std::vector<Tensor> offsets)
      : offsets_(std::make_shared<std::vector<Tensor>>(std::move(offsets))),
        next_(std::make_shared<size_t>(0)),
        outputs_(std::make_shared<std::vector<Variable>>()) {
    for (auto& m : modules) {
      VariableTransform prev = m->output_hook();
      saved_.emplace_back(m, prev);
      m->set_output_hook([prev, offsets = offsets_, next = next_, outputs = outputs_](const Variable& y) {
        Variable a = y;
        if (y.requires_grad() && *next < offsets->size()) {
          outputs->push_back(y);
          const Tensor& d = (*offsets)[(*next)++];
          if (d.defined() && d.shape() == y.shape()) a = add(y, Variable(d));
        }
        return prev ? prev(a) : a;
      });
    }
  }
  ~ActivationOffsets() {
    for (auto& [m, hook] : saved_) m->set_output_hook(hook);
  }
  ActivationOffsets(const ActivationOffsets&) = delete;
  ActivationOffsets& operator=(const ActivationOffsets&) = delete;

  // The module outputs (before their offsets) in call order, as ActivationCapture records them.
  const std::vector<Variable>& outputs() const { return *outputs_; }

 private:
  std::shared_ptr<std::vector<Tensor>> offsets_;
  std::shared_ptr<size_t> next_;
  std::shared_ptr<std::vector<Variable>> outputs_;
  std::vector<std::pair<std::shared_ptr<Module>, VariableTransform>> saved_;
};

}  // namespace

GradL1Penalty GradL1Regularizer::fd_step(Module& model, const std::function<Variable()>& forward) const {
  std::vector<Variable> params;
  for (const Variable& p : model.parameters())
    if (p.requires_grad()) params.push_back(p);
  LOWBIT_CHECK(!params.empty(), "grad-l1: the model has no parameter that requires grad");
  ForwardState before(model);

  // Pass 1 at theta: dL/dtheta and dL/da (the activations captured), P's value at theta.
  Variable loss;
  std::vector<Variable> acts;
  KinkTape kinks;  // pass 1's ReLU masks and max-pooling winners, replayed in pass 2
  {
    ActivationCapture capture = this->capture();
    std::optional<KinkTape::Scope> record;
    if (options_.fd_freeze_kinks) record.emplace(kinks, KinkTape::Mode::record);
    loss = forward();
    acts = capture.activations();
  }
  LOWBIT_CHECK(loss.defined() && loss.numel() == 1 && loss.requires_grad(),
               "grad-l1: the forward pass must return a scalar loss with a graph");
  std::vector<Variable> inputs = params;
  const bool with_acts = options_.lambda_a > 0;
  if (with_acts) inputs.insert(inputs.end(), acts.begin(), acts.end());
  // Range scaling's parts (GradL1Scale): the Hessian term (not for range_only) and the ranges' term
  // (not for range_fixed). range_only keeps pass 1's graph for the backward of the ranges.
  const bool ranged = options_.scale != GradL1Scale::none;
  const bool hessian = options_.scale != GradL1Scale::range_only;
  const bool range_grad = options_.scale == GradL1Scale::range || options_.scale == GradL1Scale::range_only;
  const std::vector<Variable> g0 = grad({loss}, inputs, {}, /*retain_graph=*/!hessian, false, /*allow_unused=*/true);
  auto set_grads = [&](const std::vector<Variable>& g) {
    for (size_t i = 0; i < params.size(); ++i) {
      if (!g[i].defined()) continue;
      Variable& p = params[i];
      p.set_grad(p.grad().defined() ? Variable(math::add(p.grad().data(), g[i].data())) : g[i]);
    }
  };

  GradL1Penalty out;
  std::vector<Tensor> weight_dir(params.size());  // e lambda_w r_W s_W for the regularized weights
  std::vector<Tensor> act_dir;                    // e lambda_a r_a s_a
  const double lambda_max = std::max(options_.lambda_w, options_.lambda_a);
  const double e = lambda_max > 0 ? options_.fd_step / lambda_max : 0;
  // Range scaling: r(x_l) at theta, and the coefficient of r(x_l) in P (lambda_l ||g_l||_1) for the
  // ranges' term; param index (weights) or activation index, coefficient.
  std::vector<std::pair<size_t, double>> weight_range_coef, act_range_coef;
  if (options_.lambda_w > 0)
    for (const auto& [name, w] : weights_)
      for (size_t i = 0; i < params.size(); ++i)
        if (params[i].same(w) && g0[i].defined()) {
          const double r = ranged ? range_value(params[i].data()) : 1.0;
          const double l1 = l1_sum(g0[i].data(), hessian ? &weight_dir[i] : nullptr, e * options_.lambda_w * r);
          out.weight_l1 += r * l1;
          if (range_grad) weight_range_coef.emplace_back(i, options_.lambda_w * l1);
          ++out.weights;
        }
  if (with_acts)
    for (size_t k = 0; k < acts.size(); ++k) {
      const Variable& ga = g0[params.size() + k];
      act_dir.emplace_back();
      if (!ga.defined()) continue;
      const double r = ranged ? range_value(acts[k].data()) : 1.0;
      const double l1 = l1_sum(ga.data(), hessian ? &act_dir.back() : nullptr, e * options_.lambda_a * r);
      out.act_l1 += r * l1;
      if (range_grad) act_range_coef.emplace_back(k, options_.lambda_a * l1);
      ++out.activations;
    }
  out.value =
      Variable(Tensor::full({}, options_.lambda_w * out.weight_l1 + options_.lambda_a * out.act_l1, loss.dtype()));
  if (!std::isfinite(loss.item()) || e == 0) {
    set_grads(g0);
    return out;
  }
  if (!hessian) {
    // range_only: dP/dtheta = the gradient of sum_l lambda_l ||g_l||_1 r(x_l) (norms constant), one
    // backward over pass 1's graph; no second pass.
    Variable ranges;
    auto accumulate = [&](const Variable& t) { ranges = ranges.defined() ? add(ranges, t) : t; };
    for (const auto& [i, coef] : weight_range_coef) accumulate(mul(range_of(params[i]), coef));
    for (const auto& [k, coef] : act_range_coef) accumulate(mul(range_of(acts[k]), coef));
    std::vector<Variable> total(g0.begin(), g0.begin() + std::ptrdiff_t(params.size()));
    if (ranges.defined()) {
      const std::vector<Variable> gr = grad({ranges}, params, {}, false, false, /*allow_unused=*/true);
      for (size_t i = 0; i < params.size(); ++i)
        if (gr[i].defined()) total[i] = total[i].defined() ? Variable(math::add(total[i].data(), gr[i].data())) : gr[i];
    }
    set_grads(total);
    return out;
  }

  // Pass 2 at theta + e (lambda_w s_W, lambda_a s_a), from the same buffers and generators.
  ForwardState after(model);
  before.restore();
  std::vector<Tensor> saved(params.size());
  for (size_t i = 0; i < params.size(); ++i)
    if (weight_dir[i].defined()) {
      saved[i] = params[i].data().clone();
      math::add_(params[i].mutable_data(), weight_dir[i]);
    }
  std::vector<Variable> g1;
  {
    ActivationOffsets offsets(activation_modules_, act_dir);
    Variable loss1;
    {
      std::optional<KinkTape::Scope> replay;
      if (options_.fd_freeze_kinks) replay.emplace(kinks, KinkTape::Mode::replay);
      loss1 = forward();
    }
    // Range scaling: + e sum_l lambda_l ||g_l||_1 r(x_l), whose gradient over e is P's through r.
    for (const auto& [i, coef] : weight_range_coef) loss1 = add(loss1, mul(range_of(params[i]), e * coef));
    for (const auto& [k, coef] : act_range_coef) {
      LOWBIT_CHECK(k < offsets.outputs().size(), "grad-l1: the second pass recorded fewer activations than the first");
      loss1 = add(loss1, mul(range_of(offsets.outputs()[k]), e * coef));
    }
    g1 = grad({loss1}, params, {}, false, false, /*allow_unused=*/true);
  }
  for (size_t i = 0; i < params.size(); ++i)
    if (saved[i].defined()) params[i].mutable_data().copy_(saved[i]);
  after.restore();

  // dL/dtheta + dP/dtheta ~ g0 + (g1 - g0) / e (spec §7.2 (b)).
  std::vector<Variable> total(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    if (!g0[i].defined() && !g1[i].defined()) continue;
    const Tensor a = g0[i].defined() ? g0[i].data() : Tensor::zeros(params[i].shape(), params[i].dtype());
    const Tensor b = g1[i].defined() ? g1[i].data() : Tensor::zeros(params[i].shape(), params[i].dtype());
    total[i] = Variable(math::add(a, math::mul(math::sub(b, a), 1.0 / e)));
  }
  set_grads(total);
  return out;
}

GradL1Penalty GradL1Regularizer::measure(Module& model, const std::function<Variable()>& forward) const {
  GradL1Regularizer both = *this;  // both terms taken, whatever lambdas are set
  both.options_.lambda_w = both.options_.lambda_a = 1;
  ForwardState before(model);
  GradL1Penalty p;
  {
    ActivationCapture capture = this->capture();
    const Variable loss = forward();
    LOWBIT_CHECK(loss.defined() && loss.numel() == 1, "grad-l1: measure needs a scalar loss");
    if (std::isfinite(loss.item())) p = both.penalty(loss, capture.activations());
  }
  before.restore();
  p.value = Variable();
  return p;
}

void GradL1Regularizer::set_lambda_a(double lambda_a) {
  LOWBIT_CHECK(lambda_a >= 0 && std::isfinite(lambda_a), "grad-l1: lambda_a must be finite and >= 0, got ", lambda_a);
  options_.lambda_a = lambda_a;
}

}  // namespace lowbit::quant
