// ReLeQ (spec §5, arXiv 1811.01704): a PPO agent (train/releq_agent.h) picks one weight bitwidth per
// quantizable layer; a quality oracle fine-tunes the network briefly at those bits and validates it;
// the shaped reward of (accuracy, average bits) trains the agent. A training strategy over the fit
// loop (train/fit.h): every oracle query is one short train::fit with its own optimizer.
//
// Oracle (§5.1 "Quality oracle"). For a bit vector (one entry per layer of layers(), QuantContext's
// order): the float (pretrained) weights are restored, the weights-only quantizer (DoReFa or WRPN,
// activations float: YAML `acts: null`) is set to the vector, the net is fine-tuned for `epochs`
// epochs or `batches` batches on the fine-tune split and validated on the validation split, a part
// held out from the TRAINING set (releq_split; the test set is never seen by the search). Results are
// cached by bit vector (a JSON-lines file rewritten atomically per entry), so a vector is paid for
// once, across runs too. The fine-tune is deterministic (the default generator is re-seeded for it
// and restored after), so a result depends only on the vector.
//
// State (§5.1 main variant, 7-dim, as ppo_all_layers.py builds it):
//   s_l = [ (l+1)/L, b_l/8, StateQuant, n_norm, c_norm, k_norm, std(W_l) ]
//   l+1: layer_info.py's layer_idx_norm is 1-based (the official lists start at 1; VGG-11's at 0).
//   b_l: the layer's current bits. An episode starts from all-8 and decides layer l at step l, so
//        b_l = 8 when s_l is read (official code: bitwidth_layers[layer_num] / 8 before the action).
//   StateQuant = sum_l b_l / (8 L) over the episode's current vector: layers < l as chosen, the
//        rest at 8 (update_quant_state after each action).
//   n, c, k = out channels, in channels (per group for grouped convs: the weight's second dim),
//        kernel height (FC: 0), each min-max normalised over the L layers (0 when all are equal;
//        the official code would divide by zero there).
//   std(W_l): population std of the float weights, not normalised (as layer_info.py's column).
//
// Rewards (§5.1), x = StateQuant of the final vector, y = acc / acc_FP (acc_FP: the float model's
// accuracy on the same validation split, measured, not assumed):
//   A: x' = x - b_min/b_max, r = 1 - x'^a; y < th: r = -1, else r = 2 (r y^(b/y) - 0.5).
//   B: 50 x 50 grid: i = int(x 50) - 1, j = int(y 50) - 1 (clamped to 0..49; the official index,
//      which Python wraps at -1) read x_i = i / 49, y_j = j / 49 (np.linspace(0, 1, 50));
//      z = 4 (x_min - x_i) + 6 y_j if x_i >= x_min, else 0; reward = 2 max(z, 0). As in the code,
//      all-b_min vectors land on x_i < x_min and score 0.
//
// Search: batches of episodes_per_update episodes, agent.update per batch (one PPO update per
// decision batch, §5.1). Run folder (out): cache.jsonl (the oracle's), episodes.jsonl (per episode:
// bits, reward, average bits, accuracy, cache_hit), agent.ckpt (the agent's network and Adam state,
// the sampling generator, the episodes done; written after every update). Resume continues from
// agent.ckpt: the episodes of an unfinished batch are sampled again identically and found in the
// cache, so a resumed search equals an uninterrupted one. cache_hit in the log means "another
// episode paid for this vector", so it too is the same either way.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/loader.h"
#include "layers/module.h"
#include "optim/optimizer.h"
#include "train/fit.h"
#include "train/quant_context.h"
#include "train/releq_agent.h"

namespace lowbit::train {

// The training set cut in two: the fine-tune part (the first N - val_size images) and the held-out
// validation part (the last val_size), views sharing the pixels. 1 <= val_size < N.
struct ReleqSplit {
  data::ImageDataset fit, val;
};
ReleqSplit releq_split(const data::ImageDataset& train, int64_t val_size);

struct ReleqOracleOptions {
  std::string method = "dorefa";      // dorefa | wrpn (weights only)
  bool quantize_first_last = true;    // §5.1: included (LeNet, SVHN lists); false: they stay float
  std::string weight_scale = "auto";  // QuantSpec::weight_scale
  int64_t epochs = 1;                 // fine-tune epochs per query
  int64_t batches = 0;                // > 0: this many batches instead (a fraction of an epoch)
  optim::ParamGroup base{.name = "weights", .lr = 1e-3, .momentum = 0.9};  // without parameters
  // Builds each fine-tune's optimizer from the context's groups; null: SGD.
  std::function<std::unique_ptr<optim::Optimizer>(std::vector<optim::ParamGroup>)> make_optimizer{};
  uint64_t seed = 1;          // the default generator during a fine-tune (dropout)
  std::string cache_path{};   // "": in memory only
  std::string config_note{};  // added to the cache's config fingerprint (model, data, optimizer kind)
};

// One quantizable layer as the state sees it.
struct ReleqLayer {
  std::string name;
  int64_t n = 0, c = 0, k = 0;  // out channels, in channels, kernel size (FC: k = 0)
  double std = 0;               // of the float weights
  int64_t weights = 0;
};

struct ReleqQuery {
  double accuracy = 0, loss = 0;
  bool trained = false;  // this call paid for a fine-tune (false: from the cache)
  int64_t episode = -1;  // the episode that paid for it (-1: not a search episode)
  double seconds = 0;    // of the fine-tune and validation
};

class ReleqOracle {
 public:
  // model: the float network (no quantizers attached); its weights now are the ones every query
  // starts from. fit / val: the two parts of releq_split. The float validation accuracy is measured
  // here. A cache file made with other settings (layers, method, fine-tune length, data sizes) is an
  // error naming it.
  ReleqOracle(Module& model, data::DataLoader& fit, data::DataLoader& val, ReleqOracleOptions options);

  const std::vector<ReleqLayer>& layers() const { return layers_; }
  double float_accuracy() const { return float_eval_.accuracy; }
  const EvalResult& float_eval() const { return float_eval_; }
  // The validation accuracy of `bits` after the short fine-tune (cached). episode: recorded with a
  // new entry. After a fine-tune the model holds its weights, quantizers attached at `bits` (the
  // next query or fine_tune restores the float weights first).
  ReleqQuery query(const std::vector<int>& bits, int64_t episode = -1);
  bool cached(const std::vector<int>& bits) const;
  int64_t hits() const { return hits_; }              // queries answered from the cache
  int64_t fine_tunes() const { return fine_tunes_; }  // queries that trained
  size_t cache_size() const { return cache_.size(); }

  // Restores the float weights, attaches the quantizer at `bits`, trains with fo (its own optimizer;
  // fo.out, schedule, epochs as given) evaluating on the validation split per epoch, and returns the
  // fit result; the model stays quantized at `bits` with the trained weights.
  FitResult fine_tune(const std::vector<int>& bits, const FitOptions& fo);
  // The model's accuracy with its float weights restored (quantizers off), then the trained
  // weights put back: the float reference on another loader (the test set, once at the end).
  EvalResult evaluate_float(data::DataLoader& loader);
  // The config fingerprint kept in the cache file.
  std::string config_text() const;
  Module& model() { return model_; }
  QuantContext* quant() { return quant_.get(); }
  data::DataLoader& val_loader() { return val_; }

 private:
  struct Entry {
    double accuracy = 0, loss = 0, seconds = 0;
    int64_t episode = -1;
  };
  void attach(const std::vector<int>& bits);
  void restore_float();
  void load_cache();
  void save_cache() const;

  Module& model_;
  data::DataLoader &fit_, &val_;
  ReleqOracleOptions opt_;
  std::map<std::string, Tensor> float_state_;
  std::vector<ReleqLayer> layers_;
  EvalResult float_eval_;
  std::unique_ptr<QuantContext> quant_;
  std::map<std::string, Entry> cache_;  // key: "2,3,4,8"
  std::vector<std::string> order_;      // keys in insertion order (the file's)
  int64_t hits_ = 0, fine_tunes_ = 0;
};

// "2,3,4,8".
std::string bits_key(const std::vector<int>& bits);

// The states of §5.1 for layer l of `layers` with the bits of the episode so far (bits.size() <= l
// layers chosen; the rest count as b_max = 8).
std::vector<double> releq_state(const std::vector<ReleqLayer>& layers, int64_t l, const std::vector<int>& bits);

enum class ReleqRewardShape { A, B };
struct ReleqReward {
  ReleqRewardShape shape = ReleqRewardShape::B;  // B: ppo_all_layers.py (newest); A: releq_lenet.py
  double a = 0.6, b = 3, th = 0.8;               // A's constants (releq_lenet.py; ppo_lstm.py: 0.8, 1, 0.6)
  int levels = 50;                               // B's grid
  double q_weight = 4, a_weight = 6;             // B's z = q (x_min - x) + a y
  int b_min = 2, b_max = 8;                      // x_min = b_min / b_max
};
// x = StateQuant (sum of bits / (b_max L)), y = acc / acc_FP.
double releq_reward(const ReleqReward& r, double x, double y);
ReleqRewardShape parse_reward_shape(const std::string& s);  // A | B

struct ReleqEpisodeRecord {
  int64_t episode = 0;  // 0-based
  std::vector<int> bits;
  double reward = 0, average_bits = 0, accuracy = 0;
  bool cache_hit = false;  // another episode (or an earlier run) had paid for this vector
};

struct ReleqSearchOptions {
  int64_t episodes = 100;
  int64_t episodes_per_update = 8;
  ReleqReward reward{};
  ReleqAgentOptions agent{};         // agent.bit_choices are the actions
  uint64_t seed = 1;                 // the episodes' sampling generator
  std::string out{};                 // run folder ("": nothing written, no resume)
  bool resume = false;               // continue from out/agent.ckpt (a fresh start when there is none)
  int64_t stop_after_episodes = -1;  // > 0: return after this many episodes of this call (tests)
  std::function<void(const ReleqEpisodeRecord&)> on_episode{};
};

struct ReleqSearchResult {
  bool finished = false;
  int64_t episodes = 0;  // done in total (resumed ones included)
  std::vector<int> best_bits;
  double best_reward = 0, best_accuracy = 0, best_average_bits = 0;
  int64_t cache_hits = 0;  // episodes with cache_hit
  std::vector<ReleqEpisodeRecord> history;
  ReleqUpdateStats last_update{};
};

// Runs (or continues) the search. The best vector is the one of highest reward (the first of equals).
ReleqSearchResult releq_search(ReleqOracle& oracle, const ReleqSearchOptions& options);

// report.html of a search (quant/report.h): `summary` as the first paragraph; reward, validation
// accuracy (with the float model's) and average bits per episode, each with its mean per batch of
// batch_size episodes; the best bits per layer as bars; a table of the layers' state features and
// best bits.
void write_releq_report(const std::string& path, const ReleqOracle& oracle, const ReleqSearchResult& result,
                        int64_t batch_size, const std::string& summary);

}  // namespace lowbit::train
