// The `lowbit` command: train, eval, summary, bench, compare.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <vector>

#include "autograd/ops.h"
#include "cli/options.h"
#include "cli/quant_options.h"
#include "cli/trainer.h"
#include "core/parallel.h"
#include "core/serialize.h"
#include "layers/conv.h"
#include "layers/linear.h"
#include "models/zoo.h"
#include "optim/sgd.h"
#include "train/data.h"
#include "train/evaluate.h"
#include "train/quant_context.h"

using namespace lowbit;
using namespace lowbit::cli;

namespace {

const char* kUsage =
    "usage: lowbit <command> [options]   (lowbit <command> --help for its options)\n"
    "\n"
    "commands:\n"
    "  train     train a model of the zoo on a data set (quantization-aware with --quant/--reg)\n"
    "  eval      evaluate a checkpoint on the test set\n"
    "  summary   per-layer output shapes, parameters and MACs of a model\n"
    "  bench     training and inference images/s of a model on random data\n"
    "  compare   compare two checkpoints tensor by tensor, bit for bit\n"
    "  methods   the quantizers --quant takes (the method registry)\n";

// ---- summary ----
int run_summary(int argc, char** argv) {
  Options o("summary", {{"model", "resnet20", "model name"},
                        {"list", "", "list the models of the zoo", true},
                        {"classes", "10", "number of classes"},
                        {"channels", "", "input channels (default: the model's)"},
                        {"size", "", "input height = width (default: the model's)"},
                        {"width", "1", "width multiplier"},
                        {"variant", "", "model variant"}});
  o.parse(argc, argv);
  if (o.help_requested()) return std::printf("%s", o.usage().c_str()), 0;
  if (o.flag("list")) {
    for (const auto& name : models::model_names()) {
      const auto info = models::model_info(name);
      std::printf("%-18s %lldx%lldx%lld  %s\n", name.c_str(), (long long)info.default_in_channels,
                  (long long)info.default_image_size, (long long)info.default_image_size, info.description.c_str());
    }
    return 0;
  }
  models::ModelOptions mo;
  mo.num_classes = o.integer("classes");
  if (o.has("channels")) mo.in_channels = o.integer("channels");
  if (o.has("size")) mo.image_size = o.integer("size");
  mo.width_mult = o.real("width");
  mo.variant = o.str("variant");
  auto model = models::create_model(o.str("model"), mo);
  const auto info = models::model_info(o.str("model"));
  const int64_t C = mo.in_channels ? mo.in_channels : info.default_in_channels;
  const int64_t S = mo.image_size ? mo.image_size : models::default_image_size(o.str("model"), mo.variant);

  // Record every leaf module's output shape through the output hooks, then restore them.
  struct Row {
    std::string name, type;
    Shape out;
    int64_t params = 0, macs = 0;
  };
  std::vector<Row> rows;
  std::vector<std::pair<Module*, VariableTransform>> saved;
  for (auto& [name, m] : model->named_modules()) {
    if (!m->named_children().empty()) continue;
    Module* mp = m.get();
    saved.emplace_back(mp, mp->output_hook());
    const size_t idx = rows.size();
    rows.push_back({name, mp->type_name(), {}, mp->num_parameters(), 0});
    VariableTransform prev = mp->output_hook();
    mp->set_output_hook([&rows, idx, mp, prev](const Variable& y) {
      rows[idx].out = y.shape();
      if (auto* c = dynamic_cast<Conv2d*>(mp)) {
        const auto k = c->kernel_size();
        rows[idx].macs = y.numel() / y.size(0) * (c->in_channels() / c->groups()) * k[0] * k[1];
      } else if (auto* l = dynamic_cast<Linear*>(mp)) {
        rows[idx].macs = y.numel() / y.size(0) * l->in_features();
      }
      return prev ? prev(y) : y;
    });
  }
  {
    NoGradGuard ng;
    model->eval();
    (*model)(Variable(Tensor::zeros({1, C, S, S})));
  }
  for (auto& [m, hook] : saved) m->set_output_hook(hook);

  std::printf("%s: input 1x%lldx%lldx%lld, %s\n\n", o.str("model").c_str(), (long long)C, (long long)S, (long long)S,
              info.description.c_str());
  std::printf("%-28s %-18s %-18s %12s %14s\n", "layer", "type", "output", "params", "MACs");
  int64_t total_params = 0, total_macs = 0;
  for (const auto& r : rows) {
    if (r.out.empty()) continue;  // not on the forward path
    std::printf("%-28s %-18s %-18s %12lld %14lld\n", r.name.c_str(), r.type.c_str(), shape_str(r.out).c_str(),
                (long long)r.params, (long long)r.macs);
    total_params += r.params;
    total_macs += r.macs;
  }
  std::printf("\ntotal: %lld parameters (%lld in the model), %lld MACs per image (%.1f MB of FP32 weights)\n",
              (long long)total_params, (long long)model->num_parameters(), (long long)total_macs,
              double(model->num_parameters()) * 4 / 1e6);
  return 0;
}

// ---- bench ----
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int run_bench(int argc, char** argv) {
  std::vector<OptionSpec> specs = {{"model", "resnet20", "model name"},
                                   {"batch", "128", "batch size"},
                                   {"threads", "", "threads (default: LOWBIT_NUM_THREADS or all cores)"},
                                   {"steps", "20", "timed steps (after warm-up)"},
                                   {"lr", "0.01", "SGD learning rate of the timed steps"},
                                   {"warmup", "3", "untimed warm-up steps"},
                                   {"classes", "10", "number of classes"},
                                   {"channels", "", "input channels (default: the model's)"},
                                   {"size", "", "input height = width (default: the model's)"},
                                   {"width", "1", "width multiplier"},
                                   {"variant", "", "model variant"},
                                   {"seed", "1", "seed of the gradient quantizer's noise (--gbits)"}};
  for (auto& q : quant_option_specs()) specs.push_back(q);
  Options o("bench", specs);
  o.parse(argc, argv);
  if (o.help_requested()) return std::printf("%s", o.usage().c_str()), 0;
  if (o.has("threads")) set_num_threads(static_cast<int>(o.integer("threads")));
  models::ModelOptions mo;
  mo.num_classes = o.integer("classes");
  if (o.has("channels")) mo.in_channels = o.integer("channels");
  if (o.has("size")) mo.image_size = o.integer("size");
  mo.width_mult = o.real("width");
  mo.variant = o.str("variant");
  auto model = models::create_model(o.str("model"), mo);
  std::unique_ptr<train::QuantContext> quant;
  if (wants_quantization(o)) quant = std::make_unique<train::QuantContext>(*model, quant_spec(o));
  const auto info = models::model_info(o.str("model"));
  const int64_t C = mo.in_channels ? mo.in_channels : info.default_in_channels;
  const int64_t S = mo.image_size ? mo.image_size : models::default_image_size(o.str("model"), mo.variant);
  const int64_t B = o.integer("batch"), steps = o.integer("steps"), warmup = o.integer("warmup");
  LOWBIT_CHECK(B >= 1 && steps >= 1 && warmup >= 0, "lowbit bench: --batch and --steps must be >= 1");

  Generator gen(1);
  const Tensor x = Tensor::randn({B, C, S, S}, gen).contiguous(MemoryFormat::channels_last);
  std::vector<int32_t> y(B);
  for (int64_t i = 0; i < B; ++i) y[i] = static_cast<int32_t>(i % mo.num_classes);
  const Tensor labels = Tensor::from_vector(y, {B});

  optim::ParamGroup base{.name = "weights", .lr = o.real("lr"), .weight_decay = 1e-4, .momentum = 0.9};
  if (!quant) base.params = model->parameters();
  optim::SGD opt(quant ? quant->param_groups(base) : std::vector<optim::ParamGroup>{base});
  // Mid-training (t = 1 of 2): the regularizer terms active, as in phase 2 of a run.
  opt.set_position(1, 2);
  if (quant) quant->begin_step(1, 2);

  using clock = std::chrono::steady_clock;
  std::vector<double> train_t, infer_t;
  model->train();
  for (int64_t i = 0; i < warmup + steps; ++i) {
    const auto t0 = clock::now();
    Variable loss = cross_entropy((*model)(Variable(x)), labels);
    Variable reg = opt.regularization_loss();
    if (reg.defined()) loss = loss + reg;
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (quant) quant->after_step();
    if (i >= warmup) train_t.push_back(std::chrono::duration<double>(clock::now() - t0).count());
  }
  model->eval();
  {
    NoGradGuard ng;
    for (int64_t i = 0; i < warmup + steps; ++i) {
      const auto t0 = clock::now();
      (*model)(Variable(x));
      if (i >= warmup) infer_t.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    }
  }
  const double train_ips = double(B) / median(train_t), infer_ips = double(B) / median(infer_t);
  const std::string quant_desc = quant ? quant->describe() : "none";
  std::printf(
      "%s batch %lld, %d threads, quantization %s: train %.1f img/s (median step %.2f ms), inference %.1f img/s\n",
      o.str("model").c_str(), (long long)B, num_threads(), quant_desc.c_str(), train_ips, 1e3 * median(train_t),
      infer_ips);
  std::printf(
      "{\"model\": \"%s\", \"batch\": %lld, \"threads\": %d, \"quant\": \"%s\", \"train_images_per_sec\": %.2f, "
      "\"infer_images_per_sec\": %.2f}\n",
      o.str("model").c_str(), (long long)B, num_threads(), quant_desc.c_str(), train_ips, infer_ips);
  return 0;
}

// ---- eval ----
int run_eval(int argc, char** argv) {
  Options o("eval",
            {{"checkpoint", "", "checkpoint file (a run's checkpoint.ckpt)"},
             {"data", "", "data set (default: the run's)"},
             {"test-file", "", "evaluate on this CIFAR-10/100 binary batch instead of the test split"},
             {"predictions", "", "write each test image's label and predicted class to this CSV file"},
             {"threads", "", "threads"},
             // Post-training quantization: these override the run's quantization config.
             {"quant", "", "weight quantizer to evaluate with (post-training; default: the run's)"},
             {"wbits", "", "weight bits (sign included) with --quant"},
             {"abits", "", "activation bits with --quant (default 32: the weights only)"},
             {"wbits-overrides", "", "per-layer weight bits: PATTERN=BITS,..."},
             {"weight-scale", "", "none | max | tanh (wrpn: quantize w / max|w| per layer)"},
             {"quantize-first-last", "", "quantize the first and last layers too", true},
             {"learned-levels", "", "WaveQ learned bits round to: auto | period | integer (default: the run's)"}});
  o.parse(argc, argv);
  if (o.help_requested()) return std::printf("%s", o.usage().c_str()), 0;
  LOWBIT_CHECK(o.has("checkpoint"), "--checkpoint FILE is required");
  if (o.has("threads")) set_num_threads(static_cast<int>(o.integer("threads")));
  const Checkpoint c = load_checkpoint(o.str("checkpoint"));
  LOWBIT_CHECK(c.has("format") && c.get_string("format") == "lowbit-train", o.str("checkpoint"),
               " is not a training checkpoint");
  Options run("train", train_option_specs());
  run.load_config_text(c.get_string("config"), o.str("checkpoint"));
  if (o.has("data")) run.set("data", o.str("data"), "--data");
  if (o.has("test-file")) run.set("test-file", o.str("test-file"), "--test-file");
  // --limit-train stays: the test images are normalised with the training images' statistics.
  run.set("allow-grid-mismatch", "true", "eval");  // the run trained with its grid
  bool post_training = false;                      // a quantization config given here, not trained with
  for (const char* key : {"quant", "wbits", "abits", "wbits-overrides", "weight-scale", "quantize-first-last"})
    if (o.has(key)) run.set(key, o.str(key), std::string("--") + key), post_training = true;
  if (post_training) {  // rounding only: the run's regularizer and its options do not apply
    run.set("reg", "none", "eval");
    if (!o.has("weight-scale")) run.set("weight-scale", "auto", "eval");
    if (!o.has("wbits-overrides")) run.set("wbits-overrides", "", "eval");
    run.set("gbits", "32", "eval");
    if (!o.has("abits")) run.set("abits", "32", "eval");  // weights only unless --abits
  }
  if (o.has("learned-levels")) run.set("learned-levels", o.str("learned-levels"), "--learned-levels");
  train::TrainData data = train::load_data(data_config(run, 256));
  auto model = train::create_model(run.str("model"), data, run.real("width"), run.str("variant"));
  std::unique_ptr<train::QuantContext> quant;
  if (wants_quantization(run)) quant = std::make_unique<train::QuantContext>(*model, quant_spec(run));
  model->load_state_dict(c.tensors_with_prefix("model."), /*strict=*/!post_training);
  if (quant && !post_training) quant->load_state_dict(c.tensors_with_prefix("quant."));
  std::vector<train::Prediction> predictions;
  const train::EvalResult r = train::evaluate(*model, *data.test_loader, o.has("predictions") ? &predictions : nullptr);
  if (o.has("predictions")) {
    std::string csv = "index,label,predicted\n";
    for (size_t i = 0; i < predictions.size(); ++i)
      csv += std::to_string(i) + "," + std::to_string(predictions[i].label) + "," +
             std::to_string(predictions[i].predicted) + "\n";
    write_file_atomic(o.str("predictions"), csv);
  }
  std::printf("%s on %s: test loss %.4f, accuracy %.2f%% (%lld images)\n", run.str("model").c_str(),
              data.test.source.c_str(), r.loss, 100 * r.accuracy, (long long)r.images);
  if (quant) std::printf("%s", train::format_report(quant->final_report(*data.test_loader, post_training)).c_str());
  return 0;
}

// ---- compare ----
int run_compare(int argc, char** argv) {
  LOWBIT_CHECK(argc >= 2, "usage: lowbit compare A.ckpt B.ckpt [PREFIX]   (exit 0 when every tensor is bit-identical)");
  const std::string prefix = argc >= 3 ? argv[2] : "";
  const auto a = load_checkpoint(argv[0]).tensors_with_prefix(prefix);
  const auto b = load_checkpoint(argv[1]).tensors_with_prefix(prefix);
  int64_t differ = 0;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    if (it == b.end()) {
      std::printf("only in %s: %s\n", argv[0], name.c_str());
      ++differ;
      continue;
    }
    const Tensor& u = it->second;
    const bool same = t.dtype() == u.dtype() && t.shape() == u.shape() &&
                      std::memcmp(t.contiguous().data_ptr(), u.contiguous().data_ptr(),
                                  size_t(t.numel()) * dtype_size(t.dtype())) == 0;
    if (!same) {
      std::printf("differs: %s (max |a-b| = %g)\n", name.c_str(),
                  t.shape() == u.shape() ? max_abs_diff(t.to(DType::f64), u.to(DType::f64)) : -1.0);
      ++differ;
    }
  }
  for (const auto& [name, t] : b)
    if (!a.count(name)) std::printf("only in %s: %s\n", argv[1], name.c_str()), ++differ;
  std::printf("%lld tensors compared, %lld differ\n", (long long)a.size(), (long long)differ);
  return differ == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines reach logs and pipes as they happen
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    std::printf("%s", kUsage);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "train") {
      Options o("train", train_option_specs());
      o.parse(argc - 2, argv + 2);
      if (o.help_requested()) return std::printf("%s", o.usage().c_str()), 0;
      return run_train(o, argc - 2, argv + 2);
    }
    if (cmd == "eval") return run_eval(argc - 2, argv + 2);
    if (cmd == "summary") return run_summary(argc - 2, argv + 2);
    if (cmd == "bench") return run_bench(argc - 2, argv + 2);
    if (cmd == "compare") return run_compare(argc - 2, argv + 2);
    if (cmd == "methods") return run_methods(argc - 2, argv + 2);
    std::fprintf(stderr, "lowbit: unknown command '%s'\n%s", cmd.c_str(), kUsage);
    return 2;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "lowbit %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
