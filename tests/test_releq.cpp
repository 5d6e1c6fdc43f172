// ReLeQ (train/releq.h, spec §5): the states of a small net by hand, the two reward shapes on hand
// values, the validation split held out of the training images, the oracle's cache (a vector is
// paid for once, also after reopening the file), and a small search end to end that, stopped
// mid-batch and resumed, gives the same episodes, agent and best vector as an uninterrupted one.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/serialize.h"
#include "deploy_fixtures.h"
#include "layers/layers.h"
#include "optim/sgd.h"
#include "train/evaluate.h"
#include "train/fit.h"
#include "train/releq.h"

using namespace lowbit;

namespace {

std::string temp_dir(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() / ("lowbit_test_releq_" + name);
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Four classes of 8x8 grey images (a faint quadrant per class in strong noise, so that the bits
// matter), as tests/test_dcq.cpp; the oracle fine-tunes on the first 192 training images and
// validates on the last 64.
struct Data {
  data::ImageDataset train = fixtures::quadrant_images(256, 1, 8, 40, 45, 100),
                     test = fixtures::quadrant_images(64, 2, 8, 40, 45, 100);
  train::ReleqSplit split = train::releq_split(train, 64);
  std::unique_ptr<data::DataLoader> fit_loader, val_loader, test_loader;
  Data() {
    data::LoaderOptions o;
    o.batch_size = 32;
    o.seed = 3;
    o.prefetch = 0;
    o.transforms = data::parse_transforms("normalize:0.4:0.3");
    fit_loader = std::make_unique<data::DataLoader>(split.fit, o);
    o.shuffle = false;
    val_loader = std::make_unique<data::DataLoader>(split.val, o);
    test_loader = std::make_unique<data::DataLoader>(test, o);
  }
};

std::shared_ptr<Sequential> tiny_net(uint64_t seed = 5) {
  Generator gen(seed);
  auto net = std::make_shared<Sequential>();
  net->push_back("conv1", std::make_shared<Conv2d>(1, 4, 3, conv_options(1, 1), true, gen));
  net->push_back("relu1", std::make_shared<ReLU>());
  net->push_back("conv2", std::make_shared<Conv2d>(4, 8, 3, conv_options(2, 1), true, gen));
  net->push_back("relu2", std::make_shared<ReLU>());
  net->push_back("flatten", std::make_shared<Flatten>());
  net->push_back("fc", std::make_shared<Linear>(8 * 4 * 4, 4, true, gen));
  return net;
}

// The float network: tiny_net trained for 2 epochs on the fine-tune split (the same weights every call).
std::shared_ptr<Sequential> pretrained(Data& d) {
  static const std::map<std::string, Tensor> state = [&] {
    auto net = tiny_net();
    optim::SGD opt({optim::ParamGroup{.params = net->parameters(), .lr = 0.05, .momentum = 0.9}});
    train::fit(*net, opt, *d.fit_loader, nullptr, {.epochs = 2, .verbose = 0});
    std::map<std::string, Tensor> s;
    for (const auto& [k, v] : net->state_dict()) s[k] = v.clone();
    return s;
  }();
  auto net = tiny_net(99);
  net->load_state_dict(state);
  return net;
}

train::ReleqOracleOptions oracle_options(const std::string& cache = "") {
  train::ReleqOracleOptions o;
  o.batches = 2;  // a fraction of the 6-batch epoch
  o.base = {.name = "weights", .lr = 0.01, .momentum = 0.9};
  o.cache_path = cache;
  return o;
}

double population_std(const Tensor& t) {
  const std::vector<double> v = t.to_vector();
  double m = 0, s = 0;
  for (double x : v) m += x;
  m /= double(v.size());
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size()));
}

}  // namespace

TEST_CASE("releq: the states of a small net, by hand (§5.1 main variant)") {
  Data d;
  auto net = pretrained(d);
  train::ReleqOracle oracle(*net, *d.fit_loader, *d.val_loader, oracle_options());
  const auto& L = oracle.layers();
  REQUIRE(L.size() == 3);  // first and last included (the official LeNet list)
  CHECK(L[0].name == "conv1");
  CHECK(L[2].name == "fc");
  CHECK((L[0].n == 4 && L[0].c == 1 && L[0].k == 3));
  CHECK((L[1].n == 8 && L[1].c == 4 && L[1].k == 3));
  CHECK((L[2].n == 4 && L[2].c == 128 && L[2].k == 0));
  CHECK(L[1].std == doctest::Approx(population_std(net->at<Conv2d>(2)->weight().data())).epsilon(1e-12));

  // Layer 1 (conv2) with layer 0 chosen at 2 bits, the rest still at 8:
  //   (l+1)/L = 2/3, b_1/8 = 1, StateQuant = (2 + 8 + 8) / 24, n: (8-4)/(8-4) = 1, c: (4-1)/(128-1),
  //   k: (3-0)/(3-0) = 1, std(W_1).
  const std::vector<double> s = train::releq_state(L, 1, {2});
  REQUIRE(s.size() == 7);
  CHECK(s[0] == doctest::Approx(2.0 / 3));
  CHECK(s[1] == 1.0);
  CHECK(s[2] == doctest::Approx(18.0 / 24));
  CHECK(s[3] == 1.0);
  CHECK(s[4] == doctest::Approx(3.0 / 127));
  CHECK(s[5] == 1.0);
  CHECK(s[6] == L[1].std);
  // Layer 2 (fc) after 2, 5: n at the minimum, c at the maximum, k = 0.
  const std::vector<double> s2 = train::releq_state(L, 2, {2, 5});
  CHECK(s2[0] == 1.0);
  CHECK(s2[2] == doctest::Approx(15.0 / 24));
  CHECK(s2[3] == 0.0);
  CHECK(s2[4] == 1.0);
  CHECK(s2[5] == 0.0);
  // Equal dimensions everywhere normalise to 0 (the official code divides by zero).
  const std::vector<train::ReleqLayer> same{{"a", 4, 4, 3, 0.1, 0}, {"b", 4, 4, 3, 0.2, 0}};
  CHECK(train::releq_state(same, 0, {})[3] == 0.0);
  CHECK(train::releq_state(same, 0, {})[2] == 1.0);  // all 8: StateQuant = 1
}

TEST_CASE("releq: rewards A and B on hand values") {
  train::ReleqReward a{.shape = train::ReleqRewardShape::A};  // (a, b, th) = (0.6, 3, 0.8)
  // x = 0.5, y = 0.9: x' = 0.25, r = 1 - 0.25^0.6, 2 (r 0.9^(3/0.9) - 0.5).
  CHECK(train::releq_reward(a, 0.5, 0.9) == doctest::Approx(-0.205046319083514));
  CHECK(train::releq_reward(a, 0.5, 0.79) == -1.0);                  // below the threshold
  CHECK(train::releq_reward(a, 0.25, 1.0) == doctest::Approx(1.0));  // all b_min, float accuracy: 2 (1 - 0.5)
  train::ReleqReward a2{.shape = train::ReleqRewardShape::A, .a = 0.8, .b = 1, .th = 0.6};  // ppo_lstm.py
  CHECK(train::releq_reward(a2, 0.75, 0.95) == doctest::Approx(-0.19344379611772722));
  CHECK(train::releq_reward(a2, 0.75, 0.59) == -1.0);

  train::ReleqReward b;  // B, 50 x 50 grid, z = 4 (0.25 - x) + 6 y
  // x = 0.5: cell int(25) - 1 = 24 -> 24/49; y = 1: cell 49 -> 1.
  CHECK(train::releq_reward(b, 0.5, 1.0) == doctest::Approx(2 * (4 * (0.25 - 24.0 / 49) + 6.0)));
  // x = 0.75 -> 36/49, y = 0.95 -> 46/49.
  CHECK(train::releq_reward(b, 0.75, 0.95) == doctest::Approx(2 * (4 * (0.25 - 36.0 / 49) + 6 * 46.0 / 49)));
  CHECK(train::releq_reward(b, 0.25, 1.0) == 0.0);  // all 2-bit: cell 11/49 < x_min, 0 as in the code
  CHECK(train::releq_reward(b, 1.0, 0.5) == 0.0);   // z < 0 -> 0
  CHECK(train::releq_reward(b, 0.5, 1.2) == train::releq_reward(b, 0.5, 1.0));  // y above 1: the last cell
  CHECK(train::releq_reward(b, 0.5, 0.0) == 0.0);  // y = 0: cell int(0) - 1 clamped to 0, z < 0
  CHECK(train::parse_reward_shape("A") == train::ReleqRewardShape::A);
  CHECK_THROWS_WITH_AS(train::parse_reward_shape("C"), doctest::Contains("not A or B"), Error);
}

TEST_CASE("releq: the validation split is held out of the training images, disjoint from the fine-tune part") {
  Data d;
  CHECK(d.split.fit.size() == 192);
  CHECK(d.split.val.size() == 64);
  // The fine-tune part is rows 0..191, the validation part rows 192..255 of the training set.
  const int64_t px = 8 * 8;
  CHECK(std::equal(d.split.fit.pixels(191), d.split.fit.pixels(191) + px, d.train.pixels(191)));
  CHECK(std::equal(d.split.val.pixels(0), d.split.val.pixels(0) + px, d.train.pixels(192)));
  CHECK(d.split.val.label(63) == d.train.label(255));
  CHECK(d.split.val.images.data<uint8_t>() == d.train.pixels(192));  // a view: no copy
  CHECK_THROWS_WITH_AS(train::releq_split(d.train, 0), doctest::Contains("--val-size"), Error);
  CHECK_THROWS_WITH_AS(train::releq_split(d.train, 256), doctest::Contains("--val-size"), Error);
  // The oracle sees only these two loaders (no test set is ever given to it or to the search); its
  // float accuracy is the validation split's.
  auto net = pretrained(d);
  const train::EvalResult val = train::evaluate(*net, *d.val_loader);
  train::ReleqOracle oracle(*net, *d.fit_loader, *d.val_loader, oracle_options());
  CHECK(oracle.float_accuracy() == val.accuracy);
  CHECK(oracle.float_eval().images == 64);
}

TEST_CASE("releq: the oracle's cache pays for a vector once, also after reopening it from disk") {
  Data d;
  const std::string dir = temp_dir("cache");
  const std::string cache = dir + "/cache.jsonl";
  train::ReleqQuery first;
  {
    auto net = pretrained(d);
    train::ReleqOracle oracle(*net, *d.fit_loader, *d.val_loader, oracle_options(cache));
    first = oracle.query({2, 4, 8}, 7);
    CHECK(first.trained);
    CHECK(first.episode == 7);
    CHECK(oracle.fine_tunes() == 1);
    CHECK(oracle.hits() == 0);
    const train::ReleqQuery again = oracle.query({2, 4, 8}, 9);
    CHECK_FALSE(again.trained);
    CHECK(again.episode == 7);  // who paid
    CHECK(again.accuracy == first.accuracy);
    CHECK(oracle.fine_tunes() == 1);
    CHECK(oracle.hits() == 1);
    const train::ReleqQuery other = oracle.query({3, 4, 8});
    CHECK(other.trained);
    CHECK(oracle.cache_size() == 2);
    CHECK_THROWS_WITH_AS(oracle.query({2, 4}), doctest::Contains("3 layers"), Error);
  }
  // Reopened (a new process would do the same): both vectors are there, exactly.
  {
    auto net = pretrained(d);
    train::ReleqOracle oracle(*net, *d.fit_loader, *d.val_loader, oracle_options(cache));
    CHECK(oracle.cache_size() == 2);
    CHECK(oracle.cached({2, 4, 8}));
    const train::ReleqQuery q = oracle.query({2, 4, 8});
    CHECK_FALSE(q.trained);
    CHECK(q.accuracy == first.accuracy);
    CHECK(oracle.fine_tunes() == 0);
    CHECK(oracle.hits() == 1);
  }
  // The same vector without the cache: the fine-tune is deterministic, the same accuracy.
  {
    auto net = pretrained(d);
    train::ReleqOracle oracle(*net, *d.fit_loader, *d.val_loader, oracle_options());
    const train::ReleqQuery q = oracle.query({2, 4, 8});
    CHECK(q.trained);
    CHECK(q.accuracy == first.accuracy);
    CHECK(q.loss == first.loss);
  }
  // A cache made with other settings is refused.
  {
    auto net = pretrained(d);
    train::ReleqOracleOptions o = oracle_options(cache);
    o.batches = 3;
    CHECK_THROWS_WITH_AS(train::ReleqOracle(*net, *d.fit_loader, *d.val_loader, o),
                         doctest::Contains("other oracle settings"), Error);
  }
}

TEST_CASE("releq: a small search end to end, stopped mid-batch and resumed, equals the straight run") {
  Data d;
  auto search = [&](const std::string& dir, int64_t stop, bool resume) {
    auto net = pretrained(d);
    train::ReleqOracle oracle(*net, *d.fit_loader, *d.val_loader, oracle_options(dir + "/cache.jsonl"));
    train::ReleqSearchOptions so;
    so.episodes = 20;
    so.episodes_per_update = 4;
    so.agent.hidden = 32;
    so.agent.bit_choices = {2, 4, 8};  // 27 vectors: some episodes meet one already paid for
    so.agent.lr = 1e-3;
    so.out = dir;
    so.resume = resume;
    so.stop_after_episodes = stop;
    train::ReleqSearchResult r = train::releq_search(oracle, so);
    return std::make_pair(r, oracle.fine_tunes());
  };
  const std::string straight = temp_dir("straight"), broken = temp_dir("broken");
  const auto [full, paid] = search(straight, -1, false);
  REQUIRE(full.finished);
  CHECK(full.episodes == 20);
  REQUIRE(full.history.size() == 20);
  CHECK(full.best_bits.size() == 3);
  int64_t hits = 0;
  for (const auto& e : full.history) {
    hits += e.cache_hit;
    CHECK(e.average_bits == doctest::Approx((e.bits[0] + e.bits[1] + e.bits[2]) / 3.0));
    CHECK(e.reward <= full.best_reward);
  }
  CHECK(full.cache_hits == hits);
  CHECK(paid + hits == 20);  // every episode either fine-tuned or found its vector in the cache

  // Stopped after 6 episodes (mid-batch: the agent has seen 4), then resumed.
  const auto [part, paid1] = search(broken, 6, false);
  CHECK_FALSE(part.finished);
  CHECK(part.episodes == 6);
  const auto [rest, paid2] = search(broken, -1, true);
  REQUIRE(rest.finished);
  CHECK(paid1 + paid2 == paid);  // the two redone episodes came from the cache
  CHECK(rest.history.size() == 20);
  for (size_t i = 0; i < 20; ++i) {
    CAPTURE(i);
    CHECK(rest.history[i].bits == full.history[i].bits);
    CHECK(rest.history[i].reward == full.history[i].reward);
    CHECK(rest.history[i].cache_hit == full.history[i].cache_hit);
  }
  CHECK(rest.best_bits == full.best_bits);
  CHECK(rest.best_reward == full.best_reward);
  CHECK(read_text(broken + "/episodes.jsonl") == read_text(straight + "/episodes.jsonl"));
  const Checkpoint a = load_checkpoint(straight + "/agent.ckpt"), b = load_checkpoint(broken + "/agent.ckpt");
  CHECK(a.get_int("episodes") == 20);
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (const auto& [name, t] : a.tensors) {
    CAPTURE(name);
    CHECK(t.to_vector() == b.tensors.at(name).to_vector());
  }

  auto report_net = pretrained(d);
  train::ReleqOracle reporter(*report_net, *d.fit_loader, *d.val_loader, oracle_options());
  train::write_releq_report(straight + "/report.html", reporter, full, 4, "a summary");
  const std::string html = read_text(straight + "/report.html");
  CHECK(html.find("a summary") != std::string::npos);
  CHECK(html.find("Best bits per layer") != std::string::npos);
  CHECK(html.find("<svg") != std::string::npos);

  // The final fine-tune of the best vector, then the test set once; the float reference is the
  // pretrained net's.
  auto net = pretrained(d);
  const train::EvalResult float_test = train::evaluate(*net, *d.test_loader);
  train::ReleqOracle oracle(*net, *d.fit_loader, *d.val_loader, oracle_options(straight + "/cache.jsonl"));
  const train::FitResult fr = oracle.fine_tune(full.best_bits, {.epochs = 1, .verbose = 0});
  CHECK(fr.finished);
  CHECK(fr.last_eval.images == 64);  // evaluated per epoch on the validation split
  for (size_t i = 0; i < 3; ++i) CHECK(*oracle.quant()->quantization().layers[i].weight_bits == full.best_bits[i]);
  const train::EvalResult test = train::evaluate(*net, *d.test_loader);
  CHECK(test.images == 64);
  CHECK(oracle.evaluate_float(*d.test_loader).accuracy == float_test.accuracy);
  CHECK(train::evaluate(*net, *d.test_loader).accuracy == test.accuracy);  // the trained weights put back
}
