#include "cli/releq.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "cli/trainer.h"
#include "core/parallel.h"
#include "core/random.h"
#include "core/serialize.h"
#include "layers/norm.h"
#include "optim/schedule.h"
#include "train/evaluate.h"
#include "train/releq.h"

namespace lowbit::cli {
namespace {

std::vector<int> parse_bits(const std::string& s) {
  std::vector<int> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    LOWBIT_CHECK(end != item.c_str() && *end == '\0' && v >= 2 && v <= 16, "--bits '", s,
                 "': expected bitwidths from 2 to 16, comma-separated");
    out.push_back(int(v));
  }
  LOWBIT_CHECK(out.size() >= 2, "--bits '", s, "': the agent needs at least two choices");
  return out;
}

std::string pct(double a) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f%%", 100 * a);
  return b;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string json_bits(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(v[i]);
  }
  return s + "]";
}

}  // namespace

std::vector<OptionSpec> releq_option_specs() {
  std::vector<OptionSpec> s;
  // lowbit train's options that apply, some with ReLeQ's defaults (§5.1: lr 1e-3 fine-tunes).
  const std::map<std::string, std::string> defaults = {{"lr", "1e-3"}, {"wd", "1e-4"}, {"batch", "64"}};
  for (const OptionSpec& o : train_option_specs()) {
    for (const char* k :
         {"model", "data", "batch", "optimizer", "lr", "momentum", "nesterov", "wd", "schedule", "augment", "width",
          "variant", "limit-train", "limit-test", "test-file", "seed", "threads", "init", "quiet"})
      if (o.key == k) {
        OptionSpec c = o;
        if (defaults.count(o.key)) c.default_value = defaults.at(o.key);
        if (o.key == "init") c.help = "the float network: a training checkpoint (required)";
        if (o.key == "schedule") c.help = "lr schedule of the final fine-tune (the oracle's are constant)";
        s.push_back(c);
      }
  }
  for (OptionSpec o : std::vector<OptionSpec>{
           {"out", "runs/releq", "run folder (cache, episode log, agent checkpoint, result, final fine-tune)"},
           {"resume", "", "continue the search of --out (its config.txt, cache and agent checkpoint)", true},
           {"quant", "dorefa", "the weight quantizer of the bit vectors: dorefa | wrpn (activations stay float)"},
           {"weight-scale", "auto", "what the quantizer sees: auto | none | max | tanh"},
           {"first-last", "quantize",
            "the first and last layers: quantize (in the bit vector, the official LeNet/SVHN lists) | float"},
           {"episodes", "100", "episodes of the search (the official runs use 700-2000)"},
           {"episodes-per-update", "8", "episodes per PPO update of the agent"},
           {"oracle-epochs", "1", "fine-tune epochs of each bit vector (§5.1's table: 1-10)"},
           {"oracle-batches", "", "fine-tune each bit vector for this many batches instead (a fraction of an epoch)"},
           {"val-size", "", "training images held out for the oracle's validation (default: a tenth, at most 5000)"},
           {"reward", "B", "reward shape (§5.1): A (releq_lenet.py) | B (ppo_all_layers.py)"},
           {"policy", "lstm", "agent network: lstm | mlp"},
           {"bits", "2,3,4,5,8", "the bitwidths the agent chooses from"},
           {"agent-lr", "1e-4", "the agent's Adam learning rate"},
           {"gamma", "0.9", "the agent's discount"},
           {"final-epochs", "5", "fine-tune epochs of the best bit vector (0: none, no test evaluation)"},
           {"stop-after-episodes", "", "stop after this many episodes of this run (tests; continue with --resume)"},
       })
    s.push_back(o);
  return s;
}

int run_releq(int argc, char** argv) {
  const char* world = std::getenv("OMPI_COMM_WORLD_SIZE");
  LOWBIT_CHECK(!world || std::atoi(world) <= 1,
               "lowbit releq runs in one process (its oracle's fine-tunes are "
               "short and many); under mpirun -np ",
               world, " every rank would search alone");
  Options opts("releq", releq_option_specs());
  opts.parse(argc, argv);
  if (opts.help_requested()) return std::printf("%s", opts.usage().c_str()), 0;
  const bool resume = opts.flag("resume");
  const std::string out = opts.str("out");
  if (resume) {  // the run's options, this command's flags on top
    const std::string cfg = out + "/config.txt";
    LOWBIT_CHECK(std::filesystem::exists(cfg), "--resume: there is no ", cfg,
                 " (the search never started in --out); start it without --resume");
    Options fresh = opts.fresh();
    fresh.load_config_text(read_text(cfg), cfg);
    fresh.set("stop-after-episodes", "", "resume");
    fresh.parse(argc, argv);
    opts = fresh;
  }
  LOWBIT_CHECK(opts.has("init"), "--init CHECKPOINT (the trained float network) is required");
  const std::string method = opts.str("quant");
  LOWBIT_CHECK(method == "dorefa" || method == "wrpn", "--quant '", method,
               "': ReLeQ quantizes weights with dorefa or wrpn (§5.1)");
  const std::string first_last = opts.str("first-last");
  LOWBIT_CHECK(first_last == "quantize" || first_last == "float", "--first-last '", first_last,
               "' is not quantize or float");
  LOWBIT_CHECK(!opts.has("oracle-batches") || opts.integer("oracle-batches") >= 1, "--oracle-batches must be >= 1");
  LOWBIT_CHECK(opts.integer("oracle-epochs") >= 1, "--oracle-epochs must be >= 1");
  const std::string policy = opts.str("policy");
  LOWBIT_CHECK(policy == "lstm" || policy == "mlp", "--policy '", policy, "' is not lstm or mlp");
  const train::ReleqRewardShape shape = train::parse_reward_shape(opts.str("reward"));
  const std::vector<int> choices = parse_bits(opts.str("bits"));
  const int64_t final_epochs = opts.integer("final-epochs");
  LOWBIT_CHECK(final_epochs >= 0, "--final-epochs must be >= 0");
  if (opts.has("threads")) set_num_threads(static_cast<int>(opts.integer("threads")));
  manual_seed(static_cast<uint64_t>(opts.integer("seed")));

  train::TrainData data = train::load_data(data_config(opts, opts.integer("batch")));
  const int64_t n_train = data.train.size();
  const int64_t val_size =
      opts.has("val-size") ? opts.integer("val-size") : std::max<int64_t>(1, std::min<int64_t>(5000, n_train / 10));
  const train::ReleqSplit split = train::releq_split(data.train, val_size);
  data::DataLoader fit_loader(split.fit, data.train_loader->options());
  data::DataLoader val_loader(split.val, data.test_loader->options());

  auto model = train::create_model(opts.str("model"), data, opts.real("width"), opts.str("variant"));
  load_init(*model, opts.str("init"), opts.str("model"));
  print_run_header(opts, *model, data);
  std::printf("oracle: fine-tune on %lld training images, validate on the last %lld (held out); test set untouched\n",
              (long long)split.fit.size(), (long long)split.val.size());
  std::filesystem::create_directories(out);
  if (!resume) write_file_atomic(out + "/config.txt", opts.to_config());

  train::ReleqOracleOptions oo;
  oo.method = method;
  oo.quantize_first_last = first_last == "quantize";
  oo.weight_scale = opts.str("weight-scale");
  oo.epochs = opts.integer("oracle-epochs");
  oo.batches = opts.has("oracle-batches") ? opts.integer("oracle-batches") : 0;
  oo.base = base_group(opts);
  const std::string kind = opts.str("optimizer");
  oo.make_optimizer = [kind](std::vector<optim::ParamGroup> g) { return make_optimizer(kind, std::move(g)); };
  oo.seed = static_cast<uint64_t>(opts.integer("seed"));
  oo.cache_path = out + "/cache.jsonl";
  oo.config_note = "model=" + opts.str("model") + " width=" + opts.str("width") + " variant=" + opts.str("variant") +
                   " data=" + opts.str("data") + " init=" + opts.str("init") + " optimizer=" + kind +
                   " limit_train=" + opts.str("limit-train") + " augment=" + opts.str("augment");
  bool has_bn = false;
  model->apply([&](const std::string&, Module& m) { has_bn |= dynamic_cast<BatchNormBase*>(&m) != nullptr; });
  if (method == "dorefa" && !has_bn)
    std::printf(
        "note: DoReFa puts the weights on [-1, 1] whatever their scale; the official ReLeQ nets have BatchNorm, "
        "this one has none: if the accuracies collapse, use --quant wrpn --weight-scale max\n");
  train::ReleqOracle oracle(*model, fit_loader, val_loader, oo);
  const auto& layers = oracle.layers();
  std::printf("%zu layers to assign (%s weights, activations float):\n", layers.size(), method.c_str());
  std::printf("  %-24s %8s %8s %4s %10s %10s\n", "layer", "n", "c", "k", "std(W)", "weights");
  for (const auto& l : layers)
    std::printf("  %-24s %8lld %8lld %4lld %10.5f %10lld\n", l.name.c_str(), (long long)l.n, (long long)l.c,
                (long long)l.k, l.std, (long long)l.weights);
  std::printf("float model: validation accuracy %s; cache %s: %zu bit vectors\n", pct(oracle.float_accuracy()).c_str(),
              oo.cache_path.c_str(), oracle.cache_size());

  train::ReleqSearchOptions so;
  so.episodes = opts.integer("episodes");
  so.episodes_per_update = opts.integer("episodes-per-update");
  so.reward.shape = shape;
  so.reward.b_min = *std::min_element(choices.begin(), choices.end());
  so.reward.b_max = 8;  // §5.1: b_max = 8 (StateQuant's denominator)
  so.agent.bit_choices = choices;
  so.agent.net = policy == "lstm" ? train::ReleqNet::lstm : train::ReleqNet::mlp;
  so.agent.lr = opts.real("agent-lr");
  so.agent.gamma = opts.real("gamma");
  so.agent.seed = static_cast<uint64_t>(opts.integer("seed"));
  so.seed = static_cast<uint64_t>(opts.integer("seed"));
  so.out = out;
  so.resume = resume;
  so.stop_after_episodes = opts.has("stop-after-episodes") ? opts.integer("stop-after-episodes") : -1;
  int64_t hits = 0;
  so.on_episode = [&](const train::ReleqEpisodeRecord& r) {
    hits += r.cache_hit;
    std::printf("episode %lld/%lld: bits %s  avg %.2f  acc %s  reward %.4f%s  (cache hits %lld, fine-tunes %lld)\n",
                (long long)r.episode + 1, (long long)so.episodes, train::bits_key(r.bits).c_str(), r.average_bits,
                pct(r.accuracy).c_str(), r.reward, r.cache_hit ? "  cached" : "", (long long)hits,
                (long long)oracle.fine_tunes());
  };
  const train::ReleqSearchResult res = train::releq_search(oracle, so);
  if (!res.finished) {
    std::printf("stopped after episode %lld of %lld; continue with lowbit releq --out %s --resume\n",
                (long long)res.episodes, (long long)so.episodes, out.c_str());
    return 0;
  }
  std::printf("search done: %lld episodes, %lld from the cache, %zu bit vectors fine-tuned in all\n",
              (long long)res.episodes, (long long)res.cache_hits, oracle.cache_size());
  std::printf("best bits (reward %.4f):\n", res.best_reward);
  for (size_t i = 0; i < layers.size(); ++i) std::printf("  %-24s %d\n", layers[i].name.c_str(), res.best_bits[i]);
  std::printf("average bits %.2f; validation accuracy %s (float %s)\n", res.best_average_bits,
              pct(res.best_accuracy).c_str(), pct(oracle.float_accuracy()).c_str());
  std::string summary = "Best bits " + train::bits_key(res.best_bits) + " (" + opts.str("model") + ", " + method +
                        " weights): average " + detail::concat(res.best_average_bits) + " bits, validation accuracy " +
                        pct(res.best_accuracy) + " after the short fine-tune (float " + pct(oracle.float_accuracy()) +
                        ")";

  std::string result = "{\"best_bits\": " + json_bits(res.best_bits) + ", \"layers\": [";
  for (size_t i = 0; i < layers.size(); ++i) {
    if (i) result += ", ";
    result += "\"" + layers[i].name + "\"";
  }
  result += detail::concat("], \"average_bits\": ", res.best_average_bits, ", \"reward\": ", res.best_reward,
                           ", \"val_accuracy\": ", res.best_accuracy,
                           ", \"float_val_accuracy\": ", oracle.float_accuracy(), ", \"episodes\": ", res.episodes,
                           ", \"cache_hits\": ", res.cache_hits, ", \"bit_vectors_fine_tuned\": ", oracle.cache_size());
  if (final_epochs > 0) {
    // The final fine-tune, stored as a lowbit train run with the vector as --wbits-overrides.
    std::string overrides;
    for (size_t i = 0; i < layers.size(); ++i) {
      if (i) overrides += ',';
      overrides += layers[i].name + "=" + std::to_string(res.best_bits[i]);
    }
    Options t("train", train_option_specs());
    for (const char* k :
         {"model", "data", "batch", "optimizer", "lr", "momentum", "nesterov", "wd", "schedule", "augment", "width",
          "variant", "limit-train", "limit-test", "test-file", "seed", "weight-scale"})
      if (opts.has(k)) t.set(k, opts.str(k), "releq");
    t.set("epochs", std::to_string(final_epochs), "releq");
    t.set("quant", method, "releq");
    t.set("wbits", "8", "releq");
    t.set("abits", "32", "releq");
    if (first_last == "quantize") t.set("quantize-first-last", "true", "releq");
    t.set("wbits-overrides", overrides, "releq");
    t.set("out", out + "/final", "releq");
    train::FitOptions fo;
    fo.epochs = final_epochs;
    fo.schedule = optim::parse_schedule(opts.str("schedule"), final_epochs);
    fo.out = out + "/final";
    fo.config_text = t.to_config();
    fo.verbose = 0;
    fo.on_epoch = [&](const train::EpochRecord& r) {
      std::printf("final fine-tune epoch %lld/%lld: train loss %.4f, validation accuracy %s\n", (long long)r.epoch,
                  (long long)r.epochs, r.train_loss, pct(r.test.accuracy).c_str());
    };
    std::printf("final fine-tune of the best bits: %lld epochs\n", (long long)final_epochs);
    const train::FitResult fr = oracle.fine_tune(res.best_bits, fo);
    if (!fr.finished) return fr.interrupted ? 130 : 0;
    const train::EvalResult val = train::evaluate(*model, val_loader);
    const train::EvalResult test = train::evaluate(*model, *data.test_loader);
    const train::EvalResult ftest = oracle.evaluate_float(*data.test_loader);
    std::printf("final: validation accuracy %s; test accuracy %s vs the float model's %s (%+.2f points), %s\n",
                pct(val.accuracy).c_str(), pct(test.accuracy).c_str(), pct(ftest.accuracy).c_str(),
                100 * (test.accuracy - ftest.accuracy), data.test.source.c_str());
    summary += "; after " + std::to_string(final_epochs) + " fine-tune epochs: test accuracy " + pct(test.accuracy) +
               " vs the float model's " + pct(ftest.accuracy);
    result +=
        detail::concat(", \"final_epochs\": ", final_epochs, ", \"final_val_accuracy\": ", val.accuracy,
                       ", \"final_test_accuracy\": ", test.accuracy, ", \"float_test_accuracy\": ", ftest.accuracy);
  }
  write_file_atomic(out + "/result.json", result + "}\n");
  summary += detail::concat(
      "; ", res.episodes, " episodes (reward ", opts.str("reward"), ", ", policy, " agent), ", res.cache_hits,
      " answered from the cache, ", oracle.cache_size(), " bit vectors fine-tuned for ",
      oo.batches > 0 ? std::to_string(oo.batches) + " batches" : std::to_string(oo.epochs) + " epochs", " each.");
  train::write_releq_report(out + "/report.html", oracle, res, so.episodes_per_update, summary);
  if (final_epochs > 0)
    std::printf(
        "run folder: %s (result.json, report.html; the final model: lowbit eval --checkpoint "
        "%s/final/checkpoint.ckpt)\n",
        out.c_str(), out.c_str());
  else
    std::printf("run folder: %s (result.json, report.html)\n", out.c_str());
  return 0;
}

}  // namespace lowbit::cli
