// ReLeQ (spec §5): the oracle, the states, the rewards and the search loop.
#include "train/releq.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/random.h"
#include "core/serialize.h"
#include "layers/conv.h"
#include "layers/linear.h"
#include "optim/sgd.h"
#include "quant/report.h"
#include "train/evaluate.h"

namespace lowbit::train {
namespace {

constexpr double kBMax = 8;  // §5.1: b_max = 8 in the state

std::string num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);  // exact round trip: a resumed search sees the same rewards
  return buf;
}

std::string json_string(const std::string& s) {
  std::string r = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') r += '\\';
    r += ch == '\n' ? ' ' : ch;
  }
  return r + "\"";
}

std::string json_ints(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(v[i]);
  }
  return s + "]";
}

// Minimal readers of the lines this file writes: `"key": value`.
bool find_value(const std::string& line, const std::string& key, size_t& pos) {
  const std::string k = "\"" + key + "\": ";
  const size_t at = line.find(k);
  if (at == std::string::npos) return false;
  pos = at + k.size();
  return true;
}

bool read_number(const std::string& line, const std::string& key, double& out) {
  size_t p = 0;
  if (!find_value(line, key, p)) return false;
  char* end = nullptr;
  out = std::strtod(line.c_str() + p, &end);
  return end != line.c_str() + p;
}

bool read_bool(const std::string& line, const std::string& key, bool& out) {
  size_t p = 0;
  if (!find_value(line, key, p)) return false;
  if (line.compare(p, 4, "true") == 0) return out = true, true;
  if (line.compare(p, 5, "false") == 0) return out = false, true;
  return false;
}

bool read_ints(const std::string& line, const std::string& key, std::vector<int>& out) {
  size_t p = 0;
  if (!find_value(line, key, p) || p >= line.size() || line[p] != '[') return false;
  const size_t close = line.find(']', p);
  if (close == std::string::npos) return false;
  out.clear();
  std::stringstream in(line.substr(p + 1, close - p - 1));
  for (std::string item; std::getline(in, item, ',');) {
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (end == item.c_str()) return false;
    out.push_back(int(v));
  }
  return true;
}

bool read_string(const std::string& line, const std::string& key, std::string& out) {
  size_t p = 0;
  if (!find_value(line, key, p) || p >= line.size() || line[p] != '"') return false;
  out.clear();
  for (size_t i = p + 1; i < line.size(); ++i) {
    if (line[i] == '\\' && i + 1 < line.size()) {
      out += line[++i];
    } else if (line[i] == '"') {
      return true;
    } else {
      out += line[i];
    }
  }
  return false;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) lines.push_back(l);
  return lines;
}

void make_parent(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
}

// The default generator at `seed` while alive, then back where it was.
struct SeededDefaultGenerator {
  uint64_t seed, offset;
  explicit SeededDefaultGenerator(uint64_t s) : seed(default_generator().seed()), offset(default_generator().offset()) {
    manual_seed(s);
  }
  ~SeededDefaultGenerator() { default_generator().set_state(seed, offset); }
};

double population_std(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double m = 0;
  for (double x : v) m += x;
  m /= double(v.size());
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size()));
}

}  // namespace

std::string bits_key(const std::vector<int>& bits) {
  std::string s;
  for (size_t i = 0; i < bits.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(bits[i]);
  }
  return s;
}

ReleqSplit releq_split(const data::ImageDataset& train, int64_t val_size) {
  const int64_t n = train.size();
  LOWBIT_CHECK(val_size >= 1 && val_size < n, "ReLeQ: the validation split (--val-size ", val_size,
               ") must hold at least one image and leave at least one of the ", n, " training images");
  ReleqSplit s{train.subset(0, n - val_size), train.subset(n - val_size, n)};
  s.val.source = train.source + " (last " + std::to_string(val_size) + " training images, held out)";
  return s;
}

// ---- states and rewards ----

std::vector<double> releq_state(const std::vector<ReleqLayer>& layers, int64_t l, const std::vector<int>& bits) {
  const auto L = int64_t(layers.size());
  LOWBIT_CHECK(l >= 0 && l < L, "releq_state: layer ", l, " of ", L);
  auto norm = [&](auto field) {
    int64_t lo = field(layers[0]), hi = lo;
    for (const auto& x : layers) lo = std::min(lo, field(x)), hi = std::max(hi, field(x));
    const int64_t v = field(layers[size_t(l)]);
    return hi == lo ? 0.0 : double(v - lo) / double(hi - lo);  // all equal: 0 (the official code divides by 0)
  };
  double sum = 0;
  for (int64_t i = 0; i < L; ++i) sum += i < int64_t(bits.size()) ? bits[size_t(i)] : kBMax;
  const double b_l = l < int64_t(bits.size()) ? bits[size_t(l)] : kBMax;
  return {double(l + 1) / double(L),
          b_l / kBMax,
          sum / (kBMax * double(L)),
          norm([](const ReleqLayer& x) { return x.n; }),
          norm([](const ReleqLayer& x) { return x.c; }),
          norm([](const ReleqLayer& x) { return x.k; }),
          layers[size_t(l)].std};
}

double releq_reward(const ReleqReward& r, double x, double y) {
  const double x_min = double(r.b_min) / double(r.b_max);
  if (r.shape == ReleqRewardShape::A) {  // releq_lenet.py / ppo_lstm.py
    const double xp = std::max(0.0, x - x_min);
    const double base = 1 - std::pow(xp, r.a);
    if (y < r.th) return -1;
    return 2 * (base * std::pow(y, r.b / y) - 0.5);
  }
  // B (ppo_all_layers.py): the grid cell of (x, y), as the code indexes it.
  LOWBIT_CHECK(r.levels >= 2, "releq_reward: levels must be >= 2, got ", r.levels);
  auto cell = [&](double v) {
    const int i = std::clamp(int(v * r.levels) - 1, 0, r.levels - 1);
    return double(i) / double(r.levels - 1);
  };
  const double xi = cell(x), yj = cell(y);
  const double z = xi < x_min ? 0.0 : r.q_weight * (x_min - xi) + r.a_weight * yj;
  return 2 * std::max(z, 0.0);
}

ReleqRewardShape parse_reward_shape(const std::string& s) {
  if (s == "A" || s == "a") return ReleqRewardShape::A;
  if (s == "B" || s == "b") return ReleqRewardShape::B;
  throw Error("--reward '" + s + "' is not A or B");
}

// ---- the oracle ----

ReleqOracle::ReleqOracle(Module& model, data::DataLoader& fit, data::DataLoader& val, ReleqOracleOptions options)
    : model_(model), fit_(fit), val_(val), opt_(std::move(options)) {
  LOWBIT_CHECK(opt_.method == "dorefa" || opt_.method == "wrpn",
               "ReLeQ quantizes weights with dorefa or wrpn (§5.1), not '", opt_.method, "'");
  LOWBIT_CHECK(opt_.epochs >= 1 || opt_.batches >= 1, "ReLeQ: the oracle's fine-tune needs epochs or batches >= 1");
  for (const auto& [k, v] : model_.state_dict()) float_state_[k] = v.clone();
  float_eval_ = evaluate(model_, val_);  // before any quantizer: the float model
  attach({});
  const quant::Quantization& q = quant_->quantization();
  for (const quant::QuantizedLayer& ql : q.layers) {
    if (*ql.weight_bits >= 32) continue;  // first / last kept float
    ReleqLayer l;
    l.name = ql.name;
    const Tensor w = ql.weight().data();
    if (auto* conv = dynamic_cast<Conv2d*>(ql.module.get())) {
      l.n = conv->out_channels();
      l.c = w.size(1);  // in channels per group
      l.k = conv->kernel_size()[0];
    } else if (auto* fc = dynamic_cast<Linear*>(ql.module.get())) {
      l.n = fc->out_features();
      l.c = fc->in_features();
      l.k = 0;
    } else {
      l.n = w.size(0), l.c = w.dim() > 1 ? w.size(1) : 1, l.k = 0;
    }
    l.std = population_std(w.to_vector());
    l.weights = ql.numel();
    layers_.push_back(l);
  }
  LOWBIT_CHECK(!layers_.empty(), "ReLeQ: the model has no layer to quantize");
  if (!opt_.cache_path.empty()) load_cache();
}

std::string ReleqOracle::config_text() const {
  std::string names;
  for (const auto& l : layers_) names += (names.empty() ? "" : ",") + l.name;
  const optim::ParamGroup& b = opt_.base;
  return detail::concat("method=", opt_.method, " first_last=", opt_.quantize_first_last ? 1 : 0,
                        " weight_scale=", opt_.weight_scale, " epochs=", opt_.epochs, " batches=", opt_.batches,
                        " lr=", num(b.lr), " momentum=", num(b.momentum), " wd=", num(b.weight_decay),
                        " nesterov=", b.nesterov ? 1 : 0, " seed=", opt_.seed, " fit_images=", fit_.dataset().size(),
                        " val_images=", val_.dataset().size(), " batch=", fit_.options().batch_size, " layers=", names,
                        opt_.config_note.empty() ? "" : " " + opt_.config_note);
}

void ReleqOracle::restore_float() { model_.load_state_dict(float_state_); }

void ReleqOracle::attach(const std::vector<int>& bits) {
  restore_float();
  QuantSpec spec;
  spec.method = opt_.method;
  spec.wbits = 8;   // an episode starts from all-8 (§5.1)
  spec.abits = 32;  // weights only (YAML acts: null)
  spec.quantize_first_last = opt_.quantize_first_last;
  spec.weight_scale = opt_.weight_scale;
  quant_ = std::make_unique<QuantContext>(model_, spec);  // replaces the previous one's hooks
  if (bits.empty()) return;
  LOWBIT_CHECK(bits.size() == layers_.size(), "ReLeQ: a bit vector of ", bits.size(), " entries for ", layers_.size(),
               " layers");
  for (size_t i = 0; i < bits.size(); ++i) quant_->set_weight_bits(layers_[i].name, bits[i]);
}

bool ReleqOracle::cached(const std::vector<int>& bits) const { return cache_.count(bits_key(bits)) != 0; }

ReleqQuery ReleqOracle::query(const std::vector<int>& bits, int64_t episode) {
  const std::string key = bits_key(bits);
  if (auto it = cache_.find(key); it != cache_.end()) {
    ++hits_;
    return {it->second.accuracy, it->second.loss, false, it->second.episode, it->second.seconds};
  }
  const auto t0 = std::chrono::steady_clock::now();
  attach(bits);
  std::vector<optim::ParamGroup> groups = quant_->param_groups(opt_.base);
  std::unique_ptr<optim::Optimizer> opt =
      opt_.make_optimizer ? opt_.make_optimizer(std::move(groups)) : std::make_unique<optim::SGD>(std::move(groups));
  FitOptions fo;
  fo.verbose = 0;
  fo.checkpoint_every_seconds = 0;
  if (opt_.batches > 0) {
    const int64_t nb = std::max<int64_t>(1, fit_.num_batches());
    fo.epochs = (opt_.batches + nb - 1) / nb;
    fo.stop_after_batches = opt_.batches;
  } else {
    fo.epochs = opt_.epochs;
  }
  EvalResult v;
  {
    SeededDefaultGenerator seeded(opt_.seed);
    fit(model_, *opt, fit_, nullptr, fo, quant_.get());
    v = evaluate(model_, val_);
  }
  Entry e{v.accuracy, v.loss, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), episode};
  cache_[key] = e;
  order_.push_back(key);
  ++fine_tunes_;
  if (!opt_.cache_path.empty()) save_cache();
  return {e.accuracy, e.loss, true, e.episode, e.seconds};
}

FitResult ReleqOracle::fine_tune(const std::vector<int>& bits, const FitOptions& fo) {
  attach(bits);
  std::vector<optim::ParamGroup> groups = quant_->param_groups(opt_.base);
  std::unique_ptr<optim::Optimizer> opt =
      opt_.make_optimizer ? opt_.make_optimizer(std::move(groups)) : std::make_unique<optim::SGD>(std::move(groups));
  SeededDefaultGenerator seeded(opt_.seed);
  return fit(model_, *opt, fit_, &val_, fo, quant_.get());
}

EvalResult ReleqOracle::evaluate_float(data::DataLoader& loader) {
  std::map<std::string, Tensor> now;
  for (const auto& [k, v] : model_.state_dict()) now[k] = v.clone();
  const EvalResult r = quant_->quantization().with_weight_quantizers_off([&] {
    restore_float();
    return evaluate(model_, loader);
  });
  model_.load_state_dict(now);
  return r;
}

void ReleqOracle::load_cache() {
  if (!std::filesystem::exists(opt_.cache_path)) return;
  const std::vector<std::string> lines = read_lines(opt_.cache_path);
  if (lines.empty()) return;
  std::string config;
  LOWBIT_CHECK(read_string(lines[0], "config", config), "ReLeQ cache ", opt_.cache_path,
               ": the first line is not the cache's header");
  LOWBIT_CHECK(config == config_text(), "ReLeQ cache ", opt_.cache_path, " was made with other oracle settings (",
               config, "; now: ", config_text(), "); use another run folder or delete it");
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<int> bits;
    Entry e;
    double ep = -1;
    const bool ok = read_ints(lines[i], "bits", bits) && read_number(lines[i], "accuracy", e.accuracy) &&
                    read_number(lines[i], "loss", e.loss) && read_number(lines[i], "episode", ep) &&
                    bits.size() == layers_.size();
    LOWBIT_CHECK(ok, "ReLeQ cache ", opt_.cache_path, " line ", i + 1, " is not an entry for ", layers_.size(),
                 " layers: ", lines[i]);
    read_number(lines[i], "seconds", e.seconds);
    e.episode = int64_t(ep);
    const std::string key = bits_key(bits);
    if (!cache_.count(key)) order_.push_back(key);
    cache_[key] = e;
  }
}

void ReleqOracle::save_cache() const {
  std::string text = "{\"releq_cache\": 1, \"config\": " + json_string(config_text()) + "}\n";
  for (const std::string& key : order_) {
    const Entry& e = cache_.at(key);
    text += "{\"bits\": [" + key + "], \"accuracy\": " + num(e.accuracy) + ", \"loss\": " + num(e.loss) +
            ", \"seconds\": " + num(e.seconds) + ", \"episode\": " + std::to_string(e.episode) + "}\n";
  }
  make_parent(opt_.cache_path);
  write_file_atomic(opt_.cache_path, text);
}

// ---- the search ----

namespace {

std::string search_config(const ReleqSearchOptions& o, const ReleqOracle& oracle) {
  const ReleqAgentOptions& a = o.agent;
  std::vector<int> choices(a.bit_choices.begin(), a.bit_choices.end());
  return detail::concat("episodes_per_update=", o.episodes_per_update, " seed=", o.seed,
                        " reward=", o.reward.shape == ReleqRewardShape::A ? "A" : "B", " a=", num(o.reward.a),
                        " b=", num(o.reward.b), " th=", num(o.reward.th),
                        " net=", a.net == ReleqNet::lstm ? "lstm" : "mlp", " hidden=", a.hidden,
                        " bits=", bits_key(choices), " lr=", num(a.lr), " gamma=", num(a.gamma),
                        " ppo_epochs=", a.ppo_epochs, " agent_seed=", a.seed, " oracle: ", oracle.config_text());
}

std::string record_line(const ReleqEpisodeRecord& r) {
  return "{\"episode\": " + std::to_string(r.episode) + ", \"bits\": " + json_ints(r.bits) +
         ", \"reward\": " + num(r.reward) + ", \"average_bits\": " + num(r.average_bits) +
         ", \"accuracy\": " + num(r.accuracy) + ", \"cache_hit\": " + (r.cache_hit ? "true" : "false") + "}";
}

bool parse_record(const std::string& line, ReleqEpisodeRecord& r) {
  double e = 0;
  return read_number(line, "episode", e) && read_ints(line, "bits", r.bits) && read_number(line, "reward", r.reward) &&
         read_number(line, "average_bits", r.average_bits) && read_number(line, "accuracy", r.accuracy) &&
         read_bool(line, "cache_hit", r.cache_hit) && (r.episode = int64_t(e), true);
}

void note_best(ReleqSearchResult& res, const ReleqEpisodeRecord& r) {
  if (res.best_bits.empty() || r.reward > res.best_reward) {
    res.best_bits = r.bits;
    res.best_reward = r.reward;
    res.best_accuracy = r.accuracy;
    res.best_average_bits = r.average_bits;
  }
  if (r.cache_hit) ++res.cache_hits;
}

}  // namespace

ReleqSearchResult releq_search(ReleqOracle& oracle, const ReleqSearchOptions& o) {
  LOWBIT_CHECK(o.episodes >= 1, "ReLeQ: --episodes must be >= 1, got ", o.episodes);
  LOWBIT_CHECK(o.episodes_per_update >= 1, "ReLeQ: --episodes-per-update must be >= 1, got ", o.episodes_per_update);
  const std::vector<ReleqLayer>& layers = oracle.layers();
  const auto L = int64_t(layers.size());
  ReleqAgent agent(o.agent);
  Generator gen(o.seed);
  ReleqSearchResult res;
  int64_t start = 0;
  const std::string config = search_config(o, oracle);
  const std::string ckpt_path = o.out.empty() ? "" : o.out + "/agent.ckpt";
  const std::string log_path = o.out.empty() ? "" : o.out + "/episodes.jsonl";
  if (!o.out.empty()) std::filesystem::create_directories(o.out);
  if (o.resume && !o.out.empty() && std::filesystem::exists(ckpt_path)) {
    const Checkpoint c = load_checkpoint(ckpt_path);
    LOWBIT_CHECK(c.has("format") && c.get_string("format") == "lowbit-releq-agent", ckpt_path,
                 " is not a ReLeQ agent checkpoint");
    LOWBIT_CHECK(c.get_string("config") == config, "--resume: ", ckpt_path, " was made with other settings (",
                 c.get_string("config"), "; now: ", config, ")");
    agent.net().load_state_dict(c.tensors_with_prefix("net."));
    agent.optimizer().load_state_dict(c.tensors_with_prefix("optim."));
    gen.set_state(uint64_t(c.get_int("gen_seed")), uint64_t(c.get_int("gen_offset")));
    start = c.get_int("episodes");
  }
  if (!o.out.empty()) {
    // The log keeps the episodes the agent checkpoint has seen; those of an unfinished batch are redone.
    const std::vector<std::string> lines = o.resume ? read_lines(log_path) : std::vector<std::string>{};
    LOWBIT_CHECK(int64_t(lines.size()) >= start, "--resume: ", log_path, " has ", lines.size(),
                 " episodes, the agent checkpoint ", start);
    std::string kept;
    for (int64_t i = 0; i < start; ++i) {
      ReleqEpisodeRecord r;
      LOWBIT_CHECK(parse_record(lines[size_t(i)], r) && r.episode == i, "--resume: ", log_path, " line ", i + 1,
                   " is not episode ", i);
      kept += lines[size_t(i)] + "\n";
      note_best(res, r);
      res.history.push_back(std::move(r));
    }
    write_file_atomic(log_path, kept);
  }
  std::ofstream log;
  if (!log_path.empty()) log.open(log_path, std::ios::app);
  auto state_of = [&](int64_t l, const std::vector<int>& bits) { return releq_state(layers, l, bits); };
  const double acc_fp = oracle.float_accuracy();
  int64_t done = 0;
  int64_t e = start;
  res.episodes = start;
  while (e < o.episodes) {
    const int64_t batch_end = std::min(e + o.episodes_per_update, o.episodes);
    std::vector<Episode> batch;
    for (; e < batch_end; ++e) {
      if (o.stop_after_episodes > 0 && done == o.stop_after_episodes) return res;
      Episode ep = agent.run_episode(L, state_of, gen);
      const ReleqQuery q = oracle.query(ep.bits, e);
      double sum = 0;
      for (int b : ep.bits) sum += b;
      const double x = sum / (double(o.reward.b_max) * double(L));
      const double y = acc_fp > 0 ? q.accuracy / acc_fp : 0.0;
      ReleqEpisodeRecord r{e, ep.bits, releq_reward(o.reward, x, y), sum / double(L), q.accuracy, q.episode != e};
      ep.set_reward(r.reward);
      if (log.is_open()) log << record_line(r) << "\n" << std::flush;
      note_best(res, r);
      if (o.on_episode) o.on_episode(r);
      res.history.push_back(r);
      batch.push_back(std::move(ep));
      ++done;
      res.episodes = e + 1;
    }
    res.last_update = agent.update(batch);
    if (!ckpt_path.empty()) {
      Checkpoint c;
      c.meta["format"] = std::string("lowbit-releq-agent");
      c.meta["config"] = config;
      c.meta["episodes"] = e;
      c.meta["gen_seed"] = int64_t(gen.seed());
      c.meta["gen_offset"] = int64_t(gen.offset());
      c.add_tensors("net.", agent.net().state_dict());
      c.add_tensors("optim.", agent.optimizer().state_dict());
      save_checkpoint(ckpt_path, c);
    }
  }
  res.finished = true;
  return res;
}

void write_releq_report(const std::string& path, const ReleqOracle& oracle, const ReleqSearchResult& r,
                        int64_t batch_size, const std::string& summary) {
  const std::vector<ReleqLayer>& layers = oracle.layers();
  quant::HtmlReport html("ReLeQ search");
  if (!summary.empty()) html.add_paragraph(summary);
  // Per episode, and the mean of each batch at its last episode.
  auto plot = [&](const std::string& title, const std::string& y_label, auto value, double scale) {
    quant::Series per{"per episode", {}, {}}, mean{"batch mean", {}, {}};
    double sum = 0;
    int64_t n = 0;
    for (const ReleqEpisodeRecord& e : r.history) {
      per.x.push_back(double(e.episode + 1));
      per.y.push_back(scale * value(e));
      sum += scale * value(e), ++n;
      if ((e.episode + 1) % std::max<int64_t>(1, batch_size) == 0 || &e == &r.history.back()) {
        mean.x.push_back(double(e.episode + 1));
        mean.y.push_back(sum / double(n));
        sum = 0, n = 0;
      }
    }
    quant::LinePlot p{title, "episode", y_label, {per, mean}};
    return p;
  };
  html.add(plot(
      "Reward", "reward", [](const ReleqEpisodeRecord& e) { return e.reward; }, 1.0));
  quant::LinePlot acc = plot(
      "Validation accuracy after the short fine-tune", "accuracy (%)",
      [](const ReleqEpisodeRecord& e) { return e.accuracy; }, 100.0);
  if (!r.history.empty())
    acc.series.push_back({"float model",
                          {1.0, double(r.history.back().episode + 1)},
                          {100 * oracle.float_accuracy(), 100 * oracle.float_accuracy()}});
  html.add(acc);
  html.add(plot(
      "Average bits", "bits", [](const ReleqEpisodeRecord& e) { return e.average_bits; }, 1.0));
  if (!r.best_bits.empty()) {
    quant::BarPlot bars{"Best bits per layer", "bits", {}, {}, {{"average", r.best_average_bits}}};
    for (size_t i = 0; i < layers.size(); ++i) {
      bars.names.push_back(layers[i].name);
      bars.values.push_back(r.best_bits[i]);
    }
    html.add(bars);
  }
  quant::Table t{
      "Layers (the state's static features, §5.1)", {"layer", "n", "c", "k", "std(W)", "weights", "best bits"}, {}};
  for (size_t i = 0; i < layers.size(); ++i) {
    char sd[32];
    std::snprintf(sd, sizeof sd, "%.5f", layers[i].std);
    t.rows.push_back({layers[i].name, std::to_string(layers[i].n), std::to_string(layers[i].c),
                      std::to_string(layers[i].k), sd, std::to_string(layers[i].weights),
                      r.best_bits.empty() ? "" : std::to_string(r.best_bits[i])});
  }
  html.add(t);
  make_parent(path);
  html.write(path);
}

}  // namespace lowbit::train
