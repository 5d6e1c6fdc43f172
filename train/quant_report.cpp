// The end of a quantized run (quant_context.h): rounding at the final bits, the two evaluations,
// the warning when the model is lost at its bits, report.html, and the text of the tables.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "autograd/ops.h"
#include "core/math.h"
#include "quant/quantizers.h"
#include "quant/report.h"
#include "train/quant_context.h"

namespace lowbit::train {
namespace {

using quant::WeightScale;

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string bits_text(int b) { return b >= 32 ? "fp32" : std::to_string(b) + " bits"; }

double zero_share(const Tensor& q) {
  const int64_t n = q.numel();
  if (n == 0) return 0;
  const double nonzero = math::sum(math::gt(math::abs(q), 0.0)).item();
  return 1.0 - nonzero / double(n);
}

}  // namespace

QuantReport QuantContext::final_report(data::DataLoader& test, bool post_training, const std::string& html_path) {
  QuantReport rep;
  rep.description = describe();
  rep.method = method_->name;
  rep.learned = waveq_ && learn_beta_;
  rep.post_training = post_training || !method_->weight;
  rep.scale = scale_;
  if (rep.learned && grid_ == quant::Grid::wrpn && scale_ != WeightScale::tanh_max)
    rep.learned_levels = spec_.learned_levels;
  // The quantizers as at the end of training (a context built for `eval` starts at the initial bits).
  use_final_bits();

  const bool quantizing = method_->weight != nullptr;
  for (size_t i = 0; i < q_.layers.size(); ++i) {
    const auto& l = q_.layers[i];
    LayerReport lr;
    lr.name = l.name;
    lr.weights = l.numel();
    lr.trained_bits = quantizing ? q_.stored_weight_bits(l) : 32;
    lr.bits = quantizing ? lr.trained_bits : 32;
    size_t r = 0;
    if (reg_layer_of(i, &r)) {
      const LayerRow row = this->row(r);
      lr.regularized = true;
      if (waveq_) lr.beta = row.beta;
      lr.bits = row.bits;
      lr.stats = row.stats;
      lr.on_period =
          !rep.learned_levels.empty() &&
          (rep.learned_levels == "period" ||
           (rep.learned_levels == "auto" && quant::period_rounds_closer(l.weight().data(), row.beta, scale_)));
    }
    rep.layers.push_back(lr);
  }

  rep.fp32 = q_.with_weight_quantizers_off([&] { return evaluate(model_, test); });

  // Round: the layers' quantizers at their final bits (float training: the grid's own quantizer),
  // learned-period layers on the sinusoid's zeros. Hooks and bits are restored afterwards.
  std::vector<VariableTransform> saved_hooks;
  for (const auto& l : q_.layers) saved_hooks.push_back(quant::weight_hook_of(*l.module));
  std::vector<int> saved_bits;
  for (const auto& l : q_.layers) saved_bits.push_back(*l.weight_bits);
  quant::Quantization rounding = q_;
  if (!quantizing && regularized()) {
    quant::QuantConfig c = *quant::quantizer_with_levels(grid_, scale_);  // checked when built
    c.weight_bits = 32;
    c.activation_bits = 32;
    c.quantize_first_last = true;
    rounding = quant::attach_quantizers(model_, c);
  }
  for (size_t i = 0; i < rounding.layers.size(); ++i) {
    *rounding.layers[i].weight_bits = rep.layers[i].bits;
    if (rep.layers[i].on_period) {
      const double beta = *rep.layers[i].beta;
      const WeightScale scale = scale_;
      quant::set_weight_hook(*rounding.layers[i].module,
                             [beta, scale](const Variable& w) { return quant::quantize_on_period(w, beta, scale); });
    }
  }
  {
    NoGradGuard ng;
    for (size_t i = 0; i < rounding.layers.size(); ++i) {
      if (rep.layers[i].bits >= 32) continue;
      const VariableTransform hook = quant::weight_hook_of(*rounding.layers[i].module);
      if (hook) rep.layers[i].zero_share = zero_share(hook(rounding.layers[i].weight()).data());
    }
  }
  rep.quantized = evaluate(model_, test);
  for (size_t i = 0; i < q_.layers.size(); ++i) {
    *q_.layers[i].weight_bits = saved_bits[i];
    quant::set_weight_hook(*q_.layers[i].module, saved_hooks[i]);
  }

  // Memory and the average bits (regularized layers, else the quantized ones), weighted by size.
  std::vector<int64_t> numels;
  std::vector<int> bits;
  double weighted = 0, counted = 0;
  for (const auto& l : rep.layers) {
    numels.push_back(l.weights);
    bits.push_back(l.bits);
    if ((regularized() && l.regularized) || (!regularized() && l.bits < 32))
      weighted += double(l.bits) * double(l.weights), counted += double(l.weights);
  }
  rep.memory = quant::weight_memory(numels, bits);
  if (budget_) rep.budget_sizes = budget_->sizes(), rep.budget = budget_->options();
  rep.learned_quantizers = learned_quantizers();
  rep.average_bits = counted > 0 ? weighted / counted : 32;

  // Lost at its bits: the quantized accuracy has fallen more than half-way from float to chance.
  // Did not learn: both at chance. Each warning is followed by the likely causes found.
  const double chance = 1.0 / double(std::max<int64_t>(test.dataset().num_classes, 2));
  const bool lost =
      rep.fp32.accuracy > chance + 0.1 && rep.quantized.accuracy < chance + 0.5 * (rep.fp32.accuracy - chance);
  const bool untrained = rep.fp32.accuracy < chance + 0.05 && rep.quantized.accuracy < chance + 0.05;
  if (lost || untrained) {
    const std::string figures = fmt("%.2f%%", 100 * rep.quantized.accuracy) + " quantized vs " +
                                fmt("%.2f%%", 100 * rep.fp32.accuracy) + " with float weights (chance " +
                                fmt("%.2f%%", 100 * chance) + ")";
    rep.warnings.push_back(lost ? "the model is lost at these bits: " + figures
                                : "the model did not learn: " + figures);
    std::string zeroed;
    for (const auto& l : rep.layers)
      if (l.bits < 32 && l.zero_share >= 0.9)
        zeroed += (zeroed.empty() ? "" : ", ") + l.name + " " + fmt("%.0f%%", 100 * l.zero_share);
    if (!zeroed.empty())
      rep.warnings.push_back(
          "likely cause: layers round most of their weights to 0 at their bits (" + zeroed +
          "): the weights are small next to the grid's step" +
          (scale_ == WeightScale::none || (method_->name == "wrpn" && cfg_.weight_scale == WeightScale::none)
               ? "; put the grid on each layer's range with --weight-scale max"
               : "; give them more bits (--wbits, a smaller --lambda-beta)"));
    if (rep.learned) {
      bool all_floor = true;
      for (const auto& l : rep.layers)
        if (l.beta && *l.beta > 1.0 + 1e-6) all_floor = false;
      if (all_floor)
        rep.warnings.push_back(
            "likely cause: every beta fell to its floor 1 (2 bits): the bitwidth penalty outweighed the sinusoid; "
            "lower --lambda-beta or raise --lambda-w");
    }
    bool mismatch = false;
    for (const auto& l : rep.layers) mismatch |= quantizing && l.trained_bits != l.bits;
    if (mismatch)
      rep.warnings.push_back(
          "likely cause: layers were rounded at other bits than they trained at (--bits-follow-beta never)");
    if (lost && !quantizing)
      rep.warnings.push_back(
          "likely cause: the net never trained at these bits (float training, rounded afterwards); attach the grid's "
          "quantizer (--quant wrpn or dorefa) so that it trains at them");
    if (untrained && zeroed.empty())
      rep.warnings.push_back(
          "likely cause: training diverged or stalled early (see the first epoch's loss); in a net without batch norm "
          "DoReFa's weights in [-1, 1] blow up float activations: quantize (clip) them with --abits, or lower --lr");
    if (rep.warnings.size() == 1)
      rep.warnings.push_back("likely cause: too few bits for this net; raise --wbits or lower --lambda-beta");
  }
  if (!html_path.empty()) write_html(rep, html_path);
  return rep;
}

void QuantContext::write_html(const QuantReport& rep, const std::string& path) const {
  quant::HtmlReport html("lowbit quantization report: " + rep.description);
  html.add_paragraph(detail::concat("FP32-weight accuracy ", fmt("%.2f%%", 100 * rep.fp32.accuracy),
                                    "; quantized at the final bits ", fmt("%.2f%%", 100 * rep.quantized.accuracy),
                                    "; weights ", fmt("%.1f KB", rep.memory.kb()), " vs ",
                                    fmt("%.1f KB", rep.memory.fp32_kb()), " FP32; bits count the sign bit."));
  for (const auto& w : rep.warnings) html.add_paragraph("Warning: " + w);
  auto curve = [&](const char* k) {
    auto it = curves_.find(k);
    return it == curves_.end() ? std::vector<double>{} : it->second;
  };
  const auto ep = curve("epoch");
  html.add(quant::LinePlot{
      "Loss", "epoch", "cross-entropy", {{"train", ep, curve("train_loss")}, {"test", ep, curve("test_loss")}}});
  html.add(quant::LinePlot{
      "Accuracy", "epoch", "accuracy", {{"train", ep, curve("train_acc")}, {"test", ep, curve("test_acc")}}});
  if (prune_) {  // Choi et al. §3.3
    html.add(
        quant::LinePlot{"Partial-L2 coefficient beta = exp(b)", "epoch", "beta", {{"beta", ep, curve("prune_beta")}}});
    html.add(quant::LinePlot{"Sparsity of the pruned layers (share of exact zeros)",
                             "epoch",
                             "share",
                             {{"sparsity", ep, curve("sparsity")}}});
  }
  if (msqe_) {  // Choi et al. §3.2: alpha tracks lambda / R
    html.add(
        quant::LinePlot{"MSQE coefficient alpha = exp(a)", "epoch", "alpha", {{"alpha", ep, curve("msqe_alpha")}}});
    html.add(quant::LinePlot{
        "MSQE R(W; delta), mean squared quantization error per weight", "epoch", "R", {{"R", ep, curve("msqe_r")}}});
  }
  if (waveq_) {
    quant::LinePlot bp{"Per-layer bits k = ceil(beta) + 1 (beta drawn: magnitude bits)", "epoch", "beta", {}};
    for (size_t i = 0; i < reg_layers_.size(); ++i)
      if (i < beta_history_.size() && beta_history_[i].size() == ep.size())
        bp.series.push_back({reg_layers_[i]->name, ep, beta_history_[i]});
    html.add(bp);
  }
  {  // the bits each weight layer is stored at, and the budgets' sizes per epoch against their targets
    quant::BarPlot bits{"Bits per weight layer (sign included; FP32 layers left out)", "bits", {}, {}, {}};
    for (const auto& l : rep.layers)
      if (l.bits < 32) bits.names.push_back(l.name), bits.values.push_back(l.bits);
    if (!bits.names.empty()) html.add(bits);
  }
  if (budget_) {
    const quant::BudgetOptions& b = budget_->options();
    auto target = [&](double kb) { return std::vector<double>(ep.size(), kb); };
    if (b.weight_kb > 0)
      html.add(quant::LinePlot{"Weight memory (8a), kB at the inferred bits, bias counted",
                               "epoch",
                               "kB",
                               {{"weights", ep, curve("weight_kb")}, {"budget", ep, target(b.weight_kb)}}});
    if (b.act_kb > 0)
      html.add(quant::LinePlot{
          b.act == quant::ActivationBudget::max ? "Largest feature map (8c), kB" : "All feature maps (8b), kB",
          "epoch",
          "kB",
          {{"activations", ep, curve("act_kb")}, {"budget", ep, target(b.act_kb)}}});
  }
  quant::Table t{"Layers",
                 {"layer", "weights", "trained at", "rounded at (bits)", "beta", "mean distance to level",
                  "within 1% of a level", "rounded to 0"},
                 {}};
  for (const auto& l : rep.layers)
    t.rows.push_back({l.name, std::to_string(l.weights), bits_text(l.trained_bits), bits_text(l.bits),
                      l.beta ? fmt("%.3f", *l.beta) : "", l.stats ? fmt("%.5f", l.stats->mean_distance) : "",
                      l.stats ? fmt("%.1f%%", 100 * l.stats->share_near) : "",
                      l.bits < 32 ? fmt("%.1f%%", 100 * l.zero_share) : ""});
  html.add(t);
  for (size_t h = 0; h < hist_layers_.size(); ++h) {
    const size_t i = hist_layers_[h];
    const Tensor after = reg_layers_[i]->weight().data().to(DType::f64);
    // The range of the weights (symmetric, within [-1.2, 1.2]): the levels inside it are what matter.
    double reach = 0;
    for (const Tensor& w : {hist_before_[h], after})
      for (double x : w.to_vector())
        if (std::isfinite(x)) reach = std::max(reach, std::fabs(x));
    reach = std::min(std::max(reach * 1.05, 1e-3), 1.2);
    const double lo = -reach, hi = reach;
    quant::HistogramPlot hp;
    hp.title = "Weights of " + reg_layers_[i]->name + " before and after training";
    hp.before = quant::histogram(hist_before_[h], 160, lo, hi);
    hp.after = quant::histogram(after, 160, lo, hi);
    // The levels the regularizer pulls to at its final period (WaveQ: the real-valued beta), in
    // weight units (mapped back from the sinusoid's domain at the layer's final scale).
    const quant::SinusoidGrid g = sinusoid(i);
    const quant::SinusoidDomain d = quant::sinusoid_domain(reg_layers_[i]->weight().data(), scale_);
    for (double m = std::ceil((std::max(d.to(lo), -1.0) + g.offset) / g.step);
         m * g.step - g.offset <= 1.0 && d.from(m * g.step - g.offset) <= hi && hp.levels.size() < 200; ++m)
      hp.levels.push_back(d.from(m * g.step - g.offset));
    html.add(hp);
  }
  html.write(path);
}

std::string format_layer_rows(const std::vector<LayerRow>& rows, bool waveq) {
  if (rows.empty()) return "";
  std::ostringstream s;
  char line[200];
  std::snprintf(line, sizeof line, "  %-22s %7s %5s %8s %12s %10s  (distance to the sinusoid's zeros at its period)\n",
                "layer", waveq ? "beta" : "", "bits", "trained", "dist->level", "within 1%");
  s << line;
  for (const auto& r : rows) {
    std::snprintf(line, sizeof line, "  %-22s %7s %5d %8s %12.5f %9.1f%%\n", r.name.c_str(),
                  waveq ? fmt("%.3f", r.beta).c_str() : "", r.bits,
                  r.trained_bits >= 32 ? "fp32" : std::to_string(r.trained_bits).c_str(), r.stats.mean_distance,
                  100 * r.stats.share_near);
    s << line;
  }
  return s.str();
}

std::string format_report(const QuantReport& rep, const EvalResult* last_trained) {
  std::ostringstream s;
  char line[240];
  s << "\n"
    << (rep.learned ? "learned" : "final") << " bit assignment (weights, sign bit included"
    << (rep.learned ? "; WaveQ's beta counts magnitude bits, k = ceil(beta) + 1" : "") << "):\n";
  std::snprintf(line, sizeof line, "  %-24s %8s %8s\n", "layer", "trained", "rounded");
  s << line;
  for (const auto& l : rep.layers) {
    std::string beta;
    if (l.beta)
      beta = fmt("  beta %.3f", *l.beta) + (rep.learned_levels.empty() ? "" : (l.on_period ? "  period" : "  grid"));
    std::snprintf(line, sizeof line, "  %-24s %8s %8s%s\n", l.name.c_str(), bits_text(l.trained_bits).c_str(),
                  bits_text(l.bits).c_str(), beta.c_str());
    s << line;
  }
  s << fmt("  average over the regularized layers: %.2f bits per weight\n", rep.average_bits);
  if (!rep.learned_levels.empty())
    s << "  levels (--learned-levels " << rep.learned_levels
      << "): 'period' m s / (2^beta - 1), the sinusoid's zeros; 'grid' m s / (2^(k-1) - 1)"
      << (rep.scale == WeightScale::max_abs ? "; s = max|w|" : "; s = 1") << "\n";
  if (!rep.learned_quantizers.empty()) {  // the learned step and range of each quantizer, and its size
    s << "learned quantizers (" << rep.method << "; kB = bits x count / 8 / 1024, count = weights + bias or one "
      << "sample's activations):\n";
    for (const auto& r : rep.learned_quantizers) {
      std::string params;
      for (const auto& [n, v] : r.params) params += " " + n + " " + fmt("%.6g", v);
      std::snprintf(line, sizeof line, "  %-24s %-10s%s  %2d bits %9lld %9.3f kB\n", r.name.c_str(),
                    r.weight ? "weights" : "activation", params.c_str(), r.bits, static_cast<long long>(r.count), r.kb);
      s << line;
    }
  }
  std::snprintf(line, sizeof line, "weight memory: %.1f KB at these bits vs %.1f KB FP32 (%.2fx smaller)\n",
                rep.memory.kb(), rep.memory.fp32_kb(), rep.memory.compression_ratio());
  s << line;
  if (rep.budget_sizes) {  // Uhlich's accounting (bias included), against the targets
    const quant::MemorySizes& m = *rep.budget_sizes;
    const char* act = rep.budget.act == quant::ActivationBudget::max ? "largest feature map" : "all feature maps";
    if (rep.budget.weight_kb > 0) {
      std::snprintf(line, sizeof line, "memory budget: weights %.2f kB of %.2f kB (%s)\n", m.weight_kb,
                    rep.budget.weight_kb, m.weight_kb <= rep.budget.weight_kb ? "met" : "over");
      s << line;
    }
    if (rep.budget.act_kb > 0) {
      std::snprintf(line, sizeof line, "memory budget: activations (%s) %.2f kB of %.2f kB (%s)\n", act, m.act_kb,
                    rep.budget.act_kb,
                    !m.act_known                    ? "not measured"
                    : m.act_kb <= rep.budget.act_kb ? "met"
                                                    : "over");
      s << line;
    }
  }
  if (rep.post_training && rep.method != "none") {
    std::snprintf(line, sizeof line, "accuracy: FP32 weights %.2f%%, rounded at these bits after training %.2f%%\n",
                  100 * rep.fp32.accuracy, 100 * rep.quantized.accuracy);
    s << line;
  } else {
    std::snprintf(line, sizeof line,
                  "accuracy: FP32 (float shadow) weights %.2f%%, weights quantized at these bits %.2f%%%s\n",
                  100 * rep.fp32.accuracy, 100 * rep.quantized.accuracy,
                  last_trained ? fmt(" (last epoch as trained: %.2f%%)", 100 * last_trained->accuracy).c_str() : "");
    s << line;
    if (rep.method != "none")
      s << "  (trained through the " << rep.method
        << " quantizer, the net never saw its raw shadow weights, which skip the\n"
           "   quantizer's rescaling: the float figure can be far below the quantized one, the model's)\n";
  }
  for (const auto& w : rep.warnings) s << "WARNING: " << w << "\n";
  return s.str();
}

}  // namespace lowbit::train
