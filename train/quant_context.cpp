// The quantization context (quant_context.h): attachment, optimizer groups, the bits that follow
// beta, per-epoch history and checkpoint state. The final rounding and the report are in
// quant_report.cpp.
#include "train/quant_context.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>

#include "core/math.h"
#include "quant/quantizers.h"

namespace lowbit::train {
namespace {

using quant::Grid;
using quant::WeightScale;

const char* grid_name(Grid g) { return g == Grid::dorefa ? "dorefa" : g == Grid::wrpn ? "wrpn" : "fixed"; }
const char* scale_name(WeightScale s) {
  return s == WeightScale::max_abs ? "max" : s == WeightScale::tanh_max ? "tanh" : "none";
}

// What the sinusoid reads, in words.
const char* domain_text(WeightScale s) {
  return s == WeightScale::max_abs ? "w / max|w|" : s == WeightScale::tanh_max ? "tanh(w) / max|tanh w|" : "w";
}

std::optional<Grid> parse_grid(const std::string& g) {
  if (g == "dorefa") return Grid::dorefa;
  if (g == "wrpn") return Grid::wrpn;
  if (g == "fixed") return Grid::fixed_point;
  LOWBIT_CHECK(g == "auto", "--grid '", g, "' is not one of auto, dorefa, wrpn, fixed");
  return std::nullopt;
}

quant::Normalization parse_norm(const std::string& s) {
  if (s == "R0") return quant::Normalization::R0;
  if (s == "R1") return quant::Normalization::R1;
  if (s == "R2") return quant::Normalization::R2;
  throw Error("--waveq-norm '" + s + "' is not one of R0, R1, R2");
}

Reduction parse_reduction(const std::string& s) {
  if (s == "mean") return Reduction::mean;
  if (s == "sum") return Reduction::sum;
  throw Error("--reg-reduction '" + s + "' is not mean or sum");
}

std::vector<double> tensor_values(const Tensor& t) { return t.defined() ? t.to_vector() : std::vector<double>{}; }
Tensor vector_tensor(const std::vector<double>& v) {
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size())}).to(DType::f64);
}

}  // namespace

std::optional<WeightScale> parse_scale_option(const std::string& s) {
  if (s == "auto") return std::nullopt;
  if (s == "none" || s == "max" || s == "tanh") return quant::parse_weight_scale(s);
  throw Error("--weight-scale '" + s + "' is not one of auto, none, max, tanh");
}

QuantContext::QuantContext(Module& model, const QuantSpec& spec) : model_(model), spec_(spec) {
  method_ = &quant::find_method(spec.method);
  const bool quantized = method_->weight != nullptr;
  LOWBIT_CHECK(
      spec.reg == "none" || spec.reg == "sinreq" || spec.reg == "waveq" || spec.reg == "grad-l1" || spec.reg == "msqe",
      "--reg '", spec.reg, "' is not one of none, sinreq, waveq, grad-l1, msqe");
  LOWBIT_CHECK(spec.reg != "msqe" || spec.method == "msqe",
               "--reg msqe acts on the learned cell sizes of --quant msqe, not --quant ", spec.method);
  LOWBIT_CHECK(
      spec.bits_follow_beta == "always" || spec.bits_follow_beta == "phase3" || spec.bits_follow_beta == "never",
      "--bits-follow-beta '", spec.bits_follow_beta, "' is not one of always, phase3, never");
  LOWBIT_CHECK(spec.learned_levels == "period" || spec.learned_levels == "integer" || spec.learned_levels == "auto",
               "--learned-levels '", spec.learned_levels, "' is not one of auto, period, integer");
  LOWBIT_CHECK(spec.gbits == 32 || (spec.gbits >= 1 && spec.gbits <= 16), "--gbits ", spec.gbits,
               ": gradient bits must be in 1..16 (32: off)");
  LOWBIT_CHECK(spec.gbits == 32 || quantized, "--gbits ", spec.gbits,
               " quantizes the gradients of quantized layers: it needs a --quant method");
  const bool with_reg = spec.reg == "sinreq" || spec.reg == "waveq";  // the sinusoidal regularizers
  const std::optional<Grid> grid_opt = parse_grid(spec.grid);
  const std::optional<WeightScale> scale_opt = parse_scale_option(spec.weight_scale);

  // The quantizers. wrpn reads its scale from the config (none or max); the others ignore it.
  cfg_.method = spec.method;
  cfg_.weight_bits = spec.wbits;
  cfg_.activation_bits = spec.abits;
  cfg_.quantize_first_last = spec.quantize_first_last;
  cfg_.weight_overrides = spec.wbits_overrides;
  cfg_.activation_overrides = spec.abits_overrides;
  cfg_.pact_alpha_init = spec.pact_alpha_init;
  if (quantized) {
    if (scale_opt && *scale_opt != WeightScale::none) {
      LOWBIT_CHECK(with_reg || spec.method == "wrpn", "--weight-scale ", spec.weight_scale,
                   ": without --reg only the wrpn quantizer takes a weight scale");
      LOWBIT_CHECK(spec.method != "wrpn" || *scale_opt == WeightScale::max_abs,
                   "--weight-scale tanh: wrpn quantizes w or w / max|w| (none or max), not tanh(w) / max|tanh w|");
    }
    // wrpn's grid on each layer's range by default: on raw Kaiming-scale weights its [-1, 1] grid
    // rounds nearly every weight to 0 at <= 4 bits (`none` is the paper's raw form).
    if (spec.method == "wrpn") cfg_.weight_scale = scale_opt.value_or(WeightScale::max_abs);
  }

  // The sinusoid's grid and domain: the quantizer's own levels, or the user's choice in float training.
  if (with_reg && quantized) {
    const auto match = method_->sinusoid ? method_->sinusoid(cfg_) : std::nullopt;
    LOWBIT_CHECK(match.has_value(), "--reg ", spec.reg, " with --quant ", spec.method,
                 ": no sinusoid has the levels of this quantizer (",
                 spec.method == "lsq" || spec.method == "u3" ? "its step is learned" : "its levels are fixed",
                 "); the regularizers work with dorefa, wrpn and pact, or with --quant none");
    grid_ = grid_opt.value_or(match->grid);
    scale_ = scale_opt.value_or(match->scale);
    LOWBIT_CHECK(spec.allow_grid_mismatch || (grid_ == match->grid && scale_ == match->scale), "--grid ", spec.grid,
                 " --weight-scale ", spec.weight_scale, " with --quant ", spec.method,
                 ": the sinusoid's zeros would not be the quantizer's levels (", spec.method, " rounds on the ",
                 grid_name(match->grid), " grid of ", domain_text(match->scale),
                 "); leave --grid and --weight-scale at auto, or pass --allow-grid-mismatch to keep them");
  } else if (with_reg) {
    grid_ = grid_opt.value_or(Grid::wrpn);
    // Float training: the grid spans the layer's weights (w / max|w|) unless told otherwise; on raw
    // Kaiming-scale weights the [-1, 1] grids round nearly every weight to 0.
    scale_ = scale_opt.value_or(grid_ == Grid::dorefa ? WeightScale::tanh_max
                                : grid_ == Grid::wrpn ? WeightScale::max_abs
                                                      : WeightScale::none);
    LOWBIT_CHECK(quant::quantizer_with_levels(grid_, scale_).has_value(), "--grid ", grid_name(grid_),
                 " --weight-scale ", scale_name(scale_),
                 ": no quantizer rounds on these levels, so the weights could not be rounded at the end (dorefa "
                 "grid: tanh; wrpn grid: none or max)");
  } else {
    LOWBIT_CHECK(!grid_opt, "--grid ", spec.grid, " is the regularizer's grid: it needs --reg sinreq or waveq");
  }

  q_ = quant::attach_quantizers(model, cfg_);
  if (spec.weight_budget_kb > 0 || spec.act_budget_kb > 0)
    budget_ = std::make_shared<quant::MemoryBudget>(
        q_, quant::BudgetOptions{.weight_kb = spec.weight_budget_kb,
                                 .act_kb = spec.act_budget_kb,
                                 .act = quant::parse_activation_budget(spec.act_budget),
                                 .lambda_w = spec.budget_lambda,
                                 .lambda_a = spec.act_budget_lambda.value_or(spec.budget_lambda)});
  for (const auto& n : q_.parameter_names) owned_.push_back(n);

  // Regularized layers: the quantized ones, or in float training those with bits < 32 (all but the
  // first and last unless quantize_first_last, --wbits and its overrides).
  for (const auto& l : q_.layers)
    if (with_reg && *l.weight_bits < 32) {
      LOWBIT_CHECK(!with_reg || grid_ != Grid::wrpn || *l.weight_bits >= 2, "--wbits: ", l.name, " at ", *l.weight_bits,
                   " bit: the wrpn grid needs 2 bits or more");
      reg_layers_.push_back(&l);
      reg_bits_.push_back(*l.weight_bits);
    }
  if (with_reg)
    LOWBIT_CHECK(!reg_layers_.empty(), "--reg ", spec.reg,
                 " has no layer to act on (set --wbits below 32, or --quantize-first-last)");

  std::vector<Variable> weights;
  for (auto* l : reg_layers_) weights.push_back(l->weight());
  const auto reduction = parse_reduction(spec.reg_reduction);
  if (spec.reg == "sinreq") {
    quant::SinReQSchedule s;
    s.lambda = spec.lambda_w;
    s.warmup = spec.reg_warmup;
    sinreq_ = std::make_shared<quant::SinReQRegularizer>(weights, reg_bits_,
                                                         quant::SinReQOptions{grid_, reduction, scale_}, s);
  } else if (spec.reg == "waveq") {
    learn_beta_ = !spec.fix_beta;
    LOWBIT_CHECK(spec.beta_init == 0 || (spec.beta_init >= 1 && spec.beta_init <= 8), "--beta-init ", spec.beta_init,
                 ": beta is clamped to [1, 8]");
    std::vector<Variable> betas;
    for (size_t i = 0; i < reg_layers_.size(); ++i) {
      // beta counts magnitude bits (k = beta + 1); it starts at the layer's k - 1.
      const double b0 = learn_beta_ && spec.beta_init > 0 ? spec.beta_init : std::min(double(reg_bits_[i] - 1), 8.0);
      LOWBIT_CHECK(b0 >= 1, "--reg waveq: ", reg_layers_[i]->name, " at ", reg_bits_[i],
                   " bit has no magnitude bit (beta = k - 1 >= 1 needs k >= 2)");
      Module& m = *reg_layers_[i]->module;
      if (!m.has_param("beta")) m.register_parameter("beta", Tensor::full({}, b0), learn_beta_);
      m.param("beta").mutable_data().fill_(b0);
      betas.push_back(m.param("beta"));
      owned_.push_back(join_name(reg_layers_[i]->name, "beta"));
    }
    quant::WaveQOptions wo;
    wo.grid = grid_;
    wo.norm = parse_norm(spec.waveq_norm);
    wo.reduction = reduction;
    wo.scale = scale_;
    quant::WaveQSchedule ws;
    ws.lambda_w = spec.lambda_w;
    ws.lambda_beta = learn_beta_ ? spec.lambda_beta : 0.0;
    ws.rise = spec.reg_warmup;
    ws.fall = spec.beta_freeze;
    ws.snap_beta = spec.snap_beta;
    waveq_ = std::make_shared<quant::WaveQRegularizer>(weights, betas, wo, ws);
    follow_ = learn_beta_ && quantized && method_->bits_follow_beta && spec.bits_follow_beta != "never";
  }

  // Gradient-l1 regularization (spec §7): every Conv2d/Linear weight and activation module, on top of
  // whatever quantizers are attached (their activation hooks keep running after the capture).
  if (spec.reg == "grad-l1") {
    LOWBIT_CHECK(spec.lambda >= 0, "--lambda ", spec.lambda, ": the gradient-l1 lambda must be >= 0");
    LOWBIT_CHECK(spec.reg_last_epochs >= 0, "--reg-last-epochs ", spec.reg_last_epochs, " must be >= 0");
    LOWBIT_CHECK(spec.grad_l1_mode == "exact" || spec.grad_l1_mode == "fd", "--grad-l1-mode '", spec.grad_l1_mode,
                 "' is not exact or fd");
    LOWBIT_CHECK(spec.grad_l1_fd_step > 0, "--grad-l1-fd-step ", spec.grad_l1_fd_step, " must be > 0");
    const std::map<std::string, quant::GradL1Scale> scales = {{"none", quant::GradL1Scale::none},
                                                              {"range", quant::GradL1Scale::range},
                                                              {"range-fixed", quant::GradL1Scale::range_fixed},
                                                              {"range-only", quant::GradL1Scale::range_only}};
    LOWBIT_CHECK(scales.count(spec.grad_l1_scale), "--grad-l1-scale '", spec.grad_l1_scale,
                 "' is not none, range, range-fixed or range-only");
    LOWBIT_CHECK(!spec.grad_l1_balance || spec.lambda_a < 0,
                 "--grad-l1-balance sets the activation lambda itself: drop --lambda-a");
    LOWBIT_CHECK(!spec.grad_l1_balance || spec.lambda > 0,
                 "--grad-l1-balance sets the activation lambda from --lambda, which must be > 0");
    if (spec.grad_l1_balance) {  // -1: not set yet; a checkpoint's value replaces it on resume
      bool has = false;
      for (const auto& [name, t] : model.named_buffers(false)) has = has || name == kGradL1BalanceBuffer;
      if (!has) model.register_buffer(kGradL1BalanceBuffer, Tensor::full({}, -1.0, DType::f64));
    }
    grad_l1_ = std::make_shared<quant::GradL1Regularizer>(
        model,
        quant::GradL1Options{.lambda_w = spec.lambda,
                             .lambda_a = spec.grad_l1_balance ? 0.0
                                         : spec.lambda_a >= 0 ? spec.lambda_a
                                                              : spec.lambda,
                             .mode = spec.grad_l1_mode == "fd" ? quant::GradL1Mode::fd : quant::GradL1Mode::exact,
                             .scale = scales.at(spec.grad_l1_scale),
                             .fd_step = spec.grad_l1_fd_step});
    grad_l1_on_ = spec.reg_last_epochs <= 0;
  } else {
    LOWBIT_CHECK(spec.reg_last_epochs <= 0, "--reg-last-epochs is the window of --reg grad-l1");
    LOWBIT_CHECK(!spec.grad_l1_balance, "--grad-l1-balance is an option of --reg grad-l1");
  }

  // MSQE with a learnable coefficient (Choi et al. §3.2): every quantized weight layer with its cell
  // size; a = log alpha is a parameter of the model itself ("msqe_log_alpha"), so checkpoints keep it.
  if (spec.reg == "msqe") {
    LOWBIT_CHECK(spec.msqe_lambda > 0, "--msqe-lambda ", spec.msqe_lambda, " must be > 0");
    std::vector<Variable> ws, deltas;
    std::vector<std::shared_ptr<int>> cells;
    for (const auto& l : q_.layers)
      if (*l.weight_bits < 32 && l.module->has_param("w_delta")) {
        ws.push_back(l.weight());
        deltas.push_back(l.module->param("w_delta"));
        cells.push_back(l.weight_bits);
      }
    LOWBIT_CHECK(!ws.empty(),
                 "--reg msqe has no quantized weight layer to act on (set --wbits below 32, or "
                 "--quantize-first-last)");
    if (!model.has_param("msqe_log_alpha"))
      model.register_parameter("msqe_log_alpha", Tensor::full({}, 0.0, ws[0].dtype()));
    owned_.push_back("msqe_log_alpha");
    msqe_ =
        std::make_shared<quant::MsqeRegularizer>(ws, deltas, cells, model.param("msqe_log_alpha"), spec.msqe_lambda);
  }

  // Partial-L2 pruning (Choi et al. §3.3): the quantized weight layers (bits < 32) at their target
  // sparsity; b = log beta is a parameter of the model ("prune_log_beta").
  if (spec.prune_sparsity > 0 || !spec.prune_overrides.empty()) {
    LOWBIT_CHECK(spec.prune_sparsity >= 0 && spec.prune_sparsity < 1, "--prune-sparsity ", spec.prune_sparsity,
                 " must be in [0, 1)");
    LOWBIT_CHECK(spec.prune_at > 0 && spec.prune_at <= 1, "--prune-at ", spec.prune_at, " must be in (0, 1]");
    std::vector<std::pair<std::string, double>> overrides;
    std::stringstream list(spec.prune_overrides);
    for (std::string item; std::getline(list, item, ',');) {
      const size_t eq = item.find('=');
      LOWBIT_CHECK(eq != std::string::npos && eq > 0, "--prune-overrides '", item, "' is not PATTERN=SPARSITY");
      char* end = nullptr;
      const double r = std::strtod(item.c_str() + eq + 1, &end);
      LOWBIT_CHECK(end && *end == 0 && r >= 0 && r < 1, "--prune-overrides '", item,
                   "': the sparsity must be in [0, 1)");
      overrides.emplace_back(item.substr(0, eq), r);
    }
    std::vector<bool> used(overrides.size(), false);
    std::vector<Variable> ws;
    std::vector<double> rs;
    std::string names;
    for (const auto& l : q_.layers) {
      if (*l.weight_bits >= 32) continue;
      names += (names.empty() ? "" : ", ") + l.name;
      double r = spec.prune_sparsity;
      for (size_t i = 0; i < overrides.size(); ++i)
        if (quant::name_matches(overrides[i].first, l.name)) r = overrides[i].second, used[i] = true;
      if (r > 0) ws.push_back(l.weight()), rs.push_back(r);
    }
    for (size_t i = 0; i < overrides.size(); ++i)
      LOWBIT_CHECK(used[i], "--prune-overrides: '", overrides[i].first, "' matches no quantized layer (", names, ")");
    LOWBIT_CHECK(!ws.empty(), "--prune-sparsity: no quantized layer to prune (", names, ")");
    if (!model.has_param("prune_log_beta"))
      model.register_parameter("prune_log_beta", Tensor::full({}, 0.0, ws[0].dtype()));
    owned_.push_back("prune_log_beta");
    prune_ = std::make_shared<quant::PartialL2Regularizer>(ws, rs, model.param("prune_log_beta"), spec.prune_lambda);
  }

  // DoReFa gradient quantization (§8.2) on the outputs of the quantized layers, with its own noise.
  if (spec.gbits < 32) {
    grad_noise_ = std::make_shared<Generator>(spec.seed);
    for (const auto& l : q_.layers)
      if (*l.weight_bits < 32) {
        const int k = spec.gbits;
        auto gen = grad_noise_;
        l.module->set_output_hook([k, gen](const Variable& y) { return quant::dorefa_gradient(y, k, gen); });
      }
  }

  // Histograms "before" for up to three regularized layers.
  for (size_t i = 0; i < reg_layers_.size() && hist_layers_.size() < 3; ++i) hist_layers_.push_back(i);
  for (size_t i : hist_layers_) hist_before_.push_back(reg_layers_[i]->weight().data().to(DType::f64).contiguous());
  beta_history_.assign(reg_layers_.size(), {});
}

std::vector<optim::ParamGroup> QuantContext::param_groups(const optim::ParamGroup& base) const {
  std::vector<optim::ParamGroup> groups;
  optim::ParamGroup w = base;
  w.name = base.name.empty() ? "weights" : base.name;
  w.params.clear();
  w.param_names.clear();
  for (auto& [name, p] : model_.named_parameters()) {
    if (owns_parameter(name)) continue;
    w.params.push_back(p);
    w.param_names.push_back(name);
  }
  if (sinreq_) w.regularizers.push_back(sinreq_);
  if (waveq_) w.regularizers.push_back(waveq_);
  if (msqe_) w.regularizers.push_back(msqe_);
  if (prune_) w.regularizers.push_back(prune_);
  groups.push_back(w);

  auto group = [&](const std::string& name, double lr, double decay) {
    optim::ParamGroup g;
    g.name = name;
    g.lr = lr;
    g.momentum = base.momentum;
    g.nesterov = base.nesterov;
    g.beta1 = base.beta1, g.beta2 = base.beta2, g.eps = base.eps;
    g.weight_decay = decay;
    return g;
  };
  if (waveq_ && learn_beta_) {
    optim::ParamGroup g = group("bitwidths", spec_.beta_lr > 0 ? spec_.beta_lr : base.lr, 0);
    for (size_t i = 0; i < reg_layers_.size(); ++i) {
      g.params.push_back(waveq_->betas()[i]);
      g.param_names.push_back(join_name(reg_layers_[i]->name, "beta"));
    }
    groups.push_back(std::move(g));
  }
  if (msqe_ || prune_) {  // a = log alpha (Choi et al. §3.2), b = log beta (§3.3), no weight decay
    optim::ParamGroup g = group("coefficient", spec_.msqe_lr >= 0 ? spec_.msqe_lr : base.lr, 0);
    if (msqe_) g.params.push_back(msqe_->log_alpha()), g.param_names.push_back("msqe_log_alpha");
    if (prune_) g.params.push_back(prune_->log_beta()), g.param_names.push_back("prune_log_beta");
    groups.push_back(std::move(g));
  }
  // msqe's cell sizes get the unscaled gradient sum over every weight (or activation) of the layer
  // (Choi et al. §3.1: no LSQ gradient scaling), so their default lr is the weights' / 100.
  const double quantizer_lr = spec_.quantizer_lr >= 0  ? spec_.quantizer_lr
                              : spec_.method == "msqe" ? base.lr / 100
                                                       : base.lr;
  // msqe's activation cell sizes: ∂/∂Δ = Σ (∂E/∂q) r sums over every element of the batch's feature
  // map with codes r up to 2^m - 1. At the default lr (the weights' cell sizes'), ResNet-20 w3/a8
  // fine-tuned from float: the block outputs' Δ swung 3x within 40 steps, one jumped to 1.76 (an
  // 8-bit range of 448, the block's output rounded to 0) and the run fell to 10 %; at 1e-6 it trains
  // (docs/quantization.md). A lower default stalls training from scratch, where Δ must follow the
  // activations' growth (tests/test_msqe.cpp's 4-bit LeNet falls to chance at lr / 15), so the
  // default stays and --act-quantizer-lr sets it. Without it they stay in the "quantizer" group, so
  // the optimizer state of checkpoints written before the option existed still loads.
  const bool own_act_group = spec_.method == "msqe" && spec_.act_quantizer_lr >= 0;
  optim::ParamGroup steps = group("quantizer", quantizer_lr, 0);
  optim::ParamGroup act_steps = group("act_quantizer", spec_.act_quantizer_lr, 0);
  optim::ParamGroup clip = group("clip", base.lr, spec_.pact_decay >= 0 ? spec_.pact_decay : base.weight_decay);
  const auto ends_with = [](const std::string& s, const std::string& tail) {
    return s.size() > tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  for (const auto& full : q_.parameter_names) {
    Variable p;
    for (auto& [name, v] : model_.named_parameters())
      if (name == full) p = v;
    LOWBIT_CHECK(p.defined(), "quantization: parameter '", full, "' is not in the model");
    optim::ParamGroup& g = ends_with(full, ".alpha")                      ? clip
                           : own_act_group && ends_with(full, ".a_delta") ? act_steps
                                                                          : steps;
    g.params.push_back(p);
    g.param_names.push_back(full);
  }
  if (budget_) steps.regularizers.push_back(budget_);
  if (!steps.params.empty()) groups.push_back(std::move(steps));
  if (!act_steps.params.empty()) groups.push_back(std::move(act_steps));
  if (!clip.params.empty()) groups.push_back(std::move(clip));
  return groups;
}

bool QuantContext::owns_parameter(const std::string& name) const {
  return std::find(owned_.begin(), owned_.end(), name) != owned_.end();
}

bool QuantContext::quantizes() const { return method_->weight != nullptr || method_->activation != nullptr; }

bool QuantContext::grad_l1_balance_pending() const {
  return grad_l1_ && spec_.grad_l1_balance && model_.buffer(kGradL1BalanceBuffer).item() < 0;
}

double QuantContext::balance_grad_l1(const std::function<Variable()>& forward) {
  LOWBIT_CHECK(grad_l1_balance_pending(), "balance_grad_l1: no gradient-l1 lambda to balance");
  const quant::GradL1Penalty p = grad_l1_->measure(model_, forward);
  if (p.weights == 0 && p.activations == 0) return -1;  // a non-finite loss: nothing measured, the next batch
  const double lambda_a = spec_.lambda * p.weight_l1 / p.act_l1;
  LOWBIT_CHECK(std::isfinite(lambda_a) && p.act_l1 > 0, "--grad-l1-balance: the first regularized batch gives ",
               "weight sums ", p.weight_l1, " and activation sums ", p.act_l1, ": no finite lambda_a balances them");
  Tensor& kept = model_.buffer(kGradL1BalanceBuffer);
  kept.fill_(lambda_a);
  grad_l1_->set_lambda_a(kept.item());  // as the checkpoint will hold it (the buffer's dtype)
  return kept.item();
}

void QuantContext::begin_step(double t, double total) {
  t_ = t, total_ = total;
  // Gradient-l1 in the last reg_last_epochs epochs (spec §7.2: the last ~15 epochs of training).
  if (grad_l1_) grad_l1_on_ = spec_.reg_last_epochs <= 0 || t >= total - spec_.reg_last_epochs;
  // --grad-l1-balance: the lambda_a a checkpoint holds (resume), once set.
  if (grad_l1_ && spec_.grad_l1_balance) {
    const double lambda_a = model_.buffer(kGradL1BalanceBuffer).item();
    if (lambda_a >= 0 && lambda_a != grad_l1_->options().lambda_a) grad_l1_->set_lambda_a(lambda_a);
  }
  if (prune_ && !pruned_ && t >= spec_.prune_at * total) prune_now();
  if (!follow_) return;
  if (spec_.bits_follow_beta == "phase3" && t < spec_.beta_freeze * total) return;
  for (size_t i = 0; i < reg_layers_.size(); ++i) *reg_layers_[i]->weight_bits = final_bits(i);
}

void QuantContext::use_final_bits() {
  if (!follow_) return;
  for (size_t i = 0; i < reg_layers_.size(); ++i) *reg_layers_[i]->weight_bits = final_bits(i);
}

void QuantContext::after_backward() {
  if (!budget_) return;
  // Each learned pair's gradients (U3's d and q_max, P3's q_min and q_max) clipped to [-p0, p0],
  // p0 the first of the pair (the step, or the smallest magnitude).
  auto clip = [](Module& m, const std::vector<std::string>& names) {
    // only the [step or q_min, q_max] pairs (U3, P3): not a learned bitwidth (U1, U2, P1, P2)
    if (names.size() != 2 || !m.has_param(names[0]) || names[0].ends_with("_b")) return;
    const double d = std::abs(m.param(names[0]).item());
    for (const auto& n : names) {
      Variable& p = m.param(n);
      const Variable g = p.grad();
      if (g.defined()) p.set_grad(Variable(math::clamp(g.data(), -d, d)));
    }
  };
  for (const auto& l : q_.layers) clip(*l.module, method_->weight_params);
  for (const auto& a : q_.activations) clip(*a.module, method_->activation_params);
}

std::vector<LearnedQuantizerRow> QuantContext::learned_quantizers() const {
  std::vector<LearnedQuantizerRow> rows;
  auto row = [&](const std::string& name, Module& m, bool weight, const std::vector<std::string>& names, int bits,
                 int64_t count) {
    LearnedQuantizerRow r;
    r.name = name, r.weight = weight, r.count = count;
    for (const auto& n : names)
      if (m.has_param(n)) r.params.emplace_back(n, m.param(n).item());
    if (r.params.empty()) return;
    r.bits = method_->bits_variable ? int(std::lround(method_->bits_variable(m, weight).item())) : bits;
    r.kb = double(r.bits) * double(r.count) / 8192.0;
    rows.push_back(std::move(r));
  };
  for (const auto& l : q_.layers) {
    if (*l.weight_bits >= 32) continue;
    const int64_t count = l.numel() + (l.module->has_param("bias") ? l.module->param("bias").numel() : 0);
    row(l.name, *l.module, true, method_->weight_params, *l.weight_bits, count);
  }
  for (const auto& a : q_.activations) row(a.name, *a.module, false, method_->activation_params, a.bits, *a.features);
  return rows;
}

bool QuantContext::best_within_budget() const {
  if (!budget_) return false;
  const quant::BudgetOptions& b = budget_->options();
  auto curve = [&](const char* k) {
    auto it = curves_.find(k);
    return it == curves_.end() ? std::vector<double>{} : it->second;
  };
  const std::vector<double> acc = curve("test_acc"), w = curve("weight_kb"), a = curve("act_kb");
  const size_t n = acc.size();
  if (n == 0 || w.size() != n || a.size() != n) return false;
  auto met = [&](size_t i) {
    return std::isfinite(acc[i]) && (b.weight_kb <= 0 || w[i] <= b.weight_kb) && (b.act_kb <= 0 || a[i] <= b.act_kb);
  };
  if (!met(n - 1)) return false;
  for (size_t i = 0; i + 1 < n; ++i)
    if (met(i) && acc[i] >= acc[n - 1]) return false;
  return true;
}

std::optional<quant::MemorySizes> QuantContext::budget_sizes() const {
  if (!budget_) return std::nullopt;
  return budget_->sizes();
}

void QuantContext::after_step() {
  if (waveq_ && learn_beta_) waveq_->after_step();
  q_.after_step();
  if (msqe_) msqe_->project_coefficient();
  if (prune_) prune_->project_coefficient();
  if (pruned_)  // pruned weights stay zero while training (and quantization) continues (§3.3)
    for (size_t l = 0; l < prune_masks_.size(); ++l) {
      Variable w = prune_->weights()[l];
      w.mutable_data().copy_(math::mul(w.data(), prune_masks_[l]));
    }
}

void QuantContext::prune_now() {
  // The weights below each layer's threshold zeroed; a weight that is already zero stays pruned, so
  // a resumed run (whose weights were pruned before) gets the same masks.
  prune_masks_.clear();
  for (size_t l = 0; l < prune_->weights().size(); ++l)
    prune_masks_.push_back(quant::prune_mask(prune_->weights()[l].data(), prune_->sparsities()[l]));
  pruned_ = true;
  prune_->stop();
  for (size_t l = 0; l < prune_masks_.size(); ++l) {
    Variable w = prune_->weights()[l];
    w.mutable_data().copy_(math::mul(w.data(), prune_masks_[l]));
  }
}

double QuantContext::sparsity() const {
  if (!prune_) return 0;
  double zeros = 0, n = 0;
  for (const Variable& w : prune_->weights()) {
    zeros += math::sum(math::eq(w.data(), Tensor::full({}, 0.0, w.dtype()))).item();
    n += double(w.numel());
  }
  return n > 0 ? zeros / n : 0;
}

void QuantContext::end_epoch(int64_t epoch, double train_loss, double train_acc, double test_loss, double test_acc) {
  curves_["epoch"].push_back(double(epoch));
  curves_["train_loss"].push_back(train_loss);
  curves_["train_acc"].push_back(train_acc);
  curves_["test_loss"].push_back(test_loss);
  curves_["test_acc"].push_back(test_acc);
  if (budget_) {
    const quant::MemorySizes m = budget_->sizes();
    curves_["weight_kb"].push_back(m.weight_kb);
    curves_["act_kb"].push_back(m.act_kb);
  }
  if (prune_ && !pruned_ && double(epoch) >= spec_.prune_at * total_ - 1e-9) prune_now();  // at the end
  if (prune_) {
    curves_["prune_beta"].push_back(prune_->beta());
    curves_["sparsity"].push_back(sparsity());
  }
  if (msqe_) {
    curves_["msqe_alpha"].push_back(msqe_->alpha());
    curves_["msqe_r"].push_back(msqe_->penalty());
  }
  beta_history_.resize(reg_layers_.size());
  for (size_t i = 0; i < reg_layers_.size(); ++i) beta_history_[i].push_back(row(i).beta);
}

int QuantContext::final_bits(size_t i) const {
  if (waveq_) {
    const int k = quant::learned_weight_bits(waveq_->betas()[i].item());
    return std::clamp(k, method_->weight_bits.min, method_->weight_bits.max);
  }
  return reg_bits_[i];
}

quant::SinusoidGrid QuantContext::sinusoid(size_t i) const {
  if (waveq_) return quant::waveq_grid(grid_, waveq_->betas()[i].item());
  return quant::sinreq_grid(grid_, std::max(reg_bits_[i], grid_ == Grid::wrpn ? 2 : 1));
}

LayerRow QuantContext::row(size_t i) const {
  LayerRow r;
  r.name = reg_layers_[i]->name;
  r.beta = waveq_ ? waveq_->betas()[i].item() : double(reg_bits_[i] - 1);
  r.bits = final_bits(i);
  r.trained_bits = method_->weight ? *reg_layers_[i]->weight_bits : 32;
  r.stats = quant::sinusoid_stats(quant::to_sinusoid_domain(reg_layers_[i]->weight().data(), scale_), sinusoid(i));
  return r;
}

std::vector<LayerRow> QuantContext::layer_rows() const {
  std::vector<LayerRow> rows;
  for (size_t i = 0; i < reg_layers_.size(); ++i) rows.push_back(row(i));
  return rows;
}

std::string QuantContext::epoch_json() const {
  std::ostringstream js;
  js.precision(6);
  js << ", \"layers\": [";
  const auto rows = layer_rows();
  for (size_t i = 0; i < rows.size(); ++i) {
    const LayerRow& r = rows[i];
    js << (i ? ", " : "") << "{\"name\": \"" << r.name << "\", \"beta\": " << r.beta << ", \"bits\": " << r.bits
       << ", \"trained_bits\": " << r.trained_bits << ", \"mean_distance\": " << r.stats.mean_distance
       << ", \"share_near\": " << r.stats.share_near << "}";
  }
  js << "]";
  if (waveq_) js << ", \"lambda_w\": " << waveq_->lambdas().w << ", \"lambda_beta\": " << waveq_->lambdas().beta;
  if (sinreq_) js << ", \"lambda\": " << sinreq_->lambda();
  if (msqe_)
    js << ", \"msqe_alpha\": " << msqe_->alpha() << ", \"msqe_log_alpha\": " << msqe_->log_alpha().item()
       << ", \"msqe_r\": " << msqe_->penalty() << ", \"msqe_lambda\": " << msqe_->lambda();
  if (prune_)
    js << ", \"prune_beta\": " << prune_->beta() << ", \"prune_p\": " << prune_->penalty()
       << ", \"sparsity\": " << sparsity() << ", \"pruned\": " << (pruned_ ? "true" : "false");
  if (budget_) {
    const quant::MemorySizes m = budget_->sizes();
    js << ", \"weight_kb\": " << m.weight_kb << ", \"act_kb\": " << m.act_kb;
  }
  if (grad_l1_ && spec_.grad_l1_balance && !grad_l1_balance_pending())
    js << ", \"grad_l1_lambda_a\": " << grad_l1_->options().lambda_a;
  const auto learned = learned_quantizers();
  if (!learned.empty()) {
    js << ", \"quantizers\": [";
    for (size_t i = 0; i < learned.size(); ++i) {
      const LearnedQuantizerRow& r = learned[i];
      js << (i ? ", " : "") << "{\"name\": \"" << r.name << "\", \"side\": \"" << (r.weight ? "weight" : "activation")
         << "\"";
      for (const auto& [n, v] : r.params) js << ", \"" << n << "\": " << v;
      js << ", \"bits\": " << r.bits << ", \"count\": " << r.count << ", \"kb\": " << r.kb << "}";
    }
    js << "]";
  }
  return js.str();
}

std::string QuantContext::describe() const {
  std::ostringstream s;
  s << method_->name;
  if (method_->weight) {
    const int w = spec_.wbits ? spec_.wbits : method_->weight_bits.default_bits;
    const int a = spec_.abits ? spec_.abits : method_->activation_bits.default_bits;
    s << " w" << (w >= 32 ? std::string("32") : std::to_string(w)) << "/a" << a;
    if (spec_.gbits < 32) s << "/g" << spec_.gbits;
  }
  if (budget_) {
    s << " + memory budget";
    if (spec_.weight_budget_kb > 0) s << " weights <= " << spec_.weight_budget_kb << " kB";
    if (spec_.act_budget_kb > 0) s << " activations (" << spec_.act_budget << ") <= " << spec_.act_budget_kb << " kB";
  }
  if (grad_l1_) {
    const quant::GradL1Options& g = grad_l1_->options();
    s << " + grad-l1 (lambda " << g.lambda_w;
    if (spec_.grad_l1_balance)
      s << ", activations balanced at the first step";
    else if (g.lambda_a != g.lambda_w)
      s << ", activations " << g.lambda_a;
    if (spec_.reg_last_epochs > 0) s << ", last " << spec_.reg_last_epochs << " epochs";
    if (g.scale == quant::GradL1Scale::range) s << ", range-scaled";
    if (g.scale == quant::GradL1Scale::range_fixed) s << ", range-scaled, ranges held constant";
    if (g.scale == quant::GradL1Scale::range_only) s << ", range-scaled, norms held constant";
    if (g.mode == quant::GradL1Mode::fd) s << ", finite differences, step " << g.fd_step;
    s << ")";
  }
  if (msqe_) s << " + msqe (learnable coefficient, lambda " << msqe_->lambda() << ")";
  if (prune_)
    s << " + partial-L2 pruning (sparsity " << spec_.prune_sparsity
      << (spec_.prune_overrides.empty() ? "" : ", " + spec_.prune_overrides) << ", pruned at " << spec_.prune_at
      << " of training)";
  if (sinreq_ || waveq_) {
    s << " + " << spec_.reg << (waveq_ && !learn_beta_ ? " (beta fixed)" : "") << " (" << grid_name(grid_) << " grid";
    if (scale_ == WeightScale::max_abs) s << ", on w / max|w|";
    if (scale_ == WeightScale::tanh_max) s << ", on tanh(w) / max|tanh w|";
    s << ")";
  }
  return s.str();
}

std::string QuantContext::epoch_text() const {
  char line[160];
  std::string out;
  if (prune_) {
    std::snprintf(line, sizeof line, "  partial-L2: beta %.4g  P %.4g  sparsity %.4f%s\n", prune_->beta(),
                  prune_->penalty(), sparsity(), pruned_ ? " (pruned, masks held)" : "");
    out += line;
  }
  if (!msqe_) return out;
  std::snprintf(line, sizeof line, "  msqe: alpha %.4g (a = log alpha %.4f)  R %.4g  alpha R %.4g  lambda %.4g\n",
                msqe_->alpha(), msqe_->log_alpha().item(), msqe_->penalty(), msqe_->alpha() * msqe_->penalty(),
                msqe_->lambda());
  return out + line;
}

std::string QuantContext::config_table() const {
  std::ostringstream s;
  char line[160];
  s << "quantization: " << describe() << "\n";
  std::snprintf(line, sizeof line, "  %-24s %8s %8s\n", "layer", "bits", "weights");
  s << line;
  for (size_t i = 0; i < q_.layers.size(); ++i) {
    const auto& l = q_.layers[i];
    size_t r = 0;
    const bool reg = reg_layer_of(i, &r) != nullptr;
    const int b = *l.weight_bits;
    std::string bits = b >= 32 ? "fp32" : std::to_string(b);
    if (!method_->weight && b < 32) bits = "fp32";  // float training: the target is the regularizer's
    std::snprintf(line, sizeof line, "  %-24s %8s %8lld%s\n", l.name.c_str(), bits.c_str(), (long long)l.numel(),
                  reg ? (std::string("  regularized at ") + std::to_string(reg_bits_[r]) + " bits" +
                         (learn_beta_ ? " (start; learned)" : ""))
                            .c_str()
                      : "");
    s << line;
  }
  if (!q_.activations.empty())
    s << "  activations: " << q_.activations.size() << " quantized at " << q_.activations[0].bits << " bits\n";
  if (follow_)
    s << "  quantizer bits follow WaveQ's learned beta (k = ceil(beta) + 1) "
      << (spec_.bits_follow_beta == "phase3" ? "from --beta-freeze on" : "at every step") << "\n";
  return s.str();
}

size_t QuantContext::index_of(const quant::QuantizedLayer* l) const {
  return static_cast<size_t>(l - q_.layers.data());
}

const quant::QuantizedLayer* QuantContext::reg_layer_of(size_t layer_index, size_t* reg_index) const {
  for (size_t r = 0; r < reg_layers_.size(); ++r)
    if (index_of(reg_layers_[r]) == layer_index) {
      if (reg_index) *reg_index = r;
      return reg_layers_[r];
    }
  return nullptr;
}

void QuantContext::set_weight_bits(const std::string& layer, int bits) {
  q_.set_weight_bits(layer, bits);
  for (size_t r = 0; r < reg_layers_.size(); ++r)
    if (reg_layers_[r]->name == layer) reg_bits_[r] = bits;
}

std::map<std::string, Tensor> QuantContext::state_dict() const {
  std::map<std::string, Tensor> s;
  for (const auto& [k, v] : curves_) s["curve." + k] = vector_tensor(v);
  for (size_t i = 0; i < beta_history_.size(); ++i)
    s["beta_history." + std::to_string(i)] = vector_tensor(beta_history_[i]);
  for (size_t i = 0; i < hist_before_.size(); ++i) s["hist_before." + std::to_string(i)] = hist_before_[i];
  if (grad_noise_) {  // (seed, offset) as four 32-bit halves: exact
    const uint64_t seed = grad_noise_->seed(), off = grad_noise_->offset();
    s["gbits_rng"] = Tensor::from_vector(
        std::vector<int32_t>{int32_t(seed >> 32), int32_t(uint32_t(seed)), int32_t(off >> 32), int32_t(uint32_t(off))},
        {4});
  }
  return s;
}

void QuantContext::load_state_dict(const std::map<std::string, Tensor>& s) {
  curves_.clear();
  beta_history_.assign(reg_layers_.size(), {});
  for (const auto& [k, v] : s) {
    if (k.rfind("curve.", 0) == 0) curves_[k.substr(6)] = tensor_values(v);
    if (k.rfind("beta_history.", 0) == 0) {
      const size_t i = std::stoul(k.substr(13));
      LOWBIT_CHECK(i < beta_history_.size(), "checkpoint: quantization state has beta history for layer ", i,
                   " but the run regularizes ", beta_history_.size(), " layers");
      beta_history_[i] = tensor_values(v);
    }
    if (k.rfind("hist_before.", 0) == 0) {
      const size_t i = std::stoul(k.substr(12));
      if (i < hist_before_.size()) hist_before_[i] = v;
    }
    if (k == "gbits_rng" && grad_noise_) {
      LOWBIT_CHECK(v.dtype() == DType::i32 && v.numel() == 4, "checkpoint: gbits_rng must hold 4 int32 halves");
      const Tensor st = v.contiguous();
      const int32_t* h = st.data<int32_t>();
      auto join = [](int32_t hi, int32_t lo) { return (uint64_t(uint32_t(hi)) << 32) | uint64_t(uint32_t(lo)); };
      grad_noise_->set_state(join(h[0], h[1]), join(h[2], h[3]));
    }
  }
}

}  // namespace lowbit::train
