// The `lowbit` command: train, dcq, eval, export, infer, summary, bench, compare.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include "autograd/ops.h"
#include "cli/dcq.h"
#include "cli/options.h"
#include "cli/quant_options.h"
#include "cli/releq.h"
#include "cli/trainer.h"
#include "core/kernels/peak.h"
#include "core/parallel.h"
#include "core/serialize.h"
#include "deploy/c_header.h"
#include "deploy/engine.h"
#include "deploy/export.h"
#include "layers/conv.h"
#include "layers/linear.h"
#include "models/zoo.h"
#include "optim/sgd.h"
#include "train/data.h"
#include "train/evaluate.h"
#include "train/ptq.h"
#include "train/quant_context.h"

using namespace lowbit;
using namespace lowbit::cli;

namespace {

const char* kUsage =
    "usage: lowbit <command> [options]   (lowbit <command> --help for its options)\n"
    "\n"
    "commands:\n"
    "  train     train a model of the zoo on a data set (quantization-aware with --quant/--reg)\n"
    "  dcq       divide-and-conquer quantization: a float teacher's sections distilled into quantized ones\n"
    "  releq     ReLeQ: a PPO agent searches per-layer weight bitwidths of a float network (short fine-tunes)\n"
    "  eval      evaluate a checkpoint on the test set\n"
    "  export    write a quantized run's model as an integer model file (.lbq)\n"
    "  infer     run an integer model file on a data set's test images (integer-only engine)\n"
    "  summary   per-layer output shapes, parameters and MACs of a model\n"
    "  bench     training and inference images/s of a model on random data\n"
    "  compare   compare two checkpoints tensor by tensor, bit for bit\n"
    "  methods   the quantizers --quant takes (the method registry)\n";

// ---- summary ----
// Each leaf module's output shape, parameters and MACs per image (Conv2d, Linear), recorded through
// the output hooks (restored after) on one eval forward pass of a 1 x C x S x S input. Modules not on
// the forward path keep an empty shape.
struct LayerRow {
  std::string name, type;
  Shape out;
  int64_t params = 0, macs = 0;
};

std::vector<LayerRow> layer_rows(Module& model, int64_t C, int64_t S) {
  std::vector<LayerRow> rows;
  std::vector<std::pair<Module*, VariableTransform>> saved;
  for (auto& [name, m] : model.named_modules()) {
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
    model.eval();
    model(Variable(Tensor::zeros({1, C, S, S})));
  }
  for (auto& [m, hook] : saved) m->set_output_hook(hook);
  return rows;
}

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

  const std::vector<LayerRow> rows = layer_rows(*model, C, S);
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
// Median seconds of `steps` calls of f after the untimed warm-up: `warmup` calls, and more until the
// warm-up has run for kMinWarmupSeconds. A short call (batch 8 through the integer engine: ~0.5 ms)
// repeated after an idle period runs at half speed for its first ~100 calls on these 2-core VMs (the
// second core's wake-up misses the call's second half, which the first thread then runs itself):
// a count alone made such figures bimodal from one process to the next.
constexpr double kMinWarmupSeconds = 0.3;
template <class F>
double median_seconds(int64_t warmup, int64_t steps, F&& f) {
  using Clock = std::chrono::steady_clock;
  const auto w0 = Clock::now();
  for (int64_t i = 0;
       i < warmup || (warmup > 0 && std::chrono::duration<double>(Clock::now() - w0).count() < kMinWarmupSeconds); ++i)
    f();
  std::vector<double> t;
  for (int64_t i = 0; i < steps; ++i) {
    const auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// --int8-winograd on | off (the integer engine's EngineOptions::winograd).
bool winograd_option(const Options& o) {
  const std::string v = o.str("int8-winograd");
  LOWBIT_CHECK(v == "on" || v == "off", "--int8-winograd must be on or off, got '", v, "'");
  return v == "on";
}

int run_bench(int argc, char** argv) {
  std::vector<OptionSpec> specs = {{"model", "resnet20", "model name"},
                                   {"batch", "128", "batch size"},
                                   {"threads", "", "threads (default: LOWBIT_NUM_THREADS or all cores)"},
                                   {"steps", "20", "timed steps (after warm-up)"},
                                   {"lr", "0.01", "SGD learning rate of the timed steps"},
                                   {"warmup", "3", "untimed warm-up steps (when > 0: at least 0.3 s of them)"},
                                   {"mode", "both", "train | infer | both | none: float passes timed (infer: no grad)"},
                                   {"integer", "", "also time the integer engine on the --quant model, exported", true},
                                   {"model-file", "", "with --integer: time this .lbq file instead of an export"},
                                   {"int8-winograd", "on", "with --integer: on | off (the engine's Winograd)"},
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
  const std::string mode = o.str("mode");
  LOWBIT_CHECK(mode == "train" || mode == "infer" || mode == "both" || mode == "none",
               "lowbit bench: --mode must be train, infer, both or none");
  const bool time_train = mode == "train" || mode == "both", time_infer = mode == "infer" || mode == "both";

  // --integer: the model as quantized here (random weights, BN statistics as initialized) exported
  // to the integer engine in memory, or a trained one from --model-file; export errors end the bench.
  const bool integer = o.flag("integer");
  LOWBIT_CHECK(integer || !o.has("model-file"), "lowbit bench: --model-file goes with --integer");
  std::optional<deploy::Engine> engine;
  const deploy::EngineOptions engine_options{.winograd = winograd_option(o)};
  if (o.has("model-file")) {
    engine.emplace(deploy::load_model(o.str("model-file")), o.str("model-file"), engine_options);
  } else if (integer) {
    LOWBIT_CHECK(quant, "lowbit bench --integer: needs --quant (the model to export) or --model-file");
    {  // one batch through the model first: quantizers that set a range from their first input (MobileNet
       // v2's residual stream) have one then, as after the first training step
      NoGradGuard ng;
      Generator g0(2);
      (*model)(Variable(Tensor::randn({B, C, S, S}, g0).contiguous(MemoryFormat::channels_last)));
    }
    quant->use_final_bits();
    deploy::ExportOptions eo;
    eo.model_name = o.str("model");
    eo.channels = C, eo.height = S, eo.width = S;
    engine.emplace(deploy::export_model(*model, quant->quantization(), eo).model, o.str("model"), engine_options);
  }
  int64_t macs = 0;  // per image, of the model's convolutions and linear layers
  if (engine) {
    LOWBIT_CHECK(engine->channels() == C && engine->height() == S && engine->width() == S, o.str("model-file"),
                 " takes ", engine->height(), "x", engine->width(), "x", engine->channels(), " images; --model ",
                 o.str("model"), " takes ", S, "x", S, "x", C);
    for (const auto& r : layer_rows(*model, C, S)) macs += r.macs;
  }

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

  // A pass not timed (--mode, --integer) prints 0 img/s.
  double train_s = 0, infer_s = 0, integer_s = 0;
  model->train();
  if (time_train)
    train_s = median_seconds(warmup, steps, [&] {
      // --reg grad-l1: as the fit loop's step (train/fit.cpp): exact, the activations captured and the
      // penalty added; fd, two passes in fd_step, which sets the gradients.
      const quant::GradL1Regularizer* gl1 = quant ? quant->grad_l1() : nullptr;
      Variable reg = opt.regularization_loss();
      if (gl1 && gl1->options().mode == quant::GradL1Mode::fd) {
        opt.zero_grad();
        gl1->fd_step(*model, [&] { return cross_entropy((*model)(Variable(x)), labels); });
        if (reg.defined()) reg.backward();
      } else {
        std::optional<quant::ActivationCapture> capture;
        if (gl1) capture.emplace(gl1->capture());
        Variable loss = cross_entropy((*model)(Variable(x)), labels);
        if (gl1) loss = loss + gl1->penalty(loss, capture->activations()).value;
        capture.reset();
        if (reg.defined()) loss = loss + reg;
        opt.zero_grad();
        loss.backward();
      }
      if (quant) quant->after_backward();
      opt.step();
      if (quant) quant->after_step();
    });
  model->eval();
  if (time_infer) {
    NoGradGuard ng;
    infer_s = median_seconds(warmup, steps, [&] { (*model)(Variable(x)); });
  }
  if (engine) {
    std::vector<uint8_t> pixels(size_t(B * S * S * C));  // NHWC
    for (auto& p : pixels) p = static_cast<uint8_t>(gen.next_u64());
    std::vector<float> logits(size_t(B * engine->classes()));
    integer_s = median_seconds(warmup, steps, [&] { engine->run(pixels.data(), B, logits.data()); });
  }
  const auto ips = [B](double s) { return s > 0 ? double(B) / s : 0.0; };
  const double integer_gops = 2e-9 * double(macs) * ips(integer_s);
  const double peak_gops = engine ? kernels::measure_peak_int8_gops(num_threads()) : 0.0;  // 0: no VNNI
  const std::string quant_desc = quant ? quant->describe() : "none";
  std::printf(
      "%s batch %lld, %d threads, quantization %s: train %.1f img/s (median step %.2f ms), inference %.1f img/s "
      "(median %.3f ms)",
      o.str("model").c_str(), (long long)B, num_threads(), quant_desc.c_str(), ips(train_s), 1e3 * train_s,
      ips(infer_s), 1e3 * infer_s);
  if (engine)
    std::printf(", integer engine %.1f img/s (median %.3f ms, %.1f GOP/s of %lld MACs per image; int8 peak %.1f GOP/s)",
                ips(integer_s), 1e3 * integer_s, integer_gops, (long long)macs, peak_gops);
  std::printf(
      "\n{\"model\": \"%s\", \"batch\": %lld, \"threads\": %d, \"quant\": \"%s\", \"train_images_per_sec\": %.2f, "
      "\"infer_images_per_sec\": %.2f",
      o.str("model").c_str(), (long long)B, num_threads(), quant_desc.c_str(), ips(train_s), ips(infer_s));
  if (engine)
    std::printf(
        ", \"integer_infer_images_per_sec\": %.2f, \"macs_per_image\": %lld, \"integer_gops\": %.2f, "
        "\"int8_peak_gops\": %.1f",
        ips(integer_s), (long long)macs, integer_gops, peak_gops);
  if (o.has("model-file")) std::printf(", \"model_file\": \"%s\"", o.str("model-file").c_str());
  std::printf("}\n");
  return 0;
}

// ---- a finished run, rebuilt from its checkpoint (eval, export) ----
struct Run {
  train::TrainData data;
  std::shared_ptr<Module> model;
  std::unique_ptr<train::QuantContext> quant;
};

// The run's regularizer off, for evaluating or exporting its model (a regularizer does not change
// the model), with the options that need it.
void drop_regularizer(Options& run, const std::string& why) {
  run.set("reg", "none", why);
  run.set("grad-l1-balance", "false", why);
}

// The run's options (its stored config, adjusted by the caller) -> data, model and quantization,
// with the checkpoint's model (and, unless post_training, quantization) state loaded.
Run load_run(const std::string& path, const Options& run, bool post_training) {
  const Checkpoint c = load_checkpoint(path);
  Run r;
  r.data = train::load_data(data_config(run, 256));
  r.model = train::create_model(run.str("model"), r.data, run.real("width"), run.str("variant"));
  if (wants_quantization(run)) r.quant = std::make_unique<train::QuantContext>(*r.model, quant_spec(run));
  auto weights = c.tensors_with_prefix("model.");
  if (!run.flag("grad-l1-balance")) weights.erase(train::kGradL1BalanceBuffer);
  try {
    r.model->load_state_dict(weights, /*strict=*/!post_training);
    if (r.quant && !post_training) r.quant->load_state_dict(c.tensors_with_prefix("quant."));
  } catch (const Error& e) {
    throw Error(detail::concat(path, ": does not match its run's model or quantization (", e.what(), ")"));
  }
  return r;
}

// The stored config of a training checkpoint.
Options run_options(const std::string& path) {
  const Checkpoint c = load_checkpoint(path);
  LOWBIT_CHECK(c.has("format") && c.get_string("format") == "lowbit-train", path, " is not a training checkpoint");
  std::vector<OptionSpec> specs = train_option_specs();  // a lowbit dcq run stores its own options too
  for (auto& d : dcq_option_specs()) specs.push_back(d);
  Options run("train", specs);
  run.load_config_text(c.get_string("config"), path);
  return run;
}

// ---- eval ----

// eval --double: the test images normalized in double, (x / 255 - mean_c) / std_c with the run's
// statistics as export folds them (the loader does it in float32), through a double model.
train::EvalResult evaluate_double(Module& model, const train::TrainData& data,
                                  std::vector<train::Prediction>& predictions) {
  const Tensor px = data.test.images.contiguous();  // uint8 [N, H, W, C]
  const Tensor labels = data.test.labels.contiguous();
  const int64_t N = data.test.size(), H = data.test.height(), W = data.test.width(), C = data.test.channels();
  const uint8_t* p = px.data<uint8_t>();
  const int32_t* y = labels.data<int32_t>();
  NoGradGuard ng;
  model.eval();
  train::EvalResult r;
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t b0 = 0; b0 < N; b0 += 256) {
    const int64_t nb = std::min<int64_t>(256, N - b0), per = H * W * C;
    Tensor x = Tensor::empty({nb, H, W, C}, DType::f64);
    double* xp = x.data<double>();
    for (int64_t i = 0; i < nb * per; ++i) {
      const size_t c = data.mean.size() == 1 ? 0 : size_t(i % C);
      xp[i] = (double(p[b0 * per + i]) / 255.0 - data.mean[c]) / data.std[c];
    }
    const Variable logits = model(Variable(x.permute({0, 3, 1, 2})));  // logical NCHW, channels-last memory
    const Tensor lb = labels.narrow(0, b0, nb);
    loss_sum += cross_entropy(logits, lb).item() * double(nb);
    const std::vector<int32_t> arg = train::argmax_rows(logits.data());
    for (int64_t i = 0; i < nb; ++i) {
      correct += arg[size_t(i)] == y[b0 + i];
      predictions.push_back({y[b0 + i], arg[size_t(i)]});
    }
    r.images += nb;
  }
  r.loss = r.images ? loss_sum / double(r.images) : 0;
  r.accuracy = r.images ? double(correct) / double(r.images) : 0;
  return r;
}

// eval --predictions: "index,label,predicted" per test image, in the data set's order.
std::string predictions_csv(const std::vector<train::Prediction>& predictions) {
  std::string csv = "index,label,predicted\n";
  for (size_t i = 0; i < predictions.size(); ++i)
    csv += std::to_string(i) + "," + std::to_string(predictions[i].label) + "," +
           std::to_string(predictions[i].predicted) + "\n";
  return csv;
}

// eval --ptq: the range-linear post-training quantization sweep of a float run (train/ptq.h): one
// table (float first, then each W/A setting: accuracy, drop from float); --predictions P writes the
// float model's to P and each setting's to P with its tag before the extension (p.w4a4.csv).
int run_eval_ptq(const Options& o) {
  const std::vector<train::PtqSetting> settings = train::parse_ptq_settings(o.str("ptq"));
  train::PtqOptions po;
  po.per_channel = o.flag("ptq-per-channel");
  po.fold_bn = o.flag("ptq-fold-bn");
  if (o.has("ptq-calib-batches")) po.calib_batches = o.integer("ptq-calib-batches");
  LOWBIT_CHECK(po.calib_batches >= 1, "--ptq-calib-batches must be >= 1, got ", po.calib_batches);
  if (o.has("ptq-first-last")) {
    const int64_t bits = o.integer("ptq-first-last");
    LOWBIT_CHECK(bits == 32 || (bits >= 2 && bits <= 16), "--ptq-first-last ", bits,
                 ": bits must be 2..16 (32: float)");
    po.first_last_bits = int(bits);
  }
  po.predictions = o.has("predictions");
  for (const char* key : {"quant", "wbits", "abits", "wbits-overrides", "weight-scale", "learned-levels"})
    LOWBIT_CHECK(!o.has(key), "--ptq quantizes the float model by itself; it does not combine with --", key);
  for (const char* key : {"quantize-first-last", "double"})
    LOWBIT_CHECK(!o.flag(key), "--ptq quantizes the float model by itself; it does not combine with --", key,
                 key == std::string("quantize-first-last") ? " (see --ptq-first-last)" : "");
  const std::string path = o.str("checkpoint");
  Options run = run_options(path);
  LOWBIT_CHECK(run.str("quant") == "none", "--ptq: ", path, " was trained with --quant ", run.str("quant"),
               " (quantization-aware); --ptq quantizes a float run (--quant none). Evaluate it without --ptq");
  if (o.has("data")) run.set("data", o.str("data"), "--data");
  if (o.has("test-file")) run.set("test-file", o.str("test-file"), "--test-file");
  drop_regularizer(run, "eval --ptq");  // a float run's regularizer does not change its model
  Run r = load_run(path, run, /*post_training=*/false);
  auto calib = train::calibration_loader(r.data, run.integer("batch"), static_cast<uint64_t>(run.integer("seed")));
  std::printf("%s on %s (%lld images)\n", run.str("model").c_str(), r.data.test.source.c_str(),
              (long long)r.data.test.size());
  po.progress = [](const train::PtqSweep& p) {  // the table, a row as each setting is done
    std::printf("%s", (p.rows.empty() ? train::format_ptq_head(p) : train::format_ptq_row(p.rows.back())).c_str());
  };
  const train::PtqSweep s = train::ptq_sweep(*r.model, *calib, *r.data.test_loader, settings, po);
  if (o.flag("verbose")) std::printf("%s", train::format_ptq_ranges(s).c_str());
  if (o.has("ptq-ranges")) write_file_atomic(o.str("ptq-ranges"), train::ptq_ranges_csv(s));
  if (po.predictions) {
    write_file_atomic(o.str("predictions"), predictions_csv(s.float_predictions));
    for (const auto& row : s.rows)
      write_file_atomic(train::ptq_predictions_path(o.str("predictions"), row.setting),
                        predictions_csv(row.predictions));
  }
  return 0;
}

int run_eval(int argc, char** argv) {
  Options o("eval",
            {{"checkpoint", "", "checkpoint file (a run's checkpoint.ckpt)"},
             {"data", "", "data set (default: the run's)"},
             {"test-file", "", "evaluate on this CIFAR-10/100 binary batch instead of the test split"},
             {"predictions", "", "write each test image's label and predicted class to this CSV file"},
             {"threads", "", "threads"},
             {"double", "",
              "run the model in double precision (the simulated quantization without float32 rounding: the "
              "reference the integer engine of lowbit infer reproduces)",
              true},
             // Post-training quantization: these override the run's quantization config.
             {"quant", "", "weight quantizer to evaluate with (post-training; default: the run's)"},
             {"wbits", "", "weight bits (sign included) with --quant"},
             {"abits", "", "activation bits with --quant (default 32: the weights only)"},
             {"wbits-overrides", "", "per-layer weight bits: PATTERN=BITS,..."},
             {"weight-scale", "", "none | max | tanh (wrpn: quantize w / max|w| per layer)"},
             {"quantize-first-last", "", "quantize the first and last layers too", true},
             {"learned-levels", "", "WaveQ learned bits round to: auto | period | integer (default: the run's)"},
             // Range-linear post-training quantization of a float run (train/ptq.h, spec §8.7).
             {"ptq", "",
              "post-training quantization sweep of a float run at W/A bit settings, e.g. 8/8,6/6,4/4 (2..16; 32: "
              "float): weights symmetric, activations asymmetric from calibrated min/max, every layer; one table"},
             {"ptq-per-channel", "", "--ptq: weight ranges per output channel (default: per tensor)", true},
             {"ptq-fold-bn", "", "--ptq: round each conv's weights with its batch norm folded in, as deployed", true},
             {"ptq-calib-batches", "", "--ptq: training batches (no augmentation) giving the activation ranges (10)"},
             {"ptq-first-last", "", "--ptq: bits of the first and last layers, e.g. 8 (default: the setting's)"},
             {"ptq-ranges", "", "--ptq: write the calibrated activation ranges and the weight ranges to this CSV"},
             {"verbose", "", "--ptq: print the calibrated ranges", true}});
  o.parse(argc, argv);
  if (o.help_requested()) return std::printf("%s", o.usage().c_str()), 0;
  LOWBIT_CHECK(o.has("checkpoint"), "--checkpoint FILE is required");
  if (o.has("threads")) set_num_threads(static_cast<int>(o.integer("threads")));
  for (const char* key : {"ptq-calib-batches", "ptq-first-last", "ptq-ranges"})
    LOWBIT_CHECK(o.has("ptq") || !o.has(key), "--", key, " goes with --ptq");
  for (const char* key : {"ptq-per-channel", "ptq-fold-bn", "verbose"})
    LOWBIT_CHECK(o.has("ptq") || !o.flag(key), "--", key, " goes with --ptq");
  if (o.has("ptq")) return run_eval_ptq(o);
  Options run = run_options(o.str("checkpoint"));
  if (o.has("data")) run.set("data", o.str("data"), "--data");
  if (o.has("test-file")) run.set("test-file", o.str("test-file"), "--test-file");
  // --limit-train stays: the test images are normalised with the training images' statistics.
  run.set("allow-grid-mismatch", "true", "eval");  // the run trained with its grid
  bool post_training = false;                      // a quantization config given here, not trained with
  for (const char* key : {"quant", "wbits", "abits", "wbits-overrides", "weight-scale", "quantize-first-last"})
    if (o.has(key)) run.set(key, o.str(key), std::string("--") + key), post_training = true;
  if (post_training) {  // rounding only: the run's regularizer and its options do not apply
    drop_regularizer(run, "eval");
    if (!o.has("weight-scale")) run.set("weight-scale", "auto", "eval");
    if (!o.has("wbits-overrides")) run.set("wbits-overrides", "", "eval");
    run.set("gbits", "32", "eval");
    if (!o.has("abits")) run.set("abits", "32", "eval");  // weights only unless --abits
  }
  if (o.has("learned-levels")) run.set("learned-levels", o.str("learned-levels"), "--learned-levels");
  Run r = load_run(o.str("checkpoint"), run, post_training);
  train::TrainData& data = r.data;
  auto& model = r.model;
  auto& quant = r.quant;
  // The simulated model at its final bits (WaveQ: ceil(beta) + 1), as the report rounds it.
  if (quant && !post_training) quant->use_final_bits();
  std::vector<train::Prediction> predictions;
  train::EvalResult e;
  if (o.flag("double")) {
    model->to(DType::f64);
    e = evaluate_double(*model, data, predictions);
  } else {
    e = train::evaluate(*model, *data.test_loader, o.has("predictions") ? &predictions : nullptr);
  }
  if (o.has("predictions")) write_file_atomic(o.str("predictions"), predictions_csv(predictions));
  std::printf("%s on %s: test loss %.4f, accuracy %.2f%% (%lld images)\n", run.str("model").c_str(),
              data.test.source.c_str(), e.loss, 100 * e.accuracy, (long long)e.images);
  // The rounding report needs a quantizer or a sinusoid's levels: a float --reg grad-l1 run has none (--ptq).
  const bool report = quant && (quant->quantizes() || quant->regularized());
  if (report && o.flag("double")) {  // the report evaluates twice more: at double's cost, left out
    std::printf("(double precision: the quantization report is left out; run eval without --double for it)\n");
    return 0;
  }
  if (report) std::printf("%s", train::format_report(quant->final_report(*data.test_loader, post_training)).c_str());
  return 0;
}

// ---- export ----
// `lowbit export --entropy-code`'s account (spec methods.md §3.4): per layer, then both ratios.
void print_entropy_account(const deploy::EntropyAccount& a, int64_t file_bytes, int64_t packed_file_bytes,
                           int64_t fp32_bytes) {
  std::printf(
      "\nentropy coding (per layer the smallest of packed, Huffman (zeros an ordinary symbol) and Huffman with zero "
      "runs; docs/format.md)\n");
  std::printf("%-24s %10s %5s %9s %8s %10s %10s %10s %8s  %s\n", "layer", "weights", "bits", "sparsity", "symbols",
              "packed B", "huffman B", "rle B", "bits/w", "stored");
  for (const auto& l : a.layers)
    std::printf("%-24s %10lld %5d %9.4f %8lld %10lld %10lld %10s %8.3f  %s\n", l.name.c_str(), (long long)l.weights,
                l.bits, double(l.zeros) / double(l.weights), (long long)l.symbols, (long long)l.packed_bytes,
                (long long)l.huffman_bytes, l.rle_bytes >= 0 ? std::to_string(l.rle_bytes).c_str() : "-",
                l.stored_bits_per_weight(), deploy::storage_name(l.storage));
  std::printf("file: %lld bytes coded, %lld bytes packed (%.3f of the packed file)\n", (long long)file_bytes,
              (long long)packed_file_bytes, double(file_bytes) / double(packed_file_bytes));
  std::printf("compression ratio (file bytes): FP32 parameters %lld bytes / file %lld bytes = %.2fx\n",
              (long long)fp32_bytes, (long long)file_bytes, double(fp32_bytes) / double(file_bytes));
  std::printf(
      "compression ratio (spec formula): 32 N / sum_l (coded bits + table bits + 32) = 32 * %lld / %lld = %.2fx "
      "(each layer in the storage chosen, the smallest: packed bits, no table; Huffman: table 32 + 24 bits per "
      "symbol; Huffman with zero runs: stream with the runs' extra bits, table 32 + 40 bits per symbol; N without "
      "the low-order pass; scales, offsets, biases and the graph not counted)\n",
      (long long)a.formula_weights, (long long)a.formula_bits, a.formula_ratio());
}

int run_export(int argc, char** argv) {
  Options o("export", {{"checkpoint", "", "checkpoint file of a quantized run (a run's checkpoint.ckpt)"},
                       {"out", "", "the integer model file to write (.lbq)"},
                       {"data", "", "data set (default: the run's; its training images give the normalization)"},
                       {"c-header", "",
                        "also write the model as a C/C++ header FILE of const arrays (symbol: FILE's stem; "
                        "docs/embedding.md)"},
                       {"entropy-code", "",
                        "store each layer's weight codes Huffman-coded, or Huffman-coded with zero runs, where that "
                        "is smaller (file version 4, docs/format.md); print the compression ratios",
                        true}});
  o.parse(argc, argv);
  if (o.help_requested()) return std::printf("%s", o.usage().c_str()), 0;
  LOWBIT_CHECK(o.has("checkpoint") && o.has("out"), "--checkpoint FILE and --out FILE are required");
  const std::string path = o.str("checkpoint");
  Options run = run_options(path);
  if (o.has("data")) run.set("data", o.str("data"), "--data");
  run.set("allow-grid-mismatch", "true", "export");
  LOWBIT_CHECK(wants_quantization(run), path,
               ": the run is not quantized (--quant none); export needs a quantized run");
  Run r = load_run(path, run, false);
  r.quant->use_final_bits();
  deploy::ExportOptions eo;
  eo.model_name = run.str("model");
  eo.channels = r.data.train.channels(), eo.height = r.data.train.height(), eo.width = r.data.train.width();
  eo.mean = r.data.mean, eo.std = r.data.std;
  eo.source = path;
  deploy::ExportResult ex = deploy::export_model(*r.model, r.quant->quantization(), eo);
  const int64_t packed_bytes = int64_t(deploy::serialize_model(ex.model).size());
  deploy::EntropyAccount coded;
  if (o.flag("entropy-code")) coded = deploy::entropy_code(ex.model);
  deploy::save_model(o.str("out"), ex.model);
  const auto bytes = int64_t(std::filesystem::file_size(o.str("out")));
  std::printf("%-24s %8s %8s %10s  %s\n", "layer", "trained", "stored", "weights", "weights in the file");
  for (const auto& l : ex.layers) {
    const std::string weights = l.exact      ? "exact codes"
                                : l.low_bits ? detail::concat("16 bits per output channel, the remainder at ",
                                                              l.low_bits, " bits (lossy, ~1e-7)")
                                             : std::string("rounded to 16 bits per output channel (lossy, ~1e-5)");
    const std::string out = l.out_bits                ? detail::concat(", output activations ", l.out_bits, " bits")
                            : &l == &ex.layers.back() ? std::string(", float logits")
                                                      : std::string(", int32 accumulators (a residual)");
    std::printf("%-24s %8s %8d %10lld  %s%s\n", l.name.c_str(),
                l.trained_bits >= 32 ? "fp32" : std::to_string(l.trained_bits).c_str(), l.stored_bits,
                (long long)l.weights, weights.c_str(), out.c_str());
  }
  std::printf("%s: %lld bytes; FP32 parameters %lld bytes: %.2fx smaller (%.3f of FP32)\n", o.str("out").c_str(),
              (long long)bytes, (long long)ex.fp32_parameter_bytes, double(ex.fp32_parameter_bytes) / double(bytes),
              double(bytes) / double(ex.fp32_parameter_bytes));
  if (o.flag("entropy-code")) print_entropy_account(coded, bytes, packed_bytes, ex.fp32_parameter_bytes);
  if (o.has("c-header")) {
    const std::string header = o.str("c-header");
    const std::string symbol = deploy::c_identifier(std::filesystem::path(header).stem().string());
    deploy::write_c_header(header, ex.model, symbol);
    std::printf("%s: C header, the model file as %s_lbq[%s_lbq_size] (lowbit_runtime::Model::from_memory)\n",
                header.c_str(), symbol.c_str(), symbol.c_str());
  }
  return 0;
}

// ---- infer ----
int run_infer(int argc, char** argv) {
  Options o("infer", {{"model-file", "", "integer model file (.lbq, from lowbit export)"},
                      {"data", "fashion-mnist", "data set whose test images to run (as lowbit train's --data)"},
                      {"test-file", "", "a CIFAR-10/100 binary batch instead of the test split"},
                      {"limit-test", "", "only the first N test images"},
                      {"predictions", "", "write each test image's label and predicted class to this CSV file"},
                      {"batch", "128", "images per engine call"},
                      {"threads", "", "threads"},
                      {"reference", "", "run the _ref kernels (slow; the fast path's bit-exact twin)", true},
                      {"profile", "", "print each op's share of the time", true},
                      {"int8-winograd", "on", "on | off: exact Winograd F(2x2, 3x3) for the layers that qualify"},
                      {"fp32-checkpoint", "", "also time the run's float model (same net, batch and threads)"}});
  o.parse(argc, argv);
  if (o.help_requested()) return std::printf("%s", o.usage().c_str()), 0;
  LOWBIT_CHECK(o.has("model-file"), "--model-file FILE is required");
  if (o.has("threads")) set_num_threads(static_cast<int>(o.integer("threads")));
  deploy::Engine engine(deploy::load_model(o.str("model-file")), o.str("model-file"),
                        deploy::EngineOptions{.winograd = winograd_option(o)});
  data::DataSplits splits = data::load_dataset(o.str("data"));
  if (o.has("test-file")) {
    const std::string kind = o.str("data").substr(0, o.str("data").find(':'));
    splits.test = kind == "cifar10" ? data::read_cifar10({o.str("test-file")})
                                    : data::read_cifar100(o.str("test-file"), kind == "cifar100");
  }
  data::ImageDataset test = splits.test;
  if (o.has("limit-test")) test = test.subset(0, std::min(o.integer("limit-test"), test.size()));
  LOWBIT_CHECK(
      test.channels() == engine.channels() && test.height() == engine.height() && test.width() == engine.width(),
      o.str("model-file"), " takes ", engine.height(), "x", engine.width(), "x", engine.channels(), " images; ",
      test.source, " has ", test.height(), "x", test.width(), "x", test.channels());
  const int64_t n = test.size(), B = o.integer("batch"), classes = engine.classes();
  LOWBIT_CHECK(B >= 1, "--batch must be >= 1");
  const Tensor pixels = test.images.contiguous();
  const Tensor labels = test.labels.contiguous();
  const uint8_t* px = pixels.data<uint8_t>();
  const int32_t* y = labels.data<int32_t>();
  const int64_t image = engine.height() * engine.width() * engine.channels();
  const auto path = o.flag("reference") ? deploy::Engine::Path::reference : deploy::Engine::Path::fast;
  std::vector<float> logits(size_t(n * classes));
  engine.run(px, std::min(B, n), logits.data(), path);  // warm-up (buffers, caches)
  engine.set_profiling(o.flag("profile"));
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < n; i += B) engine.run(px + i * image, std::min(B, n - i), logits.data() + i * classes, path);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t correct = 0;
  std::string csv = "index,label,predicted\n";
  for (int64_t i = 0; i < n; ++i) {
    const float* l = logits.data() + i * classes;
    const int64_t p = std::max_element(l, l + classes) - l;
    correct += p == y[i];
    if (o.has("predictions")) csv += detail::concat(i, ",", y[i], ",", p, "\n");
  }
  if (o.has("predictions")) write_file_atomic(o.str("predictions"), csv);
  const std::string chunks =
      o.flag("reference") ? std::string()
      : engine.runs_layer_by_layer(B)
          ? std::string(", layer by layer")
          : detail::concat(", image-parallel chunks of <= ",
                           std::min(engine.chunk_images(), (B + num_threads() - 1) / num_threads()), " images");
  std::printf("%s on %s: accuracy %.2f%% (%lld images), %.1f img/s (batch %lld, %d threads, %s kernels%s)\n",
              o.str("model-file").c_str(), test.source.c_str(), 100.0 * double(correct) / double(n), (long long)n,
              double(n) / secs, (long long)B, num_threads(), o.flag("reference") ? "_ref" : "integer", chunks.c_str());
  if (o.has("fp32-checkpoint")) {  // the same net in float: eval mode, no grad, the same batches
    Options run = run_options(o.str("fp32-checkpoint"));
    run.set("quant", "none", "infer --fp32-checkpoint");
    drop_regularizer(run, "infer --fp32-checkpoint");
    Run r = load_run(o.str("fp32-checkpoint"), run, /*post_training=*/true);
    r.model->eval();
    NoGradGuard ng;
    Generator gen(1);
    const Tensor x = Tensor::randn({B, engine.channels(), engine.height(), engine.width()}, gen)
                         .contiguous(MemoryFormat::channels_last);
    const Tensor tail = x.slice(0, 0, n % B ? n % B : B).contiguous(MemoryFormat::channels_last);
    (*r.model)(Variable(x));  // warm-up
    const auto f0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < n; i += B) (*r.model)(Variable(n - i >= B ? x : tail));
    const double fsecs = std::chrono::duration<double>(std::chrono::steady_clock::now() - f0).count();
    std::printf("FP32 (the run's float model, lowbit, batch %lld, %d threads): %.1f img/s; integer: %.2fx FP32\n",
                (long long)B, num_threads(), double(n) / fsecs, fsecs / secs);
  }
  if (o.flag("profile")) {
    const auto& ops = engine.model().ops;
    for (size_t i = 1; i < ops.size(); ++i) {
      const double t = engine.profile()[i];
      const bool weights = ops[i].kind == deploy::OpKind::conv || ops[i].kind == deploy::OpKind::linear;
      std::printf("  %3zu %-10s %-24s %8.3f ms/batch %5.1f%%%s\n", i, deploy::op_kind_name(ops[i].kind),
                  weights ? ops[i].layer.name.c_str() : "", 1e3 * t * double(B) / double(n), 100 * t / secs,
                  engine.winograd(i) ? "  winograd" : "");
    }
  }
  return 0;
}

// ---- compare ----
int run_compare(int argc, char** argv) {
  // Positional A B [PREFIX]; --tolerance T: tensors of the same dtype and shape whose elements differ
  // by at most T (absolute) count as equal (data-parallel runs, which reassociate sums).
  std::vector<std::string> pos;
  double tolerance = -1;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tolerance") {
      LOWBIT_CHECK(i + 1 < argc, "compare: --tolerance needs a value");
      char* end = nullptr;
      tolerance = std::strtod(argv[++i], &end);
      LOWBIT_CHECK(end && *end == 0 && tolerance >= 0, "compare: --tolerance '", argv[i], "' is not a number >= 0");
    } else {
      pos.push_back(a);
    }
  }
  LOWBIT_CHECK(pos.size() == 2 || pos.size() == 3,
               "usage: lowbit compare A.ckpt B.ckpt [PREFIX] [--tolerance T]   (exit 0 when every tensor is "
               "bit-identical, or with --tolerance within T of the other)");
  const std::string prefix = pos.size() == 3 ? pos[2] : "";
  const auto a = load_checkpoint(pos[0]).tensors_with_prefix(prefix);
  const auto b = load_checkpoint(pos[1]).tensors_with_prefix(prefix);
  int64_t differ = 0;
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    if (it == b.end()) {
      std::printf("only in %s: %s\n", pos[0].c_str(), name.c_str());
      ++differ;
      continue;
    }
    const Tensor& u = it->second;
    const bool same = t.dtype() == u.dtype() && t.shape() == u.shape() &&
                      std::memcmp(t.contiguous().data_ptr(), u.contiguous().data_ptr(),
                                  size_t(t.numel()) * dtype_size(t.dtype())) == 0;
    if (same) continue;
    const double diff = t.shape() == u.shape() ? max_abs_diff(t.to(DType::f64), u.to(DType::f64)) : -1.0;
    if (tolerance >= 0 && t.dtype() == u.dtype() && diff >= 0 && diff <= tolerance) {
      if (diff > worst) worst = diff, worst_name = name;
      continue;
    }
    std::printf("differs: %s (max |a-b| = %g)\n", name.c_str(), diff);
    ++differ;
  }
  for (const auto& [name, t] : b)
    if (!a.count(name)) std::printf("only in %s: %s\n", pos[1].c_str(), name.c_str()), ++differ;
  std::printf("%lld tensors compared, %lld differ", (long long)a.size(), (long long)differ);
  if (tolerance >= 0)
    std::printf(" by more than %g (largest within it: %g%s%s)", tolerance, worst, worst_name.empty() ? "" : " in ",
                worst_name.c_str());
  std::printf("\n");
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
    if (cmd == "dcq") return run_dcq(argc - 2, argv + 2);
    if (cmd == "releq") return run_releq(argc - 2, argv + 2);
    if (cmd == "eval") return run_eval(argc - 2, argv + 2);
    if (cmd == "export") return run_export(argc - 2, argv + 2);
    if (cmd == "infer") return run_infer(argc - 2, argv + 2);
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
