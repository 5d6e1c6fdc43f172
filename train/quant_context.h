// The quantization context of a training run: attaches a registered quantizer (quant/methods.h)
// and a sinusoidal regularizer (SinReQ or WaveQ, quant/regularize.h) to a model or to any part of
// one, owns what they add (WaveQ's per-layer beta, learned steps and ranges, PACT's alpha, the
// gradient quantizer's generator), builds the optimizer groups for them, keeps the bits the
// quantizers train at in step with WaveQ's learned bits, and at the end rounds the weights at their
// final bits, evaluates, and reports.
//
//   train::QuantContext quant(*model, {.method = "dorefa", .wbits = 4, .abits = 4, .reg = "waveq"});
//   optim::SGD opt(quant.param_groups({.lr = 0.05, .weight_decay = 5e-4, .momentum = 0.9}));
//   train::fit(*model, opt, *data.train_loader, data.test_loader.get(), {.epochs = 4}, &quant);
//   train::QuantReport r = quant.final_report(*data.test_loader);
//
// Bits. One meaning everywhere: a layer's bits k count the sign bit (spec convention 1); WaveQ's
// beta counts magnitude bits, so its layer's bits are k = ceil(beta) + 1 (§1.1 [D]); 32 means FP32.
// The epoch table, metrics.jsonl, the final report and report.html all print k, with beta beside it.
//
// The sinusoid's grid is the quantizer's: with grid = weight_scale = "auto" the regularizer's zeros
// are exactly the levels the quantizer rounds to (methods.h, QuantMethod::sinusoid: DoReFa's grid
// in its tanh(w)/max|tanh w| domain, WRPN's grid on w or w/max|w|). A grid or scale given that does
// not match them is an error unless allow_grid_mismatch (the official code's raw-w sinusoid for
// DoReFa is such a mismatch); a quantizer whose levels no sinusoid matches (binary, ternary, LSQ,
// U3) refuses a regularizer. Without a quantizer (float training) the grid is chosen freely and the
// weights are rounded at the end with the quantizer whose levels it has.
//
// Learned beta with a quantizer attached (bits_follow_beta): "always" (default) sets each layer's
// quantizer bits to ceil(beta) + 1 before every step, so the net trains at the bits it is finally
// rounded to; "phase3" does so from beta_freeze T on (before that the layer trains at its initial
// bits); "never" trains at the initial bits throughout (the report then shows trained at k, rounded
// at ceil(beta) + 1). beta starts at k - 1 of the layer's initial bits unless beta_init is given.
//
// The context is also the unit a strategy reuses: build one per fine-tune (it can be built again
// on the same model: hooks are replaced, learned parameters kept by name), or re-target bits with
// set_weight_bits; attach it to a section of a net (quantize_first_last = true there).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/random.h"
#include "data/loader.h"
#include "optim/optimizer.h"
#include "quant/budget.h"
#include "quant/grad_l1.h"
#include "quant/msqe.h"
#include "quant/prune.h"
#include "quant/qconfig.h"
#include "quant/regularize.h"
#include "quant/stats.h"
#include "train/evaluate.h"

namespace lowbit::train {

// The root-level model buffer holding --grad-l1-balance's lambda_a (QuantSpec::grad_l1_balance): the
// regularizer's state, not the model's, so a run evaluated without its regularizer drops it.
inline constexpr const char* kGradL1BalanceBuffer = "grad_l1_lambda_a";

// Field names are the `lowbit train` option names (--wbits-overrides = wbits_overrides); error
// messages name them in option form.
struct QuantSpec {
  // Quantizers (quant/methods.h).
  std::string method = "none";  // a registry name
  int wbits = 0;                // weight bits, sign included; 0: the method's default (none: 32)
  int abits = 0;                // activation bits; 0: the method's default (32)
  bool quantize_first_last = false;
  std::string wbits_overrides{};  // "conv1=8,layer3*=2"
  std::string abits_overrides{};
  std::string weight_scale = "auto";  // auto | none | max | tanh (what the sinusoid, and wrpn, see)
  double pact_alpha_init = 8;
  double pact_decay = -1;  // PACT's lambda_alpha (L2 on alpha, §8.5); < 0: the weights' weight decay
  int gbits = 32;          // DoReFa gradient quantization of the quantized layers' outputs (§8.2); 32: off
  uint64_t seed = 1;       // the gradient quantizer's noise
  // Regularizer (quant/regularize.h; grad-l1: quant/grad_l1.h).
  std::string reg = "none";   // none | sinreq | waveq | grad-l1 | msqe
  std::string grid = "auto";  // auto | dorefa | wrpn | fixed
  bool allow_grid_mismatch = false;
  double lambda_w = 1, lambda_beta = 0.03;
  double reg_warmup = 0.2, beta_freeze = 0.8;
  std::string waveq_norm = "R1", reg_reduction = "mean";
  bool fix_beta = false, snap_beta = false;
  std::string learned_levels = "auto";      // auto | period | integer
  double beta_init = 0;                     // 0: k - 1 of the layer's initial bits
  double beta_lr = 0;                       // 0: the weights' lr
  std::string bits_follow_beta = "always";  // always | phase3 | never
  // Memory budgets (quant/budget.h, Uhlich §6.4): kB targets (<= 0: none), the activation measure
  // (max: the largest feature map (8c); sum: all of them (8b)) and the penalties' lambda.
  double quantizer_lr = -1;  // lr of the learned steps and ranges ("quantizer" group); < 0: the weights'
                             // lr (msqe: / 100); 0: held at their initialisation (Uhlich's "Fixed" rows)
  // msqe's activation cell sizes, in an "act_quantizer" group of their own when >= 0; < 0: in the
  // "quantizer" group at quantizer_lr (quant_context.cpp).
  double act_quantizer_lr = -1;
  double weight_budget_kb = 0, act_budget_kb = 0;
  std::string act_budget = "max";
  double budget_lambda = 0.1;                 // (8a)'s lambda, and (8b)/(8c)'s unless act_budget_lambda is set
  std::optional<double> act_budget_lambda{};  // (8b)/(8c)'s lambda; none: budget_lambda
  // Gradient-l1 regularization (--reg grad-l1, Alizadeh et al., spec §7): lambda weighs both terms
  // (spec §7.1: lambda_w = lambda_a) unless lambda_a >= 0 is given; the penalty is active in the
  // last reg_last_epochs epochs of the run (t >= epochs - reg_last_epochs; 0: every epoch, e.g. a
  // fine-tune from --init).
  double lambda = 1e-3, lambda_a = -1;
  // lambda_a set at the first regularized step so that its part of P equals the weights' part,
  // lambda_a = lambda * weight_l1 / act_l1 on that batch (GradL1Regularizer::measure), then held; kept
  // in the model's buffer kGradL1BalanceBuffer (-1 until set), so checkpoints resume with it.
  bool grad_l1_balance = false;
  double reg_last_epochs = 0;
  std::string grad_l1_mode = "exact";  // exact (double backward) | fd (finite differences, spec §7.2 (b))
  double grad_l1_fd_step = quant::GradL1Options{}.fd_step;  // fd: perturbation of each weight and activation element
  // none (the paper's penalty) | range (each term times max|x|, grad_l1.h) | range-fixed | range-only
  // (range's ablations: its gradient without the ranges' part, or with it alone)
  std::string grad_l1_scale = "none";
  // MSQE regularization with a learnable coefficient (--reg msqe with --quant msqe, Choi et al. §3.2):
  // C = E + alpha R - lambda log alpha, alpha = exp(a), a learned (group "coefficient", lr msqe_lr;
  // < 0: the weights' lr), starting at alpha = 1. At equilibrium alpha R = lambda.
  double msqe_lambda = 1;
  double msqe_lr = -1;
  // Partial-L2 pruning (Choi et al. §3.3): target sparsity per quantized layer (0: off), pattern
  // overrides "conv1=0.5,layer3*=0.8" (the last matching pattern wins), the coefficient's lambda
  // (beta = exp(b) in the "coefficient" group, lr msqe_lr), and the fraction of training at which the weights
  // below each layer's threshold are zeroed and then kept zero after every step (1: at the end).
  double prune_sparsity = 0;
  std::string prune_overrides{};
  double prune_lambda = 1;
  double prune_at = 1;
};

// One row of the per-epoch table / metrics (regularized layers).
struct LayerRow {
  std::string name;
  double beta = 0;          // WaveQ's beta (fixed: k - 1)
  int bits = 0;             // k, sign included: ceil(beta) + 1 for WaveQ, the configured k for SinReQ
  int trained_bits = 0;     // what its quantizer runs at now (32: float training)
  quant::LevelStats stats;  // distance of the weights to the sinusoid's zeros at its current period
};

struct LayerReport {
  std::string name;
  int64_t weights = 0;
  bool regularized = false;
  std::optional<double> beta;  // WaveQ layers
  int trained_bits = 32;       // bits its quantizer ran at at the end of training (32: FP32)
  int bits = 32;               // bits it is rounded at and stored at
  bool on_period = false;      // rounded on the sinusoid's zeros at the real beta (learned levels)
  std::optional<quant::LevelStats> stats;
  double zero_share = 0;  // share of its weights that round to 0 at `bits`
};

// A quantizer with learned parameters (U3's step and range), per weight layer or activation, with
// Uhlich's size: kB = bits x count / 8 / 1024 (count: weight + bias, or one sample's activations).
struct LearnedQuantizerRow {
  std::string name;
  bool weight = true;
  std::vector<std::pair<std::string, double>> params;  // the method's parameters, as learned ("w_d", ...)
  int bits = 32;
  int64_t count = 0;
  double kb = 0;
};

struct QuantReport {
  std::string description;     // "dorefa w4/a4 + waveq (dorefa grid, on tanh(w) / max|tanh w|)"
  bool learned = false;        // WaveQ learned the bits
  bool post_training = false;  // rounded at bits it never trained at (float training or eval --quant)
  std::string learned_levels;  // --learned-levels when it applies, else ""
  quant::WeightScale scale = quant::WeightScale::none;
  std::vector<LayerReport> layers;  // every weight layer
  double average_bits = 0;          // over the regularized (or quantized) layers, weighted by size
  quant::MemoryFootprint memory;
  EvalResult fp32, quantized;         // float (shadow) weights; weights at `bits`
  std::string method;                 // quantizer name
  std::vector<std::string> warnings;  // the model lost at its bits, and the likely cause
  // With memory budgets: the sizes at the final bits (Uhlich's accounting) and the targets.
  std::optional<quant::MemorySizes> budget_sizes;
  quant::BudgetOptions budget;
  std::vector<LearnedQuantizerRow> learned_quantizers;  // methods with learned parameters per layer (U3)
};

class QuantContext {
 public:
  QuantContext(Module& model, const QuantSpec& spec);
  QuantContext(const QuantContext&) = delete;  // holds pointers into its own layer list
  QuantContext& operator=(const QuantContext&) = delete;

  // The optimizer groups: "weights" (every parameter of the model the context does not own, with
  // the regularizer attached; hyper-parameters from `base`), "bitwidths" (WaveQ's beta; lr beta_lr),
  // "quantizer" (learned steps and ranges; no weight decay), "clip" (PACT's alpha; weight decay
  // pact_decay). Empty groups are left out.
  std::vector<optim::ParamGroup> param_groups(const optim::ParamGroup& base) const;
  bool owns_parameter(const std::string& full_name) const;

  // Called by fit before / after every optimizer step (t in fractional epochs of `total`).
  void begin_step(double t, double total);
  // Called by fit between backward and the optimizer step: with a memory budget, the learned steps'
  // and ranges' gradients clipped to [-d, d] (train_resnet.py clip_quant_grads, §6.4 [O]).
  void after_backward();
  void after_step();
  // Called by fit after each epoch's evaluation (history for report.html).
  void end_epoch(int64_t epoch, double train_loss, double train_acc, double test_loss, double test_acc);

  // The regularized layers now: beta, bits, trained bits, distance to the levels.
  std::vector<LayerRow> layer_rows() const;
  // ", \"layers\": [...], \"lambda_w\": ..." for metrics.jsonl (bits = k, sign included).
  std::string epoch_json() const;
  std::string describe() const;
  // The layer table printed when a run starts (layer, bits, weights, regularized).
  std::string config_table() const;

  // Rounds every quantized (or regularized) layer at its final bits, evaluates with float (shadow)
  // weights and with the rounded ones, and restores the hooks. post_training: the config was not
  // trained with (eval --quant). With html_path, writes report.html (needs the run's history).
  QuantReport final_report(data::DataLoader& test, bool post_training = false, const std::string& html_path = "");

  // History and owned state for checkpoints (resumed exactly).
  std::map<std::string, Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, Tensor>& state);

  // Sets every regularized layer's quantizer to its final bits (WaveQ: ceil(beta) + 1 when the bits
  // follow beta), as at the end of training: a context built to evaluate or export a finished run
  // starts at the initial bits until this is called. No-op when the bits do not follow beta.
  void use_final_bits();
  // Re-targets one layer's quantizer (a ReLeQ bit vector); throws for unknown layers and bad bits.
  void set_weight_bits(const std::string& layer, int bits);
  const quant::Quantization& quantization() const { return q_; }
  const QuantSpec& spec() const { return spec_; }
  bool regularized() const { return sinreq_ || waveq_; }
  // MSQE (--reg msqe): the regularizer (alpha, R, lambda), else null.
  const quant::MsqeRegularizer* msqe() const { return msqe_.get(); }
  // Partial-L2 pruning: the regularizer, and whether the weights have been pruned (masks applied).
  const quant::PartialL2Regularizer* pruning() const { return prune_.get(); }
  bool pruned() const { return pruned_; }
  // Share of exact zeros over the pruned layers' weights (0 without pruning).
  double sparsity() const;
  // The --gbits noise generator (null without gradient quantization); data parallelism splits it per rank.
  Generator* grad_noise_generator() const { return grad_noise_.get(); }
  // Lines for the per-epoch table beside the layer rows ("" when there is nothing to add): MSQE's
  // alpha, a and R.
  std::string epoch_text() const;
  // Gradient-l1 (--reg grad-l1): the regularizer when it is active at the position of the last
  // begin_step (the last reg_last_epochs epochs), else null. The fit loop then captures the
  // activations during the step and adds its penalty to the loss (train/fit.h).
  const quant::GradL1Regularizer* grad_l1() const { return grad_l1_on_ ? grad_l1_.get() : nullptr; }
  // --grad-l1-balance: lambda_a is still to be set (no regularized step yet). The fit loop then calls
  // balance_grad_l1 with the step's forward pass (run once more, state put back) before the penalty,
  // which sets lambda_a and returns it, or returns -1 and leaves it pending when the batch's loss is
  // not finite (that step is skipped; the next one measures).
  bool grad_l1_balance_pending() const;
  double balance_grad_l1(const std::function<Variable()>& forward);
  bool has_grad_l1() const { return grad_l1_ != nullptr; }
  // A weight or activation quantizer is attached (not a float run that only regularizes).
  bool quantizes() const;
  // The memory budget's sizes now (nullopt without --weight-budget-kb / --act-budget-kb).
  std::optional<quant::MemorySizes> budget_sizes() const;
  // After end_epoch: the epoch just ended met every budget and has the best test accuracy of the
  // epochs that did (the fit loop then keeps it as best_within_budget.ckpt; the official code keeps
  // the best validation error among the iterations meeting the constraints). False without a budget.
  bool best_within_budget() const;
  // The learned quantizer parameters now, with bits and sizes (empty for methods without them).
  std::vector<LearnedQuantizerRow> learned_quantizers() const;

 private:
  struct Impl;
  Module& model_;
  QuantSpec spec_;
  quant::QuantConfig cfg_;
  quant::Quantization q_;
  const quant::QuantMethod* method_ = nullptr;
  quant::Grid grid_ = quant::Grid::wrpn;
  quant::WeightScale scale_ = quant::WeightScale::none;
  bool learn_beta_ = false;
  bool follow_ = false;  // the quantizers' bits follow beta
  std::vector<const quant::QuantizedLayer*> reg_layers_;
  std::vector<int> reg_bits_;  // SinReQ / fixed beta / initial bits
  std::shared_ptr<quant::SinReQRegularizer> sinreq_;
  std::shared_ptr<quant::WaveQRegularizer> waveq_;
  std::shared_ptr<quant::MemoryBudget> budget_;
  std::shared_ptr<quant::GradL1Regularizer> grad_l1_;
  std::shared_ptr<quant::MsqeRegularizer> msqe_;
  std::shared_ptr<quant::PartialL2Regularizer> prune_;
  std::vector<Tensor> prune_masks_;
  bool pruned_ = false;
  void prune_now();
  bool grad_l1_on_ = false;
  std::shared_ptr<Generator> grad_noise_;  // --gbits
  std::vector<std::string> owned_;
  std::map<std::string, std::vector<double>> curves_;
  std::vector<std::vector<double>> beta_history_;
  std::vector<size_t> hist_layers_;
  std::vector<Tensor> hist_before_;
  double t_ = 0, total_ = 1;

  int final_bits(size_t reg_index) const;
  quant::SinusoidGrid sinusoid(size_t reg_index) const;
  LayerRow row(size_t reg_index) const;
  size_t index_of(const quant::QuantizedLayer* l) const;
  const quant::QuantizedLayer* reg_layer_of(size_t layer_index, size_t* reg_index) const;
  void write_html(const QuantReport& report, const std::string& path) const;
};

// The per-epoch table of the regularized layers (beta column for WaveQ).
std::string format_layer_rows(const std::vector<LayerRow>& rows, bool waveq);
// The final report as printed: bit assignment (trained at, rounded at), memory, the two accuracies,
// warnings. last_trained: the last epoch's test result, quoted beside them.
std::string format_report(const QuantReport& report, const EvalResult* last_trained = nullptr);

// Parses "auto" | "none" | "max" | "tanh".
std::optional<quant::WeightScale> parse_scale_option(const std::string& s);

}  // namespace lowbit::train
