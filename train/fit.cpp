// The fit loop (fit.h).
#include "train/fit.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "autograd/ops.h"
#include "core/math.h"
#include "core/serialize.h"
#include "layers/dropout.h"
#include "optim/clip.h"
#include "train/progress.h"
#include "train/quant_context.h"

namespace lowbit::train {
namespace {

std::atomic<bool> g_interrupted{false};

extern "C" void on_sigint(int) {
  g_interrupted = true;
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C kills at once
}

// Everything that, with the checkpointed tensors, fixes the rest of the run.
struct Position {
  int64_t epoch = 0;  // epoch in progress (0-based)
  int64_t batch = 0;  // next batch of that epoch
  // Running sums of the epoch in progress (so an interrupted epoch reports the same summary).
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
  int64_t counted = 0;  // samples whose step gave logits (the accuracy's denominator)
  double seconds = 0;   // training time of the epoch so far
  // Gradient-l1: sums over the epoch's steps where it was active (penalty, weight and activation norms).
  double gl1_sum = 0, gl1_w_sum = 0, gl1_a_sum = 0;
  int64_t gl1_steps = 0;
};

constexpr const char* kFormat = "lowbit-train";

void save_state(const std::string& path, const FitOptions& o, Module& model, optim::Optimizer& opt,
                const QuantContext* quant, const Position& pos) {
  Checkpoint c;
  c.meta["format"] = std::string(kFormat);
  c.meta["config"] = o.config_text;
  c.meta["epoch"] = pos.epoch;
  c.meta["batch"] = pos.batch;
  c.meta["epochs_total"] = o.epochs;
  c.meta["loss_sum"] = pos.loss_sum;
  c.meta["correct"] = pos.correct;
  c.meta["seen"] = pos.seen;
  c.meta["counted"] = pos.counted;
  c.meta["seconds"] = pos.seconds;
  c.meta["grad_l1.sum"] = pos.gl1_sum;
  c.meta["grad_l1.weights_sum"] = pos.gl1_w_sum;
  c.meta["grad_l1.acts_sum"] = pos.gl1_a_sum;
  c.meta["grad_l1.steps"] = pos.gl1_steps;
  c.meta["rng.default.seed"] = static_cast<int64_t>(default_generator().seed());
  c.meta["rng.default.offset"] = static_cast<int64_t>(default_generator().offset());
  for (auto& [name, m] : model.named_modules())
    if (auto* d = dynamic_cast<Dropout*>(m.get())) {
      c.meta["rng." + name + ".seed"] = static_cast<int64_t>(d->generator().seed());
      c.meta["rng." + name + ".offset"] = static_cast<int64_t>(d->generator().offset());
    }
  c.add_tensors("model.", model.state_dict());
  c.add_tensors("optim.", opt.state_dict());
  if (quant) c.add_tensors("quant.", quant->state_dict());
  save_checkpoint(path, c);
}

Position restore_state(const std::string& path, Module& model, optim::Optimizer& opt, QuantContext* quant) {
  const Checkpoint c = load_checkpoint(path);
  LOWBIT_CHECK(c.has("format") && c.get_string("format") == kFormat, path, " is not a training checkpoint");
  Position pos;
  pos.epoch = c.get_int("epoch");
  pos.batch = c.get_int("batch");
  pos.loss_sum = c.get_double("loss_sum");
  pos.correct = c.get_int("correct");
  pos.seen = c.get_int("seen");
  pos.counted = c.has("counted") ? c.get_int("counted") : pos.seen;
  pos.seconds = c.get_double("seconds");
  if (c.has("grad_l1.steps")) {  // checkpoints before gradient-l1 have none
    pos.gl1_sum = c.get_double("grad_l1.sum");
    pos.gl1_w_sum = c.get_double("grad_l1.weights_sum");
    pos.gl1_a_sum = c.get_double("grad_l1.acts_sum");
    pos.gl1_steps = c.get_int("grad_l1.steps");
  }
  default_generator().set_state(static_cast<uint64_t>(c.get_int("rng.default.seed")),
                                static_cast<uint64_t>(c.get_int("rng.default.offset")));
  for (auto& [name, m] : model.named_modules())
    if (auto* d = dynamic_cast<Dropout*>(m.get()))
      d->generator().set_state(static_cast<uint64_t>(c.get_int("rng." + name + ".seed")),
                               static_cast<uint64_t>(c.get_int("rng." + name + ".offset")));
  model.load_state_dict(c.tensors_with_prefix("model."));
  opt.load_state_dict(c.tensors_with_prefix("optim."));
  if (quant) quant->load_state_dict(c.tensors_with_prefix("quant."));
  return pos;
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

void append_line(const std::string& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  LOWBIT_CHECK(out.good(), "cannot append to ", path);
  out << line << '\n';
}

// metrics.jsonl keeps the lines of the first `epochs` epochs only (a resumed run rewrites the rest).
void cut_metrics(const std::string& path, int64_t epochs) {
  std::ifstream in(path);
  if (!in.good()) return;
  std::string line, kept;
  bool cut = false;
  while (std::getline(in, line)) {
    const std::string key = "{\"epoch\": ";
    const bool ours = line.rfind(key, 0) == 0 && std::atoll(line.c_str() + key.size()) <= epochs;
    if (ours)
      kept += line + "\n";
    else
      cut = true;
  }
  if (cut) write_file_atomic(path, kept);
}

// The first parameter (model order) whose gradient, or whose value, is not finite; "" if none.
std::string first_nonfinite(Module& model, bool gradients) {
  for (const auto& [name, p] : model.named_parameters()) {
    if (gradients && !p.grad().defined()) continue;
    if (!math::all_finite(gradients ? p.grad().data() : p.data())) return name;
  }
  return "";
}

// Runs the step once more without gradients, watching every leaf module's output, and returns the
// first module (in execution order) whose output is not finite, or "" if none is. Only on the way
// out of a stopped run: it updates batch-norm statistics like any forward pass.
std::string first_nonfinite_output(Module& model, const data::Batch& b, const StepFn& step) {
  std::string first;
  std::vector<std::pair<Module*, VariableTransform>> saved;
  for (auto& [name, m] : model.named_modules()) {
    if (!m->named_children().empty()) continue;
    Module* mp = m.get();
    VariableTransform prev = mp->output_hook();
    saved.emplace_back(mp, prev);
    mp->set_output_hook([prev, name = name, &first](const Variable& y) {
      Variable out = prev ? prev(y) : y;
      if (first.empty() && !math::all_finite(out.data())) first = name.empty() ? "the model" : name;
      return out;
    });
  }
  try {
    NoGradGuard ng;
    step(model, b);
  } catch (const std::exception&) {
  }
  for (auto& [m, hook] : saved) m->set_output_hook(hook);
  return first;
}

StepOutput cross_entropy_step(Module& model, const data::Batch& b) {
  Variable logits = model(Variable(b.images));
  return {cross_entropy(logits, b.labels), logits.data()};
}

// Restores SIGINT's handler when fit returns, however it returns.
struct SigintScope {
  bool active;
  explicit SigintScope(bool on) : active(on) {
    if (active) g_interrupted = false, std::signal(SIGINT, on_sigint);
  }
  ~SigintScope() {
    if (active) std::signal(SIGINT, SIG_DFL);
  }
};

}  // namespace

std::string checkpoint_config(const std::string& path) {
  const Checkpoint c = load_checkpoint(path);
  LOWBIT_CHECK(c.has("format") && c.get_string("format") == kFormat, path, " is not a training checkpoint");
  return c.has("config") ? c.get_string("config") : "";
}

FitResult fit(Module& model, optim::Optimizer& opt, data::DataLoader& train, data::DataLoader* test,
              const FitOptions& o, QuantContext* quant) {
  LOWBIT_CHECK(o.epochs >= 1, "fit: epochs must be >= 1, got ", o.epochs);
  const auto schedule = o.schedule ? o.schedule : optim::constant();
  const StepFn step = o.step ? o.step : StepFn(cross_entropy_step);
  LOWBIT_CHECK(!o.step_sets_gradients || (o.step && o.clip_grad_norm <= 0 && !(quant && quant->has_grad_l1())),
               "fit: step_sets_gradients needs a step and combines with neither gradient clipping nor the "
               "gradient-l1 penalty");
  const std::string ckpt_path = o.out.empty() ? "" : o.out + "/checkpoint.ckpt";
  const std::string metrics_path = o.out.empty() ? "" : o.out + "/metrics.jsonl";
  if (!o.out.empty()) std::filesystem::create_directories(o.out);

  FitResult result;
  Position pos;
  if (!o.resume.empty()) {
    pos = restore_state(o.resume, model, opt, quant);
    if (!metrics_path.empty()) cut_metrics(metrics_path, pos.epoch);
    if (o.verbose >= 1)
      std::printf("resumed from %s at epoch %lld, batch %lld\n", o.resume.c_str(), (long long)pos.epoch + 1,
                  (long long)pos.batch);
  } else if (!o.out.empty()) {
    // A fresh run owns its folder's records: metrics of an earlier run there are replaced.
    if (!o.config_text.empty()) write_file_atomic(o.out + "/config.txt", o.config_text);
    std::filesystem::remove(metrics_path);
  }

  SigintScope sigint(o.catch_sigint);
  auto last_save = std::chrono::steady_clock::now();
  const int64_t nb = train.num_batches();
  LOWBIT_CHECK(nb > 0, "fit: the training loader has no batch");
  auto evaluate_now = [&]() -> EvalResult {
    if (o.evaluate) return o.evaluate(model);
    return test ? evaluate(model, *test) : EvalResult{};
  };

  for (; pos.epoch < o.epochs; ++pos.epoch, pos = Position{.epoch = pos.epoch}) {
    model.train();
    Progress bar(detail::concat("epoch ", pos.epoch + 1, "/", o.epochs), nb, o.verbose >= 2 ? o.progress_every : 0);
    const double seconds_before = pos.seconds;
    train.begin_epoch(pos.epoch, pos.batch);
    data::Batch b;
    while (train.next(b)) {
      const double t = double(pos.epoch) + double(pos.batch) / double(nb);
      optim::apply_schedule(opt, *schedule, t);
      opt.set_position(t, double(o.epochs));
      if (quant) quant->begin_step(t, double(o.epochs));
      // Gradient-l1 (spec §7; quant/grad_l1.h): exact, the step's forward pass with the activations
      // captured and the penalty of its loss by double backward; fd, the step run twice by fd_step, which
      // sets the gradients itself (the first run's output is the step's).
      const quant::GradL1Regularizer* gl1 = quant ? quant->grad_l1() : nullptr;
      const bool gl1_fd = gl1 && gl1->options().mode == quant::GradL1Mode::fd;
      StepOutput out;
      quant::GradL1Penalty penalty;
      if (gl1_fd) {
        opt.zero_grad();
        int runs = 0;
        penalty = gl1->fd_step(model, [&] {
          StepOutput o = step(model, b);
          if (runs++ == 0) out = o;
          return o.loss;
        });
      } else if (o.step_sets_gradients) {
        opt.zero_grad();
        out = step(model, b);
      } else {
        std::optional<quant::ActivationCapture> capture;
        if (gl1) capture.emplace(gl1->capture());
        out = step(model, b);
        LOWBIT_CHECK(out.loss.defined() && out.loss.numel() == 1, "fit: the step must return a scalar loss");
        if (gl1 && std::isfinite(out.loss.item())) penalty = gl1->penalty(out.loss, capture->activations());
      }
      LOWBIT_CHECK(out.loss.defined() && out.loss.numel() == 1, "fit: the step must return a scalar loss");
      const double loss_value = out.loss.item();
      Variable total = out.loss;
      if (penalty.value.defined()) total = total + penalty.value;
      Variable reg = opt.regularization_loss();
      if (reg.defined()) total = total + reg;
      // Non-finite values: the loss and the regularizers' term, then the gradients, before the step.
      std::string fault;
      auto value_text = [](double v) { return std::isnan(v) ? std::string("nan") : detail::concat(v); };
      if (!std::isfinite(loss_value))
        fault = "the loss is " + value_text(loss_value);
      else if (penalty.value.defined() && !std::isfinite(penalty.value.item()))
        fault = "the gradient-l1 penalty is " + value_text(penalty.value.item());
      else if (!std::isfinite(total.item()))
        fault = "the regularization term is " + value_text(total.item() - loss_value);
      if (fault.empty()) {
        if (gl1_fd || o.step_sets_gradients) {  // the gradients are set; the optimizer's regularizers add theirs
          if (reg.defined()) reg.backward();
        } else {
          opt.zero_grad();
          total.backward();
        }
        const std::string p = first_nonfinite(model, /*gradients=*/true);
        if (!p.empty()) fault = "the gradient of " + p + " is not finite";
      }
      const std::string where =
          detail::concat("epoch ", pos.epoch + 1, ", batch ", pos.batch + 1, " (step ", opt.step_count() + 1, ")");
      const std::string kept = ckpt_path.empty() ? std::string("no run folder")
                               : result.checkpoint.empty() && o.resume.empty()
                                   ? "no checkpoint was written yet"
                                   : "the last checkpoint (" + ckpt_path + ") is kept as it was";
      if (!fault.empty() && o.on_nonfinite == NonFinitePolicy::skip_step &&
          result.skipped_steps_in_a_row < o.max_skipped_steps) {
        opt.zero_grad();
        ++result.skipped_steps, ++result.skipped_steps_in_a_row;
        if (o.verbose >= 1) std::printf("skipped %s: %s\n", where.c_str(), fault.c_str());
        ++pos.batch;
        pos.seconds = seconds_before + bar.seconds();
        ++result.batches;
        continue;
      }
      if (!fault.empty()) {
        if (std::isnan(loss_value) || std::isinf(loss_value)) {
          const std::string module = first_nonfinite_output(model, b, step);
          const std::string weight = first_nonfinite(model, /*gradients=*/false);
          if (!module.empty()) fault += " (the first output that is not finite: " + module + ")";
          if (!weight.empty()) fault += " (the weight " + weight + " is not finite)";
        }
        throw Error(
            detail::concat("training stopped at ", where, ": ", fault,
                           o.on_nonfinite == NonFinitePolicy::skip_step
                               ? detail::concat(" after ", result.skipped_steps_in_a_row, " skipped steps in a row")
                               : std::string(),
                           "; ", kept,
                           ". Lower the learning rate, clip the gradients (--clip-grad), or skip such steps "
                           "(--on-nonfinite skip-step)"));
      }
      result.skipped_steps_in_a_row = 0;
      if (quant) quant->after_backward();
      if (o.clip_grad_norm > 0) optim::clip_grad_norm(model.parameters(), o.clip_grad_norm);
      opt.step();
      if (quant) quant->after_step();
      const std::string bad_weight = first_nonfinite(model, /*gradients=*/false);
      LOWBIT_CHECK(bad_weight.empty(), "training stopped at ", where, ": the step made the weight ", bad_weight,
                   " not finite; ", kept, ". Lower the learning rate or clip the gradients (--clip-grad)");

      const int64_t n = b.labels.numel();
      pos.loss_sum += loss_value * double(n);
      if (out.logits.defined()) pos.correct += count_correct(out.logits, b.labels), pos.counted += n;
      pos.seen += n;
      if (penalty.value.defined()) {
        pos.gl1_sum += penalty.value.item();
        pos.gl1_w_sum += penalty.weight_l1;
        pos.gl1_a_sum += penalty.act_l1;
        ++pos.gl1_steps;
      }
      ++pos.batch;
      pos.seconds = seconds_before + bar.seconds();
      if (o.verbose >= 2)
        bar.update(pos.batch, pos.loss_sum / double(pos.seen),
                   pos.counted ? double(pos.correct) / double(pos.counted) : 0.0, pos.seen);
      ++result.batches;
      if (g_interrupted || result.batches == o.stop_after_batches) {
        bar.finish();
        result.interrupted = g_interrupted;
        if (!ckpt_path.empty()) {
          save_state(ckpt_path, o, model, opt, quant, pos);
          result.checkpoint = ckpt_path;
          if (o.verbose >= 1)
            std::printf("%s: checkpoint saved to %s at epoch %lld batch %lld; continue with --resume\n",
                        g_interrupted ? "interrupted" : "stopped", ckpt_path.c_str(), (long long)pos.epoch + 1,
                        (long long)pos.batch);
        }
        return result;
      }
      // Within the epoch: every N batches, and every so many seconds of training.
      const bool by_count = o.checkpoint_every_batches > 0 && pos.batch % o.checkpoint_every_batches == 0;
      const bool by_time = o.checkpoint_every_seconds > 0 &&
                           std::chrono::duration<double>(std::chrono::steady_clock::now() - last_save).count() >=
                               o.checkpoint_every_seconds;
      if (!ckpt_path.empty() && pos.batch < nb && (by_count || by_time)) {
        save_state(ckpt_path, o, model, opt, quant, pos);
        result.checkpoint = ckpt_path;
        last_save = std::chrono::steady_clock::now();
      }
    }
    bar.finish();
    EpochRecord r;
    r.epoch = pos.epoch + 1;
    r.epochs = o.epochs;
    r.test = evaluate_now();
    r.train_loss = pos.seen ? pos.loss_sum / double(pos.seen) : 0;
    r.train_acc = pos.counted ? double(pos.correct) / double(pos.counted) : std::nan("");
    r.lr = opt.param_groups()[0].lr;
    r.seconds = pos.seconds;
    r.images_per_sec = pos.seconds > 0 ? double(pos.seen) / pos.seconds : 0;
    const double gl1_steps = pos.gl1_steps ? double(pos.gl1_steps) : std::nan("");
    r.grad_l1 = pos.gl1_sum / gl1_steps;
    r.grad_l1_weights = pos.gl1_w_sum / gl1_steps;
    r.grad_l1_acts = pos.gl1_a_sum / gl1_steps;
    result.last_eval = r.test;
    result.history.push_back(r);
    if (o.verbose >= 1) {
      std::printf("epoch %lld/%lld  train loss %.4f acc %.2f%%", (long long)r.epoch, (long long)r.epochs, r.train_loss,
                  100 * r.train_acc);
      if (r.test.images) std::printf("  test loss %.4f acc %.2f%%", r.test.loss, 100 * r.test.accuracy);
      if (pos.gl1_steps) std::printf("  grad-l1 %.4g", r.grad_l1);
      std::printf("  lr %.4g  %.1fs (%.0f img/s)\n", r.lr, r.seconds, r.images_per_sec);
    }
    if (!metrics_path.empty()) {
      std::ostringstream js;
      js << "{\"epoch\": " << r.epoch << ", \"train_loss\": " << json_number(r.train_loss)
         << ", \"train_acc\": " << json_number(r.train_acc) << ", \"test_loss\": " << json_number(r.test.loss)
         << ", \"test_acc\": " << json_number(r.test.accuracy) << ", \"lr\": " << json_number(r.lr)
         << ", \"seconds\": " << json_number(r.seconds) << ", \"images_per_sec\": " << json_number(r.images_per_sec);
      if (pos.gl1_steps)
        js << ", \"grad_l1\": " << json_number(r.grad_l1) << ", \"grad_l1_weights\": " << json_number(r.grad_l1_weights)
           << ", \"grad_l1_acts\": " << json_number(r.grad_l1_acts);
      if (quant) js << quant->epoch_json();
      js << "}";
      append_line(metrics_path, js.str());
    }
    if (quant) {
      quant->end_epoch(r.epoch, r.train_loss, r.train_acc, r.test.loss, r.test.accuracy);
      if (o.verbose >= 1)
        std::printf("%s%s", format_layer_rows(quant->layer_rows(), quant->spec().reg == "waveq").c_str(),
                    quant->epoch_text().c_str());
    }
    if (o.on_epoch) o.on_epoch(r);

    if (!ckpt_path.empty()) {
      Position next;
      next.epoch = pos.epoch + 1;
      save_state(ckpt_path, o, model, opt, quant, next);
      result.checkpoint = ckpt_path;
      last_save = std::chrono::steady_clock::now();
      if (quant && quant->best_within_budget()) {  // memory budgets: the best epoch that met them
        save_state(o.out + "/best_within_budget.ckpt", o, model, opt, quant, next);
        if (o.verbose >= 1)
          std::printf("best within the memory budget so far: epoch %lld (%s/best_within_budget.ckpt)\n",
                      (long long)r.epoch, o.out.c_str());
      }
    }
  }
  if (result.history.empty()) result.last_eval = evaluate_now();  // resumed a finished run
  result.finished = true;
  return result;
}

}  // namespace lowbit::train
