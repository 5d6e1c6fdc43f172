#include "cli/quant_setup.h"

#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

#include "core/math.h"
#include "quant/qconfig.h"
#include "quant/regularize.h"
#include "quant/report.h"
#include "quant/stats.h"

namespace lowbit::cli {
namespace {

using quant::Grid;

Grid parse_grid(const std::string& g, quant::Method m) {
  if (g == "auto") return m == quant::Method::dorefa || m == quant::Method::pact ? Grid::dorefa : Grid::wrpn;
  if (g == "dorefa") return Grid::dorefa;
  if (g == "wrpn") return Grid::wrpn;
  if (g == "fixed") return Grid::fixed_point;
  throw Error("lowbit: --grid '" + g + "' is not one of auto, dorefa, wrpn, fixed");
}

const char* grid_name(Grid g) { return g == Grid::dorefa ? "dorefa" : g == Grid::wrpn ? "wrpn" : "fixed"; }

quant::Normalization parse_norm(const std::string& s) {
  if (s == "R0") return quant::Normalization::R0;
  if (s == "R1") return quant::Normalization::R1;
  if (s == "R2") return quant::Normalization::R2;
  throw Error("lowbit: --waveq-norm '" + s + "' is not one of R0, R1, R2");
}

Reduction parse_reduction(const std::string& s) {
  if (s == "mean") return Reduction::mean;
  if (s == "sum") return Reduction::sum;
  throw Error("lowbit: --reg-reduction '" + s + "' is not mean or sum");
}

std::vector<double> tensor_values(const Tensor& t) { return t.defined() ? t.to_vector() : std::vector<double>{}; }
Tensor vector_tensor(const std::vector<double>& v) {
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size())}).to(DType::f64);
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

class Setup final : public QuantSetup {
 public:
  Setup(const Options& o, Module& model) {
    cfg_.method = quant::parse_method(o.str("quant"));
    cfg_.weight_bits = static_cast<int>(o.integer("wbits"));
    cfg_.activation_bits = static_cast<int>(o.integer("abits"));
    cfg_.quantize_first_last = o.flag("quantize-first-last");
    cfg_.weight_overrides = o.str("wbits-overrides");
    cfg_.activation_overrides = o.str("abits-overrides");
    reg_kind_ = o.str("reg");
    LOWBIT_CHECK(reg_kind_ == "none" || reg_kind_ == "sinreq" || reg_kind_ == "waveq", "lowbit: --reg '", reg_kind_,
                 "' is not one of none, sinreq, waveq");
    grid_ = parse_grid(o.str("grid"), cfg_.method);
    scale_ = quant::parse_weight_scale(o.str("weight-scale"));
    LOWBIT_CHECK(scale_ != quant::WeightScale::max_abs || cfg_.method == quant::Method::none ||
                     cfg_.method == quant::Method::wrpn,
                 "lowbit: --weight-scale max works with --quant wrpn or none (", quant::method_name(cfg_.method),
                 " sets its own scale)");
    LOWBIT_CHECK(scale_ != quant::WeightScale::max_abs || grid_ != Grid::dorefa,
                 "lowbit: --weight-scale max needs the wrpn or fixed grid");
    LOWBIT_CHECK(
        scale_ != quant::WeightScale::tanh_max ||
            (grid_ == Grid::dorefa && (cfg_.method == quant::Method::dorefa || cfg_.method == quant::Method::none)),
        "lowbit: --weight-scale tanh (DoReFa's tanh(w)/max|tanh w|) needs the dorefa grid and --quant "
        "dorefa or none");
    cfg_.weight_scale_max = scale_ == quant::WeightScale::max_abs;
    q_ = quant::attach_quantizers(model, cfg_);
    for (const auto& n : q_.parameter_names) owned_.insert(n);

    // Regularized layers: those quantized in training or, for float training, those that would be
    // (all but the first and last unless --quantize-first-last); bits from --wbits and overrides.
    for (const auto& l : q_.layers) {
      int bits = *l.weight_bits;
      if (cfg_.method == quant::Method::none) {
        bits = (l.first || l.last) && !cfg_.quantize_first_last ? 32 : cfg_.weight_bits;
      }
      if (bits < 32) {
        reg_layers_.push_back(&l);
        reg_bits_.push_back(bits);
      }
    }
    if (reg_kind_ != "none")
      LOWBIT_CHECK(!reg_layers_.empty(), "lowbit: --reg ", reg_kind_,
                   " has no layer to act on (set --wbits below 32, or --quantize-first-last)");

    std::vector<Variable> weights;
    for (auto* l : reg_layers_) weights.push_back(l->weight());
    const auto reduction = parse_reduction(o.str("reg-reduction"));
    if (reg_kind_ == "sinreq") {
      quant::SinReQSchedule s;
      s.lambda = o.real("lambda-w");
      s.warmup = o.real("reg-warmup");
      sinreq_ = std::make_shared<quant::SinReQRegularizer>(weights, reg_bits_,
                                                           quant::SinReQOptions{grid_, reduction, scale_}, s);
    } else if (reg_kind_ == "waveq") {
      learn_beta_ = !o.flag("fix-beta");
      const double beta_init = o.has("beta-init") ? o.real("beta-init") : -1;
      std::vector<Variable> betas;
      for (size_t i = 0; i < reg_layers_.size(); ++i) {
        // beta counts magnitude bits (grid k = beta + 1); fixed beta = the target bits - 1.
        const double b0 = beta_init > 0 ? beta_init : (learn_beta_ ? 8.0 : double(reg_bits_[i] - 1));
        Module& m = *reg_layers_[i]->module;
        if (!m.has_param("beta")) m.register_parameter("beta", Tensor::full({}, b0), learn_beta_);
        betas.push_back(m.param("beta"));
        owned_.insert(reg_layers_[i]->name + ".beta");
      }
      quant::WaveQOptions wo;
      wo.grid = grid_;
      wo.norm = parse_norm(o.str("waveq-norm"));
      wo.reduction = reduction;
      wo.scale = scale_;
      quant::WaveQSchedule ws;
      ws.lambda_w = o.real("lambda-w");
      ws.lambda_beta = learn_beta_ ? o.real("lambda-beta") : 0.0;
      ws.rise = o.real("reg-warmup");
      ws.fall = o.real("beta-freeze");
      ws.snap_beta = o.flag("snap-beta");
      const std::string levels = o.str("learned-levels");
      LOWBIT_CHECK(levels == "period" || levels == "integer" || levels == "auto", "lowbit: --learned-levels '", levels,
                   "' is not one of auto, period, integer");
      if (learn_beta_ && grid_ == Grid::wrpn) levels_ = levels;
      waveq_ = std::make_shared<quant::WaveQRegularizer>(weights, betas, wo, ws);
    }
    beta_lr_ = o.has("beta-lr") ? o.real("beta-lr") : o.real("lr");
    quant_lr_ = o.real("lr");
    // Histograms "before" for up to three regularized (or quantized) layers.
    for (size_t i = 0; i < reg_layers_.size() && hist_layers_.size() < 3; ++i) hist_layers_.push_back(i);
    for (size_t i : hist_layers_) hist_before_.push_back(reg_layers_[i]->weight().data().to(DType::f64).contiguous());
  }

  bool owns_parameter(const std::string& name) const override { return owned_.count(name) != 0; }

  void add_groups(std::vector<optim::ParamGroup>& groups) override {
    if (sinreq_) groups[0].regularizers.push_back(sinreq_);
    if (waveq_) {
      groups[0].regularizers.push_back(waveq_);
      if (learn_beta_) {
        optim::ParamGroup g;
        g.name = "bitwidths";
        g.lr = beta_lr_;
        g.momentum = groups[0].momentum;
        for (size_t i = 0; i < reg_layers_.size(); ++i) {
          g.params.push_back(waveq_->betas()[i]);
          g.param_names.push_back(reg_layers_[i]->name + ".beta");
        }
        groups.push_back(std::move(g));
      }
    }
    if (!q_.parameter_names.empty()) {
      optim::ParamGroup g;
      g.name = "quantizer";
      g.lr = quant_lr_;
      g.momentum = groups[0].momentum;
      for (const auto& n : q_.parameter_names) {
        g.param_names.push_back(n);
        g.params.push_back(find_param(n));
      }
      groups.push_back(std::move(g));
    }
  }

  void set_epoch(int64_t e, int64_t total) override { set_position(double(e), double(total)); }
  void set_position(double t, double total) override {
    if (sinreq_) sinreq_->set_position(t, total);
    if (waveq_) waveq_->set_position(t, total);
  }
  void after_step() override {
    if (waveq_ && learn_beta_) waveq_->after_step();
  }

  std::map<std::string, Tensor> state_dict() const override {
    std::map<std::string, Tensor> s;
    for (const auto& [k, v] : curves_) s["curve." + k] = vector_tensor(v);
    for (size_t i = 0; i < beta_history_.size(); ++i)
      s["beta_history." + std::to_string(i)] = vector_tensor(beta_history_[i]);
    for (size_t i = 0; i < hist_before_.size(); ++i) s["hist_before." + std::to_string(i)] = hist_before_[i];
    return s;
  }

  void load_state_dict(const std::map<std::string, Tensor>& s) override {
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
    }
  }

  void print_config(Module&) override {
    std::printf("quantization: %s\n", describe().c_str());
    std::printf("  %-24s %8s %8s\n", "layer", "weights", "params");
    for (const auto& l : q_.layers) {
      const int b = *l.weight_bits;
      std::printf("  %-24s %8s %8lld%s\n", l.name.c_str(), b >= 32 ? "fp32" : (std::to_string(b) + "b").c_str(),
                  (long long)l.numel(), is_regularized(l) ? "  (regularized)" : "");
    }
    if (!q_.activations.empty())
      std::printf("  activations: %zu quantized at %d bits\n", q_.activations.size(), q_.activations[0].bits);
  }

  std::string epoch_json(Module&) override {
    std::ostringstream js;
    js << ", \"layers\": [";
    for (size_t i = 0; i < reg_layers_.size(); ++i) {
      const LayerRow r = row(i);
      js << (i ? ", " : "") << "{\"name\": \"" << reg_layers_[i]->name << "\", \"beta\": " << r.beta
         << ", \"bits\": " << r.bits << ", \"mean_distance\": " << r.stats.mean_distance
         << ", \"share_near\": " << r.stats.share_near << "}";
    }
    js << "]";
    if (waveq_) js << ", \"lambda_w\": " << waveq_->lambdas().w << ", \"lambda_beta\": " << waveq_->lambdas().beta;
    if (sinreq_) js << ", \"lambda\": " << sinreq_->lambda();
    return js.str();
  }

  void end_epoch(Module&, int64_t epoch, double train_loss, double train_acc, double test_loss,
                 double test_acc) override {
    curves_["epoch"].push_back(double(epoch + 1));
    curves_["train_loss"].push_back(train_loss);
    curves_["train_acc"].push_back(train_acc);
    curves_["test_loss"].push_back(test_loss);
    curves_["test_acc"].push_back(test_acc);
    beta_history_.resize(reg_layers_.size());
    if (reg_layers_.empty()) return;
    std::printf("  %-22s %7s %5s %12s %10s  (distance to the sinusoid's zeros at its current period)\n", "layer",
                waveq_ ? "beta" : "k", "bits", "dist->level", "within 1%");
    for (size_t i = 0; i < reg_layers_.size(); ++i) {
      const LayerRow r = row(i);
      beta_history_[i].push_back(r.beta);
      std::printf("  %-22s %7.3f %5d %12.5f %9.1f%%\n", reg_layers_[i]->name.c_str(), r.beta, r.bits,
                  r.stats.mean_distance, 100 * r.stats.share_near);
    }
  }

  void final_report(Module& model, data::DataLoader& test, const EvalResult& last, const std::string& out) override {
    // 1-2. The bit assignment (learned or configured) and the accuracy at it.
    const FinalEval fe = final_eval(model, test);
    const EvalResult& fp = fe.fp32;
    const EvalResult& qr = fe.quantized;

    // 3. Memory at those bits vs FP32.
    std::vector<int64_t> numels;
    for (const auto& l : q_.layers) numels.push_back(l.numel());
    const quant::MemoryFootprint mem = quant::weight_memory(numels, fe.bits);

    std::printf("\n%s bit assignment (weights, sign bit included%s):\n", waveq_ && learn_beta_ ? "learned" : "final",
                waveq_ ? "; WaveQ beta counts magnitude bits, k = ceil(beta) + 1" : "");
    print_bit_assignment(fe);
    std::printf("weight memory: %.1f KB at these bits vs %.1f KB FP32 (%.2fx smaller)\n", mem.kb(), mem.fp32_kb(),
                mem.compression_ratio());
    print_accuracy(fe, fmt(" (last epoch as trained: %.2f%%)", 100 * last.accuracy));

    // 4. report.html
    quant::HtmlReport rep("lowbit quantization report: " + describe());
    rep.add_paragraph(detail::concat("FP32-weight accuracy ", fmt("%.2f%%", 100 * fp.accuracy),
                                     "; quantized at the final bits ", fmt("%.2f%%", 100 * qr.accuracy), "; weights ",
                                     fmt("%.1f KB", mem.kb()), " vs ", fmt("%.1f KB", mem.fp32_kb()), " FP32."));
    const auto& ep = curves_["epoch"];
    rep.add(quant::LinePlot{
        "Loss", "epoch", "cross-entropy", {{"train", ep, curves_["train_loss"]}, {"test", ep, curves_["test_loss"]}}});
    rep.add(quant::LinePlot{
        "Accuracy", "epoch", "accuracy", {{"train", ep, curves_["train_acc"]}, {"test", ep, curves_["test_acc"]}}});
    if (waveq_) {
      quant::LinePlot bp{"Per-layer beta (magnitude bits)", "epoch", "beta", {}};
      for (size_t i = 0; i < reg_layers_.size(); ++i) bp.series.push_back({reg_layers_[i]->name, ep, beta_history_[i]});
      rep.add(bp);
    }
    quant::Table t{
        "Layers", {"layer", "weights", "bits", "beta", "mean distance to level", "within 1% of a level"}, {}};
    for (size_t i = 0; i < q_.layers.size(); ++i) {
      const auto& l = q_.layers[i];
      std::vector<std::string> cells{
          l.name, std::to_string(l.numel()), fe.bits[i] >= 32 ? "fp32" : std::to_string(fe.bits[i]), "", "", ""};
      for (size_t r = 0; r < reg_layers_.size(); ++r)
        if (reg_layers_[r] == &l) {
          const LayerRow& lr = fe.rows[r];
          if (waveq_) cells[3] = fmt("%.3f", lr.beta);
          cells[4] = fmt("%.5f", lr.stats.mean_distance);
          cells[5] = fmt("%.1f%%", 100 * lr.stats.share_near);
        }
      t.rows.push_back(cells);
    }
    rep.add(t);
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
      rep.add(hp);
    }
    const std::string path = out + "/report.html";
    rep.write(path);
    std::printf("report: %s\n", path.c_str());
  }

  void eval_report(Module& model, data::DataLoader& test, bool post_training) override {
    const FinalEval fe = final_eval(model, test);
    print_bit_assignment(fe);
    if (post_training)
      std::printf("accuracy: FP32 weights %.2f%%, rounded at these bits after training %.2f%%\n",
                  100 * fe.fp32.accuracy, 100 * fe.quantized.accuracy);
    else
      print_accuracy(fe, "");
  }

  std::string describe() const override {
    std::ostringstream s;
    s << quant::method_name(cfg_.method);
    if (cfg_.method != quant::Method::none) s << " w" << cfg_.weight_bits << "/a" << cfg_.activation_bits;
    if (reg_kind_ != "none") {
      s << " + " << reg_kind_ << (waveq_ && !learn_beta_ ? " (beta fixed)" : "") << " (" << grid_name(grid_) << " grid";
      if (scale_ == quant::WeightScale::max_abs) s << ", on w / max|w|";
      if (scale_ == quant::WeightScale::tanh_max) s << ", on tanh(w) / max|tanh w|";
      s << ")";
    }
    return s.str();
  }

 private:
  struct LayerRow {
    double beta = 0;         // WaveQ beta, or the fixed k - 1
    int bits = 0;            // reported bits: ceil(beta) (WaveQ) or k (fixed)
    int weight_bits = 0;     // sign-counting k of the grid
    bool on_period = false;  // rounded on the period's levels, not the k-bit grid (--learned-levels)
    quant::LevelStats stats;
  };
  struct FinalEval {
    std::vector<LayerRow> rows;  // one per regularized layer
    std::vector<int> bits;       // one per quantized layer (32: FP32)
    EvalResult fp32, quantized;
  };

  // The final bit assignment (WaveQ: learned, ceil(beta) + 1; otherwise the configured bits) and the
  // test accuracy with the float (shadow) weights and with the weights quantized at those bits.
  FinalEval final_eval(Module& model, data::DataLoader& test) {
    FinalEval fe;
    // Each regularized layer's row once (its statistics read every weight).
    for (size_t i = 0; i < reg_layers_.size(); ++i) {
      fe.rows.push_back(row(i));
      LayerRow& r = fe.rows.back();
      r.on_period = levels_ == "period" ||
                    (levels_ == "auto" && quant::period_rounds_closer(reg_layers_[i]->weight().data(), r.beta, scale_));
    }
    fe.bits.assign(q_.layers.size(), 32);
    for (size_t i = 0; i < q_.layers.size(); ++i) fe.bits[i] = q_.inferred_weight_bits(q_.layers[i]);
    for (size_t i = 0; i < reg_layers_.size(); ++i) fe.bits[index_of(reg_layers_[i])] = fe.rows[i].weight_bits;

    fe.fp32 = with_weight_quantizers_off(model, [&] { return evaluate(model, test); });
    quant::Quantization eval_q = q_;
    std::vector<std::pair<Module*, VariableTransform>> saved;
    if (cfg_.method == quant::Method::none) {
      // Float training: quantize with the grid's own quantizer for the evaluation only.
      quant::QuantConfig c;
      c.method = grid_ == Grid::dorefa ? quant::Method::dorefa : quant::Method::wrpn;
      c.weight_scale_max = scale_ == quant::WeightScale::max_abs;
      c.weight_bits = 32;
      c.activation_bits = 32;
      c.quantize_first_last = true;
      for (const auto& l : q_.layers) saved.emplace_back(l.module.get(), weight_hook_of(*l.module));
      eval_q = quant::attach_quantizers(model, c);
    }
    std::vector<int> old_bits;
    for (size_t i = 0; i < eval_q.layers.size(); ++i) {
      old_bits.push_back(*eval_q.layers[i].weight_bits);
      *eval_q.layers[i].weight_bits = fe.bits[i];
    }
    for (size_t i = 0; i < reg_layers_.size(); ++i)
      if (fe.rows[i].on_period) {  // the same bits, the levels at the learned period
        Module& m = *reg_layers_[i]->module;
        saved.emplace_back(&m, weight_hook_of(m));
        set_weight_hook(m, [beta = fe.rows[i].beta, scale = scale_](const Variable& w) {
          return quant::quantize_on_period(w, beta, scale);
        });
      }
    fe.quantized = evaluate(model, test);
    for (size_t i = 0; i < eval_q.layers.size(); ++i) *eval_q.layers[i].weight_bits = old_bits[i];
    for (auto it = saved.rbegin(); it != saved.rend(); ++it) set_weight_hook(*it->first, it->second);
    return fe;
  }

  // One line per quantized layer (bits, WaveQ's beta), then the average over the regularized ones.
  void print_bit_assignment(const FinalEval& fe) const {
    double weighted_bits = 0, reg_numel = 0;
    for (size_t r = 0; r < reg_layers_.size(); ++r) {
      weighted_bits += double(fe.rows[r].weight_bits) * double(reg_layers_[r]->numel());
      reg_numel += double(reg_layers_[r]->numel());
    }
    for (size_t i = 0; i < q_.layers.size(); ++i) {
      const auto& l = q_.layers[i];
      std::string beta;
      for (size_t r = 0; r < reg_layers_.size(); ++r)
        if (reg_layers_[r] == &l && waveq_)
          beta = fmt("beta %.3f", fe.rows[r].beta) +
                 (levels_.empty() ? "" : (fe.rows[r].on_period ? "  period" : "  grid"));
      std::printf("  %-24s %6s  %s\n", l.name.c_str(),
                  fe.bits[i] >= 32 ? "fp32" : (std::to_string(fe.bits[i]) + " bits").c_str(), beta.c_str());
    }
    if (reg_numel > 0)
      std::printf("  average over regularized layers: %.2f bits per weight\n", weighted_bits / reg_numel);
    if (!levels_.empty())
      std::printf(
          "  levels (--learned-levels %s): 'period' m s / (2^beta - 1), the sinusoid's zeros; 'grid' "
          "m s / (2^(k-1) - 1)%s\n",
          levels_.c_str(), scale_ == quant::WeightScale::max_abs ? "; s = max|w|" : "; s = 1");
  }

  // The accuracy line (scripts grep its first part), and why the float figure can be far lower
  // when the net was trained through a quantizer.
  void print_accuracy(const FinalEval& fe, const std::string& suffix) const {
    std::printf("accuracy: FP32 (float shadow) weights %.2f%%, weights quantized at these bits %.2f%%%s\n",
                100 * fe.fp32.accuracy, 100 * fe.quantized.accuracy, suffix.c_str());
    if (cfg_.method != quant::Method::none)
      std::printf(
          "  (trained through the %s quantizer, the net never saw its raw shadow weights, which skip the\n"
          "   quantizer's rescaling: the float figure can be far below the quantized one, the model's)\n",
          quant::method_name(cfg_.method));
  }

  LayerRow row(size_t i) const {
    LayerRow r;
    if (waveq_) {
      r.beta = waveq_->betas()[i].item();
      r.bits = quant::learned_bits(r.beta);
      r.weight_bits = quant::learned_weight_bits(r.beta);
    } else {
      r.weight_bits = reg_bits_[i];
      r.bits = reg_bits_[i];
      r.beta = double(reg_bits_[i] - 1);
    }
    r.stats = quant::sinusoid_stats(scaled_weight(i), sinusoid(i));
    return r;
  }

  // Layer i's weights as the sinusoid sees them (w, w / max|w| or tanh(w) / max|tanh w|).
  Tensor scaled_weight(size_t i) const { return quant::to_sinusoid_domain(reg_layers_[i]->weight().data(), scale_); }

  // The regularizer's current period for layer i: WaveQ at its real-valued beta, SinReQ at k bits.
  quant::SinusoidGrid sinusoid(size_t i) const {
    if (waveq_) return quant::waveq_grid(grid_, waveq_->betas()[i].item());
    return quant::sinreq_grid(grid_, std::max(reg_bits_[i], grid_ == Grid::wrpn ? 2 : 1));
  }

  bool is_regularized(const quant::QuantizedLayer& l) const {
    for (auto* r : reg_layers_)
      if (r == &l) return true;
    return false;
  }
  size_t index_of(const quant::QuantizedLayer* l) const { return static_cast<size_t>(l - q_.layers.data()); }

  Variable find_param(const std::string& full) const {
    for (const auto& l : q_.layers)
      for (auto& [n, p] : l.module->named_parameters(false))
        if (join_name(l.name, n) == full) return p;
    for (const auto& a : q_.activations)
      for (auto& [n, p] : a.module->named_parameters(false))
        if (join_name(a.name, n) == full) return p;
    throw Error("quantization: parameter '" + full + "' not found");
  }

  static VariableTransform weight_hook_of(Module& m);
  static void set_weight_hook(Module& m, VariableTransform hook);

  template <class F>
  EvalResult with_weight_quantizers_off(Module&, F&& f) {
    // Weight quantizers only: the activation quantizers the network was trained with stay on.
    std::vector<std::pair<Module*, VariableTransform>> w;
    for (const auto& l : q_.layers)
      w.emplace_back(l.module.get(), weight_hook_of(*l.module)), set_weight_hook(*l.module, nullptr);
    const EvalResult r = f();
    for (auto& [m, h] : w) set_weight_hook(*m, h);
    return r;
  }

  quant::QuantConfig cfg_;
  quant::Quantization q_;
  std::string reg_kind_;
  Grid grid_ = Grid::wrpn;
  std::string levels_;  // --learned-levels of learned-beta WaveQ layers on the wrpn grid; empty: not applicable
  quant::WeightScale scale_ = quant::WeightScale::none;
  bool learn_beta_ = false;
  double beta_lr_ = 0, quant_lr_ = 0;
  std::vector<const quant::QuantizedLayer*> reg_layers_;
  std::vector<int> reg_bits_;
  std::shared_ptr<quant::SinReQRegularizer> sinreq_;
  std::shared_ptr<quant::WaveQRegularizer> waveq_;
  std::set<std::string> owned_;
  std::map<std::string, std::vector<double>> curves_;
  std::vector<std::vector<double>> beta_history_;
  std::vector<size_t> hist_layers_;
  std::vector<Tensor> hist_before_;
};

}  // namespace
}  // namespace lowbit::cli

#include "layers/conv.h"
#include "layers/linear.h"

namespace lowbit::cli {
namespace {

VariableTransform Setup::weight_hook_of(Module& m) {
  if (auto* c = dynamic_cast<Conv2d*>(&m)) return c->weight_hook();
  if (auto* l = dynamic_cast<Linear*>(&m)) return l->weight_hook();
  return nullptr;
}

void Setup::set_weight_hook(Module& m, VariableTransform hook) {
  if (auto* c = dynamic_cast<Conv2d*>(&m)) c->set_weight_hook(std::move(hook));
  if (auto* l = dynamic_cast<Linear*>(&m)) l->set_weight_hook(std::move(hook));
}

}  // namespace

std::vector<OptionSpec> quant_option_specs() {
  return {
      {"quant", "none", "quantizer: none | dorefa | wrpn | binary | ternary | lsq | pact | u3"},
      {"wbits", "32", "weight bits (sign included); also SinReQ's target"},
      {"abits", "32", "activation bits"},
      {"quantize-first-last", "", "quantize the first and last layers too", true},
      {"wbits-overrides", "", "per-layer weight bits: PATTERN=BITS,... (* globs; first, last)"},
      {"abits-overrides", "", "per-activation bits: PATTERN=BITS,..."},
      {"reg", "none", "regularizer: none | sinreq | waveq"},
      {"grid", "auto", "sinusoid grid: auto (matches --quant) | dorefa | wrpn | fixed"},
      {"weight-scale", "none",
       "what the sinusoid sees per layer: none (w) | max (w / max|w|; also the wrpn quantizer's scale) | tanh "
       "(tanh(w) / max|tanh w|, DoReFa's own domain: dorefa grid)"},
      {"lambda-w", "1", "SinReQ lambda / WaveQ lambda_w plateau"},
      {"lambda-beta", "0.03", "WaveQ lambda_beta plateau (bitwidth penalty)"},
      {"reg-warmup", "0.2", "fraction of training before the regularizer rises (WaveQ r; SinReQ warm-up)"},
      {"beta-freeze", "0.8", "fraction of training where WaveQ's lambda_beta falls (d)"},
      {"waveq-norm", "R1", "WaveQ normalisation: R0 | R1 | R2"},
      {"reg-reduction", "mean", "per-layer reduction of the penalty: mean | sum"},
      {"fix-beta", "", "WaveQ with beta fixed at the target bits - 1 (homogeneous runs)", true},
      {"snap-beta", "", "WaveQ phase 3 (from --beta-freeze on): beta := ceil(beta), then held", true},
      {"learned-levels", "auto",
       "levels WaveQ's learned bits round to (wrpn grid), the same bits either way: period (the sinusoid's "
       "zeros at the real beta, step s/(2^beta - 1)) | integer (the ceil(beta) + 1-bit grid) | auto (per "
       "layer, the one with the smaller squared rounding error)"},
      {"beta-init", "", "initial WaveQ beta (default 8 when learned)"},
      {"beta-lr", "", "learning rate of the beta group (default: --lr)"},
  };
}

std::unique_ptr<QuantSetup> make_quant(const Options& o, Module& model) {
  if (o.str("quant") == "none" && o.str("reg") == "none") return nullptr;
  return std::make_unique<Setup>(o, model);
}

}  // namespace lowbit::cli
