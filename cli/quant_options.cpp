#include "cli/quant_options.h"

#include <cstdio>

#include "quant/grad_l1.h"
#include "quant/methods.h"

namespace lowbit::cli {
namespace {

// An integer bit option, checked at parse time: 1..16 or 32, and the method's own range.
int bits_option(const Options& o, const char* key, const quant::BitRange& range, const std::string& method) {
  if (!o.has(key)) return 0;
  const int64_t b = o.integer(key);
  LOWBIT_CHECK(b == 32 || (b >= 1 && b <= 16), "--", key, " ", b, ": bits must be in 1..16, or 32 for full precision");
  LOWBIT_CHECK(range.contains(int(b)), "--", key, " ", b, ": ", method, " takes ", range.str(),
               " bits (32: full precision)");
  return int(b);
}

// A library default as the option's default text ("%g": 1e-06, 0.001).
std::string default_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

std::vector<OptionSpec> quant_option_specs() {
  const quant::GradL1Options grad_l1;
  return {
      {"quant", "none", "quantizer: " + quant::method_names(" | ") + " (lowbit methods describes them)"},
      {"wbits", "", "weight bits, sign included (default: the method's; with --reg, the start or target)"},
      {"abits", "", "activation bits (default: the method's, 4; binary 1, ternary 32; 32 = float activations)"},
      {"gbits", "32", "DoReFa gradient quantization of the quantized layers' outputs (32: off)"},
      {"quantize-first-last", "", "quantize the first and last layers too", true},
      {"wbits-overrides", "", "per-layer weight bits: PATTERN=BITS,... (* globs; first, last)"},
      {"abits-overrides", "", "per-activation bits: PATTERN=BITS,..."},
      {"pact-decay", "", "PACT's lambda_alpha, L2 on the clip values (default: --wd)"},
      {"reg", "none",
       "regularizer: none | sinreq | waveq (sinusoids toward the levels) | grad-l1 (Alizadeh et al.: the l1 norm "
       "of the loss gradients w.r.t. weights and activations, by double backward) | msqe (Choi et al.: alpha R - "
       "lambda "
       "log alpha, R the mean squared quantization error, alpha learned; with --quant msqe)"},
      {"grid", "auto", "sinusoid grid: auto (the quantizer's levels) | dorefa | wrpn | fixed"},
      {"weight-scale", "auto",
       "what the sinusoid sees per layer: auto (the quantizer's domain; float training: w / max|w|) | none (w) | "
       "max (w / max|w|; also the wrpn quantizer's scale) | tanh (tanh(w) / max|tanh w|, DoReFa's domain)"},
      {"allow-grid-mismatch", "",
       "keep a --grid/--weight-scale whose zeros are not the quantizer's levels (e.g. the official code's raw-w "
       "sinusoid with DoReFa)",
       true},
      {"lambda-w", "1", "SinReQ lambda / WaveQ lambda_w plateau"},
      {"lambda-beta", "0.03", "WaveQ lambda_beta plateau (bitwidth penalty)"},
      {"reg-warmup", "0.2", "fraction of training before the regularizer rises (WaveQ r; SinReQ warm-up)"},
      {"beta-freeze", "0.8", "fraction of training where WaveQ's lambda_beta falls (d)"},
      {"waveq-norm", "R1", "WaveQ normalisation: R0 | R1 | R2"},
      {"reg-reduction", "mean", "per-layer reduction of the penalty: mean | sum"},
      {"fix-beta", "", "WaveQ with beta fixed at the target bits - 1 (homogeneous runs)", true},
      {"snap-beta", "", "WaveQ phase 3 (from --beta-freeze on): beta := ceil(beta), then held", true},
      {"bits-follow-beta", "always",
       "with a quantizer, its bits follow WaveQ's learned k = ceil(beta) + 1: always (every step) | phase3 (from "
       "--beta-freeze on) | never (train at --wbits)"},
      {"learned-levels", "auto",
       "levels WaveQ's learned bits round to (wrpn grid), the same bits either way: period (the sinusoid's "
       "zeros at the real beta, step s/(2^beta - 1)) | integer (the ceil(beta) + 1-bit grid) | auto (per "
       "layer, the one with the smaller squared rounding error)"},
      {"beta-init", "", "initial WaveQ beta (default: --wbits - 1)"},
      {"beta-lr", "", "learning rate of the beta group (default: --lr)"},
      {"quantizer-lr", "",
       "learning rate of the quantizers' learned steps and ranges (lsq, u3, p3, msqe; default: --lr, msqe --lr / 100; "
       "0 holds them at their initialisation)"},
      {"act-quantizer-lr", "",
       "--quant msqe: learning rate of the activations' cell sizes (default: the weights' cell sizes' lr, "
       "--quantizer-lr). Their gradient sums codes up to 2^abits - 1 over the whole batch's feature map: fine-tuning "
       "a trained net at 8 bits needs ~1e-6 (docs/quantization.md)"},
      {"weight-budget-kb", "",
       "Uhlich et al. (8a): total weight memory target in kB at the learned bits (bias included), a squared-hinge "
       "penalty on the learned steps and ranges (--quant u3)"},
      {"act-budget-kb", "", "Uhlich et al. (8b)/(8c): activation memory target in kB (--quant u3, --abits < 32)"},
      {"act-budget", "max", "what --act-budget-kb bounds: max (the largest feature map, 8c) | sum (all of them, 8b)"},
      {"budget-lambda", "0.1",
       "the weight budget's penalty coefficient, and the activation budget's unless --act-budget-lambda (sizes in "
       "kB; 0.1 as the paper on CIFAR-10)"},
      {"act-budget-lambda", "", "the activation budget's penalty coefficient (default: --budget-lambda)"},
      {"lambda", default_text(grad_l1.lambda_w),
       "--reg grad-l1: lambda of lambda sum_l ||dL/dW_l||_1 + lambda sum_l ||dL/da_l||_1 (W: Conv2d/Linear "
       "weights, a: ReLU/ReLU6/Hardtanh outputs; L: the batch-mean loss)"},
      {"lambda-a", "", "--reg grad-l1: lambda of the activation term (default: --lambda; 0: weights only)"},
      {"grad-l1-balance", "",
       "--reg grad-l1: set the activation term's lambda at the first regularized step so that its part of the "
       "penalty equals the weights' part (lambda * weight sums / activation sums on that batch), then hold it "
       "(kept in checkpoints); instead of --lambda-a",
       true},
      {"reg-last-epochs", "",
       "--reg grad-l1: regularize only the last N epochs (fractional allowed; default: every epoch, e.g. a "
       "fine-tune from --init)"},
      {"grad-l1-mode", "exact",
       "--reg grad-l1: exact (the penalty's gradient by double backward, about 3x a plain step) | fd (by forward "
       "differences of the gradient, the second pass replaying the first's ReLU branches and max-pooling winners: "
       "one more forward and backward pass, about 2x; equal to exact up to O(step), for float weights: "
       "docs/quantization.md)"},
      {"grad-l1-fd-step", default_text(grad_l1.fd_step),
       "--grad-l1-mode fd: the perturbation of each weight and activation element"},
      {"grad-l1-scale", "none",
       "--reg grad-l1: none (the paper's penalty) | range (each layer's term times max|W_l| or max|a_l|, the "
       "first-order bound of per-tensor min/max post-training quantization: invariant to the weight and "
       "activation scales batch norm leaves free; docs/quantization.md) | range-fixed | range-only (ablations of "
       "range: its gradient with the ranges held constant, or through the ranges alone)"},
      {"msqe-lambda", "1",
       "--reg msqe: lambda of alpha R - lambda log alpha (alpha settles at lambda / R; docs/quantization.md)"},
      {"prune-sparsity", "",
       "partial-L2 pruning (Choi et al.): target share of zero weights per quantized layer, beta P - lambda log beta "
       "on the weights below each layer's threshold, then pruned at --prune-at"},
      {"prune-overrides", "", "per-layer target sparsity: PATTERN=SPARSITY,... (* globs; the last match wins)"},
      {"prune-at", "1", "fraction of training at which the weights are pruned and kept zero (1: at the end)"},
      {"prune-lambda", "1", "lambda of the pruning coefficient's -lambda log beta term"},
      {"msqe-lr", "", "--reg msqe, --prune-sparsity: learning rate of a = log alpha and b = log beta (default: --lr)"},
  };
}

// (--grad-l1-balance alone too, so that QuantContext says it needs --reg grad-l1.)
bool wants_quantization(const Options& o) {
  return o.str("quant") != "none" || o.str("reg") != "none" || o.flag("grad-l1-balance");
}

train::QuantSpec quant_spec(const Options& o) {
  train::QuantSpec s;
  s.method = o.str("quant");
  const quant::QuantMethod& m = quant::find_method(s.method);
  s.wbits = bits_option(o, "wbits", m.weight_bits, m.name);
  s.abits = bits_option(o, "abits", m.activation_bits, m.name);
  s.gbits = int(o.integer("gbits"));
  s.quantize_first_last = o.flag("quantize-first-last");
  s.wbits_overrides = o.str("wbits-overrides");
  s.abits_overrides = o.str("abits-overrides");
  s.pact_decay = o.has("pact-decay") ? o.real("pact-decay") : -1;
  s.seed = static_cast<uint64_t>(o.integer("seed"));
  s.weight_scale = o.str("weight-scale");
  s.reg = o.str("reg");
  s.grid = o.str("grid");
  s.allow_grid_mismatch = o.flag("allow-grid-mismatch");
  s.quantizer_lr = o.has("quantizer-lr") ? o.real("quantizer-lr") : -1;
  s.act_quantizer_lr = o.has("act-quantizer-lr") ? o.real("act-quantizer-lr") : -1;
  LOWBIT_CHECK(!o.has("act-quantizer-lr") || s.method == "msqe",
               "--act-quantizer-lr applies to --quant msqe (its activations' cell sizes), not --quant ", s.method);
  s.weight_budget_kb = o.has("weight-budget-kb") ? o.real("weight-budget-kb") : 0;
  s.act_budget_kb = o.has("act-budget-kb") ? o.real("act-budget-kb") : 0;
  s.act_budget = o.str("act-budget");
  s.budget_lambda = o.real("budget-lambda");
  if (o.has("act-budget-lambda")) s.act_budget_lambda = o.real("act-budget-lambda");
  s.lambda_w = o.real("lambda-w");
  s.lambda_beta = o.real("lambda-beta");
  s.reg_warmup = o.real("reg-warmup");
  s.beta_freeze = o.real("beta-freeze");
  s.waveq_norm = o.str("waveq-norm");
  s.reg_reduction = o.str("reg-reduction");
  s.fix_beta = o.flag("fix-beta");
  s.snap_beta = o.flag("snap-beta");
  s.bits_follow_beta = o.str("bits-follow-beta");
  s.learned_levels = o.str("learned-levels");
  s.beta_init = o.has("beta-init") ? o.real("beta-init") : 0;
  s.beta_lr = o.has("beta-lr") ? o.real("beta-lr") : 0;
  s.lambda = o.real("lambda");
  s.lambda_a = o.has("lambda-a") ? o.real("lambda-a") : -1;
  s.grad_l1_balance = o.flag("grad-l1-balance");
  s.reg_last_epochs = o.has("reg-last-epochs") ? o.real("reg-last-epochs") : 0;
  s.grad_l1_mode = o.str("grad-l1-mode");
  s.grad_l1_fd_step = o.real("grad-l1-fd-step");
  s.grad_l1_scale = o.str("grad-l1-scale");
  s.msqe_lambda = o.real("msqe-lambda");
  s.msqe_lr = o.has("msqe-lr") ? o.real("msqe-lr") : -1;
  s.prune_sparsity = o.has("prune-sparsity") ? o.real("prune-sparsity") : 0;
  s.prune_overrides = o.str("prune-overrides");
  s.prune_at = o.real("prune-at");
  s.prune_lambda = o.real("prune-lambda");
  return s;
}

int run_methods(int argc, char** argv) {
  Options o("methods", {});
  o.parse(argc, argv);
  if (o.help_requested()) return std::printf("usage: lowbit methods   (the quantizers --quant takes)\n"), 0;
  std::printf("%-8s %-8s %-8s %-20s %s\n", "method", "weights", "acts", "sinusoid (--reg)", "");
  for (const auto& m : quant::quant_methods()) {
    quant::QuantConfig c;
    const auto match = m.sinusoid ? m.sinusoid(c) : std::nullopt;
    const char* grid = !match ? "-" : match->grid == quant::Grid::dorefa ? "dorefa grid" : "wrpn grid";
    std::printf("%-8s %-8s %-8s %-20s %s\n", m.name.c_str(), m.weight ? m.weight_bits.str().c_str() : "fp32",
                m.activation ? m.activation_bits.str().c_str() : "fp32", m.name == "none" ? "any grid" : grid,
                m.help.c_str());
  }
  std::printf(
      "\nbits count the sign bit of weights; 32 = full precision. Learned parameters go in the optimizer\n"
      "group 'quantizer' ('clip' for PACT's alpha); --reg sinreq/waveq work with the methods that have a\n"
      "sinusoid, --reg msqe with --quant msqe.\n");
  return 0;
}

}  // namespace lowbit::cli
