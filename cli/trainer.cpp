#include "cli/trainer.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "autograd/ops.h"
#include "cli/progress.h"
#include "cli/quant_setup.h"
#include "cli/run_common.h"
#include "core/parallel.h"
#include "core/serialize.h"
#include "layers/dropout.h"
#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "optim/sgd.h"

namespace lowbit::cli {
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
  double seconds = 0;  // training time of the epoch so far
};

std::unique_ptr<optim::Optimizer> make_optimizer(const Options& o, std::vector<optim::ParamGroup> groups) {
  const std::string& kind = o.str("optimizer");
  if (kind == "sgd") return std::make_unique<optim::SGD>(std::move(groups));
  if (kind == "adam") return std::make_unique<optim::Adam>(std::move(groups));
  if (kind == "adamw") return std::make_unique<optim::AdamW>(std::move(groups));
  throw Error("lowbit train: --optimizer '" + kind + "' is not one of sgd, adam, adamw");
}

void save_state(const std::string& path, const Options& opts, Module& model, optim::Optimizer& opt,
                const QuantSetup* quant, const Position& pos, int64_t epochs_total) {
  Checkpoint c;
  c.meta["format"] = std::string("lowbit-train");
  c.meta["config"] = opts.to_config();
  c.meta["epoch"] = pos.epoch;
  c.meta["batch"] = pos.batch;
  c.meta["epochs_total"] = epochs_total;
  c.meta["loss_sum"] = pos.loss_sum;
  c.meta["correct"] = pos.correct;
  c.meta["seen"] = pos.seen;
  c.meta["seconds"] = pos.seconds;
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

Position restore_state(const Checkpoint& c, const std::string& path, Module& model, optim::Optimizer& opt,
                       QuantSetup* quant) {
  LOWBIT_CHECK(c.has("format") && c.get_string("format") == "lowbit-train", "lowbit train: ", path,
               " is not a training checkpoint");
  Position pos;
  pos.epoch = c.get_int("epoch");
  pos.batch = c.get_int("batch");
  pos.loss_sum = c.get_double("loss_sum");
  pos.correct = c.get_int("correct");
  pos.seen = c.get_int("seen");
  pos.seconds = c.get_double("seconds");
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
  LOWBIT_CHECK(out.good(), "lowbit train: cannot append to ", path);
  out << line << '\n';
}

}  // namespace

std::vector<OptionSpec> train_option_specs() {
  std::vector<OptionSpec> s = {
      {"model", "lenet5", "model name (lowbit summary --list shows the zoo)"},
      {"data", "fashion-mnist",
       "data set: fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, cifar100:DIR, svhn:DIR, folder:DIR"},
      {"epochs", "10", "training epochs"},
      {"batch", "128", "batch size"},
      {"optimizer", "sgd", "sgd | adam | adamw"},
      {"lr", "0.05", "learning rate"},
      {"momentum", "0.9", "SGD momentum"},
      {"nesterov", "", "SGD with Nesterov momentum", true},
      {"wd", "5e-4", "weight decay"},
      {"schedule", "cosine",
       "lr schedule: constant | step:S[:G] | multistep:M1,M2[:G] | exp:G | cosine | warmup:W+..."},
      {"clip-grad", "", "clip the gradient 2-norm at this value"},
      {"augment", "auto", "auto | none | crop:SIZE:PAD,flip (auto: crop+flip for CIFAR, none for digits)"},
      {"width", "1", "width multiplier (WRPN widening)"},
      {"variant", "", "model variant (e.g. resnet20 A|B, resnet18 cifar|imagenet)"},
      {"limit-train", "", "use only the first N training images (quick runs, tests)"},
      {"limit-test", "", "use only the first N test images"},
      {"test-file", "",
       "evaluate on this CIFAR-10/100 binary batch instead of the data set's test split (e.g. the bit-exact subset)"},
      {"seed", "1", "seed of initialisation, data order, augmentation and dropout"},
      {"threads", "", "threads (default: LOWBIT_NUM_THREADS or all cores)"},
      {"out", "runs/last", "run folder (checkpoint, metrics, report)"},
      {"resume", "", "continue from OUT/checkpoint.ckpt (or the given checkpoint)", false, true},
      {"init", "",
       "start from the model weights of a training checkpoint (fine-tuning); optimizer, schedule and quantization "
       "state start fresh"},
      {"stop-after-batches", "", "stop (saving a checkpoint) after this many batches in total (tests)"},
      {"quiet", "", "no per-batch progress", true},
  };
  for (auto& q : quant_option_specs()) s.push_back(q);
  return s;
}

int run_train(Options& opts, int argc, char** argv) {
  // --resume: the checkpoint's own config first, then this command's flags on top.
  std::string resume_path;
  if (opts.has("resume")) {
    resume_path = opts.str("resume");
    if (resume_path == "true") resume_path = opts.str("out") + "/checkpoint.ckpt";
  }
  std::unique_ptr<Checkpoint> resume_ckpt;
  if (!resume_path.empty()) {
    resume_ckpt = std::make_unique<Checkpoint>(load_checkpoint(resume_path));
    Options fresh("train", train_option_specs());
    fresh.load_config_text(resume_ckpt->get_string("config"), resume_path);
    fresh.set("stop-after-batches", "", "resume");  // a one-off of the interrupted command
    fresh.parse(argc, argv);
    fresh.set("resume", "", "resume");
    opts = fresh;
  }

  if (opts.has("threads")) set_num_threads(static_cast<int>(opts.integer("threads")));
  const uint64_t seed = static_cast<uint64_t>(opts.integer("seed"));
  manual_seed(seed);
  const int64_t epochs = opts.integer("epochs"), batch = opts.integer("batch");
  LOWBIT_CHECK(epochs >= 1 && batch >= 1, "lowbit train: --epochs and --batch must be >= 1");
  const std::string out = opts.str("out");
  std::filesystem::create_directories(out);

  DataSetup data = make_data(opts, batch, seed);
  auto model = make_model(opts, data);
  // --init (a new run only; a resumed one has its weights in its own checkpoint): before the
  // quantization setup, which records the starting weights for the report's histograms. Tensors
  // are matched by name and must agree in shape; names on one side only (e.g. WaveQ's per-layer
  // beta when a float run is fine-tuned with WaveQ) are listed and keep their initial values.
  if (!resume_ckpt && opts.has("init")) {
    const std::string init_path = opts.str("init");
    const Checkpoint c = load_checkpoint(init_path);
    LOWBIT_CHECK(c.has("format") && c.get_string("format") == "lowbit-train", "lowbit train: --init ", init_path,
                 " is not a training checkpoint");
    const auto state = c.tensors_with_prefix("model.");
    const auto own = model->state_dict();
    std::string kept, ignored;
    int64_t matched = 0;
    for (const auto& [name, _] : own) {
      if (state.count(name))
        ++matched;
      else
        kept += (kept.empty() ? "" : ", ") + name;
    }
    for (const auto& [name, _] : state)
      if (!own.count(name)) ignored += (ignored.empty() ? "" : ", ") + name;
    LOWBIT_CHECK(matched > 0, "lowbit train: --init ", init_path, " has no tensor of --model ", opts.str("model"));
    try {
      model->load_state_dict(state, /*strict=*/false);
    } catch (const Error& e) {
      throw Error(detail::concat("lowbit train: --init ", init_path, " does not fit --model ", opts.str("model"), ": ",
                                 e.what()));
    }
    std::printf("model weights from %s: %lld tensors", init_path.c_str(), (long long)matched);
    if (!kept.empty()) std::printf("; initial values kept for %s", kept.c_str());
    if (!ignored.empty()) std::printf("; not in this model: %s", ignored.c_str());
    std::printf("\n");
  }
  std::unique_ptr<QuantSetup> quant = make_quant(opts, *model);

  std::vector<optim::ParamGroup> groups(1);
  groups[0].name = "weights";
  for (auto& [name, p] : model->named_parameters()) {
    if (quant && quant->owns_parameter(name)) continue;
    groups[0].params.push_back(p);
    groups[0].param_names.push_back(name);
  }
  groups[0].lr = opts.real("lr");
  groups[0].momentum = opts.str("optimizer") == "sgd" ? opts.real("momentum") : 0;
  groups[0].nesterov = opts.flag("nesterov");
  groups[0].weight_decay = opts.real("wd");
  if (quant) quant->add_groups(groups);
  auto opt = make_optimizer(opts, std::move(groups));
  auto schedule = optim::parse_schedule(opts.str("schedule"), epochs);
  const double clip = opts.has("clip-grad") ? opts.real("clip-grad") : 0;

  Position pos;
  if (resume_ckpt) {
    pos = restore_state(*resume_ckpt, resume_path, *model, *opt, quant.get());
    std::printf("resumed from %s at epoch %lld, batch %lld\n", resume_path.c_str(), (long long)pos.epoch + 1,
                (long long)pos.batch);
    resume_ckpt.reset();
  } else {
    // A fresh run owns its folder's records: metrics of an earlier run there are replaced.
    write_text_file(out + "/config.txt", opts.to_config());
    std::filesystem::remove(out + "/metrics.jsonl");
  }

  std::printf("model %s: %lld parameters; data %s: %lld train / %lld test images %lldx%lldx%lld; %d threads\n",
              opts.str("model").c_str(), (long long)model->num_parameters(), opts.str("data").c_str(),
              (long long)data.train.size(), (long long)data.test.size(), (long long)data.train.channels(),
              (long long)data.train.height(), (long long)data.train.width(), num_threads());
  if (quant) quant->print_config(*model);

  std::signal(SIGINT, on_sigint);
  const std::string ckpt_path = out + "/checkpoint.ckpt";
  const std::string metrics_path = out + "/metrics.jsonl";
  const int64_t stop_after = opts.has("stop-after-batches") ? opts.integer("stop-after-batches") : -1;
  int64_t batches_run = 0;
  const int64_t nb = data.train_loader->num_batches();
  EvalResult last_eval;

  for (; pos.epoch < epochs;
       ++pos.epoch, pos.batch = 0, pos.loss_sum = 0, pos.correct = 0, pos.seen = 0, pos.seconds = 0) {
    model->train();
    if (quant) quant->set_epoch(pos.epoch, epochs);
    Progress bar(detail::concat("epoch ", pos.epoch + 1, "/", epochs), nb, opts.flag("quiet") ? 0 : 50);
    const double seconds_before = pos.seconds;
    data.train_loader->begin_epoch(pos.epoch, pos.batch);
    data::Batch b;
    while (data.train_loader->next(b)) {
      optim::apply_schedule(*opt, *schedule, double(pos.epoch) + double(pos.batch) / double(nb));
      Variable logits = (*model)(Variable(b.images));
      Variable loss = cross_entropy(logits, b.labels);
      Variable total = loss;
      Variable reg = opt->regularization_loss();
      if (reg.defined()) total = total + reg;
      LOWBIT_CHECK(std::isfinite(loss.item()), "lowbit train: the loss became ", loss.item(), " at epoch ",
                   pos.epoch + 1, " batch ", pos.batch + 1, " (lower --lr, or check the data)");
      opt->zero_grad();
      total.backward();
      if (clip > 0) optim::clip_grad_norm(model->parameters(), clip);
      opt->step();
      if (quant) quant->after_step();

      const int64_t n = b.labels.numel();
      pos.loss_sum += loss.item() * double(n);
      pos.correct += count_correct(logits.data(), b.labels);
      pos.seen += n;
      ++pos.batch;
      pos.seconds = seconds_before + bar.seconds();
      if (!opts.flag("quiet"))
        bar.update(pos.batch, pos.loss_sum / double(pos.seen), double(pos.correct) / double(pos.seen), pos.seen);
      ++batches_run;
      if (g_interrupted || batches_run == stop_after) {
        bar.finish();
        save_state(ckpt_path, opts, *model, *opt, quant.get(), pos, epochs);
        std::printf("%s: checkpoint saved to %s at epoch %lld batch %lld; continue with --resume\n",
                    g_interrupted ? "interrupted" : "stopped", ckpt_path.c_str(), (long long)pos.epoch + 1,
                    (long long)pos.batch);
        return g_interrupted ? 130 : 0;
      }
    }
    bar.finish();
    last_eval = evaluate(*model, *data.test_loader);
    const double train_loss = pos.seen ? pos.loss_sum / double(pos.seen) : 0;
    const double train_acc = pos.seen ? double(pos.correct) / double(pos.seen) : 0;
    std::printf("epoch %lld/%lld  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  lr %.4g  %.1fs (%.0f img/s)\n",
                (long long)pos.epoch + 1, (long long)epochs, train_loss, 100 * train_acc, last_eval.loss,
                100 * last_eval.accuracy, opt->param_groups()[0].lr, pos.seconds,
                pos.seconds > 0 ? double(pos.seen) / pos.seconds : 0.0);
    std::ostringstream js;
    js << "{\"epoch\": " << pos.epoch + 1 << ", \"train_loss\": " << json_number(train_loss)
       << ", \"train_acc\": " << json_number(train_acc) << ", \"test_loss\": " << json_number(last_eval.loss)
       << ", \"test_acc\": " << json_number(last_eval.accuracy)
       << ", \"lr\": " << json_number(opt->param_groups()[0].lr) << ", \"seconds\": " << json_number(pos.seconds)
       << ", \"images_per_sec\": " << json_number(pos.seconds > 0 ? double(pos.seen) / pos.seconds : 0);
    if (quant) js << quant->epoch_json(*model);
    js << "}";
    append_line(metrics_path, js.str());
    if (quant) quant->end_epoch(*model, pos.epoch, train_loss, train_acc, last_eval.loss, last_eval.accuracy);

    Position next = pos;
    next.epoch += 1, next.batch = 0, next.loss_sum = 0, next.correct = 0, next.seen = 0, next.seconds = 0;
    save_state(ckpt_path, opts, *model, *opt, quant.get(), next, epochs);
  }
  std::signal(SIGINT, SIG_DFL);
  if (last_eval.images == 0) last_eval = evaluate(*model, *data.test_loader);  // resumed a finished run
  std::printf("final test accuracy %.2f%% (%s)\n", 100 * last_eval.accuracy, data.test.source.c_str());
  if (quant) quant->final_report(*model, *data.test_loader, last_eval, out);
  std::printf("run folder: %s\n", out.c_str());
  return 0;
}

}  // namespace lowbit::cli
