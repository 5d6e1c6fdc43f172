#include "cli/trainer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <thread>

#include "cli/quant_options.h"
#include "core/distributed.h"
#include "core/parallel.h"
#include "core/serialize.h"
#include "models/zoo.h"
#include "optim/adam.h"
#include "optim/schedule.h"
#include "optim/sgd.h"
#include "train/fit.h"
#include "train/quant_context.h"

namespace lowbit::cli {

std::unique_ptr<optim::Optimizer> make_optimizer(const std::string& kind, std::vector<optim::ParamGroup> groups) {
  if (kind == "sgd") return std::make_unique<optim::SGD>(std::move(groups));
  if (kind == "adam") return std::make_unique<optim::Adam>(std::move(groups));
  if (kind == "adamw") return std::make_unique<optim::AdamW>(std::move(groups));
  throw Error("--optimizer '" + kind + "' is not one of sgd, adam, adamw");
}

// --init: model weights from a training checkpoint, matched by name (a new run only), in two passes:
// load_init before the quantization context (which records the starting weights for the report),
// finish_init once it has attached its parameters (learned step sizes and ranges, WaveQ's beta, ...),
// which then come from the checkpoint too when it has them. Names on one side only (e.g. WaveQ's beta
// when a float run is fine-tuned with WaveQ) are listed and keep their initial values; a shape that
// differs is an error naming the file.
namespace {

struct InitLoad {
  std::string path, option, model_name;
  std::map<std::string, Tensor> state;  // the checkpoint's model tensors
  std::set<std::string> loaded;         // names loaded so far
};

void load_matching(Module& model, InitLoad& in) {
  const auto own = model.state_dict();
  std::map<std::string, Tensor> now;
  for (const auto& [name, t] : in.state)
    if (own.count(name) && !in.loaded.count(name)) now.emplace(name, t);
  try {
    model.load_state_dict(now, /*strict=*/false);
  } catch (const Error& e) {
    throw Error(detail::concat(in.option, " ", in.path, " does not fit --model ", in.model_name, ": ", e.what()));
  }
  for (const auto& [name, _] : now) in.loaded.insert(name);
}

InitLoad begin_init(Module& model, const std::string& path, const std::string& model_name, const std::string& option) {
  const Checkpoint c = load_checkpoint(path);
  LOWBIT_CHECK(c.has("format") && c.get_string("format") == "lowbit-train", option, " ", path,
               " is not a training checkpoint");
  InitLoad in{path, option, model_name, c.tensors_with_prefix("model."), {}};
  load_matching(model, in);
  LOWBIT_CHECK(!in.loaded.empty(), option, " ", path, " has no tensor of --model ", model_name);
  return in;
}

void finish_init(Module& model, InitLoad& in) {
  const size_t first = in.loaded.size();
  load_matching(model, in);
  std::string kept, ignored;
  for (const auto& [name, _] : model.state_dict())
    if (!in.loaded.count(name)) kept += (kept.empty() ? "" : ", ") + name;
  for (const auto& [name, _] : in.state)
    if (!in.loaded.count(name)) ignored += (ignored.empty() ? "" : ", ") + name;
  std::printf("model weights from %s: %lld tensors", in.path.c_str(), (long long)in.loaded.size());
  if (in.loaded.size() > first)
    std::printf(" (%lld of them the quantization's parameters)", (long long)(in.loaded.size() - first));
  if (!kept.empty()) std::printf("; initial values kept for %s", kept.c_str());
  if (!ignored.empty()) std::printf("; not in this model: %s", ignored.c_str());
  std::printf("\n");
}

}  // namespace

void load_init(Module& model, const std::string& path, const std::string& model_name, const std::string& option) {
  InitLoad in = begin_init(model, path, model_name, option);
  finish_init(model, in);
}

// --checkpoint-every: "N" batches or "N[smh]" of training time; "0" off.
void parse_checkpoint_every(const std::string& v, train::FitOptions& fo) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  const std::string unit = end ? std::string(end) : "";
  LOWBIT_CHECK(!v.empty() && end != v.c_str() && x >= 0 && (unit.empty() || unit == "s" || unit == "m" || unit == "h"),
               "--checkpoint-every '", v, "' is not N (batches), Ns, Nm or Nh (training time), or 0");
  fo.checkpoint_every_batches = 0;
  fo.checkpoint_every_seconds = 0;
  if (unit.empty()) {
    LOWBIT_CHECK(x == std::floor(x), "--checkpoint-every '", v, "': a number of batches is a whole number");
    fo.checkpoint_every_batches = static_cast<int64_t>(x);
  } else {
    fo.checkpoint_every_seconds = x * (unit == "h" ? 3600 : unit == "m" ? 60 : 1);
  }
}

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
       "start from the model weights of a training checkpoint (fine-tuning), and the quantization's learned "
       "parameters (step sizes, ranges, beta...) where the checkpoint has them; optimizer, schedule and the "
       "quantization's history start fresh"},
      {"stop-after-batches", "", "stop (saving a checkpoint) after this many batches in total (tests)"},
      {"checkpoint-every", "10m",
       "also checkpoint within an epoch: every N batches, or after Ns / Nm / Nh of training; 0: at epoch ends only"},
      {"on-nonfinite", "stop",
       "a non-finite loss or gradient: stop (naming where; the last checkpoint is kept) | skip-step"},
      {"quiet", "", "no per-batch progress", true},
      {"bucket-mb", "4",
       "data-parallel runs (mpirun): gradients are all-reduced in buckets of this many MB, each started during "
       "backward once its gradients are final"},
      {"sync-bn", "",
       "data-parallel runs: batch-norm statistics over the global batch (synchronized) instead of "
       "each rank's share",
       true},
  };
  for (auto& q : quant_option_specs()) s.push_back(q);
  return s;
}

train::DataConfig data_config(const Options& o, int64_t batch) {
  train::DataConfig d;
  d.dataset = o.str("data");
  d.batch = batch;
  d.seed = static_cast<uint64_t>(o.integer("seed"));
  d.augment = o.str("augment");
  if (o.has("limit-train")) d.limit_train = o.integer("limit-train");
  if (o.has("limit-test")) d.limit_test = o.integer("limit-test");
  LOWBIT_CHECK(!o.has("limit-train") || d.limit_train >= 1, "--limit-train must be >= 1");
  LOWBIT_CHECK(!o.has("limit-test") || d.limit_test >= 1, "--limit-test must be >= 1");
  d.test_file = o.str("test-file");
  return d;
}

std::string apply_resume(Options& opts, int argc, char** argv) {
  // --resume: the checkpoint's own config first, then this command's flags on top. The run trained
  // with its grid and scale, so they are kept as they are.
  if (!opts.has("resume")) return "";
  std::string resume_path = opts.str("resume");
  if (resume_path == "true") resume_path = opts.str("out") + "/checkpoint.ckpt";
  LOWBIT_CHECK(std::filesystem::exists(resume_path), "--resume: there is no checkpoint ", resume_path,
               " (the run saved none yet, or --out names another folder); start the run without --resume, or "
               "name the checkpoint: --resume PATH");
  Options fresh = opts.fresh();
  fresh.load_config_text(train::checkpoint_config(resume_path), resume_path);
  fresh.set("stop-after-batches", "", "resume");  // a one-off of the interrupted command
  fresh.parse(argc, argv);
  fresh.set("resume", "", "resume");
  fresh.set("allow-grid-mismatch", "true", "resume");
  opts = fresh;
  return resume_path;
}

train::FitOptions fit_options(const Options& opts, const std::string& resume_path) {
  train::FitOptions fo;
  fo.epochs = opts.integer("epochs");
  LOWBIT_CHECK(fo.epochs >= 1 && opts.integer("batch") >= 1, "--epochs and --batch must be >= 1");
  fo.schedule = optim::parse_schedule(opts.str("schedule"), fo.epochs);
  fo.clip_grad_norm = opts.has("clip-grad") ? opts.real("clip-grad") : 0;
  fo.out = opts.str("out");
  fo.resume = resume_path;
  fo.config_text = opts.to_config();
  fo.stop_after_batches = opts.has("stop-after-batches") ? opts.integer("stop-after-batches") : -1;
  fo.catch_sigint = true;
  parse_checkpoint_every(opts.str("checkpoint-every"), fo);
  const std::string nonfinite = opts.str("on-nonfinite");
  LOWBIT_CHECK(nonfinite == "stop" || nonfinite == "skip-step", "--on-nonfinite '", nonfinite,
               "' is not stop or skip-step");
  fo.on_nonfinite = nonfinite == "stop" ? train::NonFinitePolicy::stop : train::NonFinitePolicy::skip_step;
  fo.verbose = opts.flag("quiet") ? 1 : 2;
  LOWBIT_CHECK(opts.real("bucket-mb") > 0, "--bucket-mb must be > 0");
  fo.bucket_bytes = static_cast<int64_t>(opts.real("bucket-mb") * 1048576.0);
  fo.sync_batch_norm = opts.flag("sync-bn");
  return fo;
}

std::unique_ptr<train::QuantSpec> checked_quant_spec(const Options& opts) {
  // Quantization options are checked before any data is read: the bits here, the rest (override
  // patterns, grids) on a model of the same layers built without the data.
  if (!wants_quantization(opts)) return nullptr;
  auto qspec = std::make_unique<train::QuantSpec>(quant_spec(opts));
  models::ModelOptions mo;
  mo.width_mult = opts.real("width");
  mo.variant = opts.str("variant");
  mo.seed = 0;  // its own generator: the default one is the run's
  auto probe = models::create_model(opts.str("model"), mo);
  train::QuantContext check(*probe, *qspec);
  return qspec;
}

optim::ParamGroup base_group(const Options& opts) {
  optim::ParamGroup base;
  base.name = "weights";
  base.lr = opts.real("lr");
  base.momentum = opts.str("optimizer") == "sgd" ? opts.real("momentum") : 0;
  base.nesterov = opts.flag("nesterov");
  base.weight_decay = opts.real("wd");
  return base;
}

void print_run_header(const Options& opts, const Module& model, const train::TrainData& data) {
  std::printf("model %s: %lld parameters; data %s: %lld train / %lld test images %lldx%lldx%lld; %d threads",
              opts.str("model").c_str(), (long long)model.num_parameters(), opts.str("data").c_str(),
              (long long)data.train.size(), (long long)data.test.size(), (long long)data.train.channels(),
              (long long)data.train.height(), (long long)data.train.width(), num_threads());
  if (dist::size() > 1)
    std::printf(" per rank x %d ranks (global batch %lld)", dist::size(), (long long)opts.integer("batch"));
  std::printf("\n");
}

namespace {

int train_one(Options& opts, int argc, char** argv) {
  const std::string resume_path = apply_resume(opts, argc, argv);
  if (opts.has("threads")) {
    set_num_threads(static_cast<int>(opts.integer("threads")));
  } else if (dist::local_size() > 1 && !std::getenv("LOWBIT_NUM_THREADS")) {
    // Ranks sharing a node share its cores.
    const int hw = std::max(1, int(std::thread::hardware_concurrency()));
    set_num_threads(std::max(1, hw / dist::local_size()));
  }
  manual_seed(static_cast<uint64_t>(opts.integer("seed")));
  const std::unique_ptr<train::QuantSpec> qspec = checked_quant_spec(opts);
  const train::FitOptions fo = fit_options(opts, resume_path);

  train::TrainData data = train::load_data(data_config(opts, opts.integer("batch")));
  auto model = train::create_model(opts.str("model"), data, opts.real("width"), opts.str("variant"));
  // Before the quantization context, which records the starting weights for the report.
  std::optional<InitLoad> init;
  if (resume_path.empty() && opts.has("init")) init = begin_init(*model, opts.str("init"), opts.str("model"), "--init");
  std::unique_ptr<train::QuantContext> quant;
  if (qspec) quant = std::make_unique<train::QuantContext>(*model, *qspec);
  if (init) finish_init(*model, *init);

  optim::ParamGroup base = base_group(opts);
  std::vector<optim::ParamGroup> groups;
  if (quant) {
    groups = quant->param_groups(base);
  } else {
    for (auto& [name, p] : model->named_parameters()) base.params.push_back(p), base.param_names.push_back(name);
    groups = {base};
  }
  auto opt = make_optimizer(opts.str("optimizer"), std::move(groups));

  print_run_header(opts, *model, data);
  if (quant) std::printf("%s", quant->config_table().c_str());

  const train::FitResult r = train::fit(*model, *opt, *data.train_loader, data.test_loader.get(), fo, quant.get());
  if (!r.finished) return r.interrupted ? 130 : 0;
  if (!dist::is_root()) return 0;  // rank 0 reports
  std::printf("final test accuracy %.2f%% (%s)\n", 100 * r.last_eval.accuracy, data.test.source.c_str());
  // The rounding report needs a quantizer or a sinusoid's levels (a float --reg grad-l1 run has neither:
  // its weights are for post-training quantization, lowbit eval).
  if (quant && (quant->quantizes() || quant->regularized())) {
    const std::string html = fo.out + "/report.html";
    const train::QuantReport rep = quant->final_report(*data.test_loader, false, html);
    std::printf("%s", train::format_report(rep, &r.last_eval).c_str());
    std::printf("report: %s\n", html.c_str());
  }
  std::printf("run folder: %s\n", fo.out.c_str());
  return 0;
}

}  // namespace

int run_data_parallel(const char* command, const std::function<int()>& body) {
  // Data parallelism (docs/distributed.md): under mpirun every rank runs the same command; rank 0
  // prints and writes the run folder.
  if (dist::launched_by_mpirun() && !dist::compiled_with_mpi()) {
    const char* world = std::getenv("OMPI_COMM_WORLD_SIZE");
    LOWBIT_CHECK(!world || std::atoi(world) <= 1,
                 "this lowbit was built without MPI (cmake -DLOWBIT_WITH_MPI=ON, libopenmpi-dev): under mpirun -np ",
                 world, " every process would train alone");
  }
  dist::init();
  if (dist::size() == 1) return body();
  if (!dist::is_root()) std::fflush(stdout), (void)std::freopen("/dev/null", "w", stdout);
  try {
    const int rc = body();
    dist::finalize();
    return rc;
  } catch (const std::exception& e) {
    // One rank's error must not leave the others waiting in an all-reduce: end the whole job.
    std::fflush(stdout);
    std::fprintf(stderr, "lowbit %s: error (rank %d of %d): %s\n", command, dist::rank(), dist::size(), e.what());
    dist::abort(1);
  }
}

int run_train(Options& opts, int argc, char** argv) {
  return run_data_parallel("train", [&] { return train_one(opts, argc, argv); });
}

}  // namespace lowbit::cli
