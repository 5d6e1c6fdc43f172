// The library's fit loop and quantization context (train/), driven as a user drives them: the seams
// between the trainer, the lambda schedule, WaveQ's learned bits and the quantizers, checkpoints
// and resume, and the two strategies that reuse the loop (a section of a net trained against a
// teacher, many short fine-tunes of different bit assignments).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "autograd/ops.h"
#include "core/math.h"
#include "core/serialize.h"
#include "deploy_fixtures.h"
#include "layers/layers.h"
#include "optim/sgd.h"
#include "quant/quantizers.h"
#include "test_util.h"
#include "train/fit.h"
#include "train/quant_context.h"

using namespace lowbit;

using namespace lowbit::testing;

namespace {

// Four classes of 8x8 grey images: class c has a bright quadrant c on a noisy background.
data::ImageDataset quadrants(int64_t n, uint64_t seed) { return fixtures::quadrant_images(n, seed, 8, 40, 130, 60); }

struct Data {
  data::ImageDataset train = quadrants(256, 1), test = quadrants(128, 2);
  fixtures::Loaders loaders;
  std::unique_ptr<data::DataLoader>&train_loader = loaders.train, &test_loader = loaders.test;
  explicit Data(int64_t batch = 32) : loaders(train, test, batch, "normalize:0.4:0.3") {}
};

std::shared_ptr<Sequential> small_net(uint64_t seed = 5) {
  Generator gen(seed);
  auto net = std::make_shared<Sequential>();
  net->push_back("conv1", std::make_shared<Conv2d>(1, 8, 3, conv_options(1, 1), true, gen));
  net->push_back("relu1", std::make_shared<ReLU>());
  net->push_back("conv2", std::make_shared<Conv2d>(8, 16, 3, conv_options(2, 1), true, gen));
  net->push_back("relu2", std::make_shared<ReLU>());
  net->push_back("conv3", std::make_shared<Conv2d>(16, 16, 3, conv_options(1, 1), true, gen));
  net->push_back("relu3", std::make_shared<ReLU>());
  net->push_back("flatten", std::make_shared<Flatten>());
  net->push_back("fc", std::make_shared<Linear>(16 * 4 * 4, 4, true, gen));
  return net;
}

optim::ParamGroup base_group(double lr = 0.05) {
  return optim::ParamGroup{.name = "weights", .lr = lr, .weight_decay = 1e-4, .momentum = 0.9};
}

// A regularizer that only records the positions the fit loop gives it.
struct PositionSpy : optim::Regularizer {
  std::vector<double> t;
  std::string name() const override { return "position_spy"; }
  Variable loss(const optim::ParamGroup&, int64_t) override { return Variable(); }
  void set_position(double pos, double) override { t.push_back(pos); }
};

std::string temp_dir(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() / ("lowbit_test_train_" + name);
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

std::string last_line(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return last;
}

// The number after "\"key\": " in the JSON text, n-th occurrence (0-based).
double json_value(const std::string& js, const std::string& key, int nth = 0) {
  size_t pos = 0;
  for (int i = 0; i <= nth; ++i) {
    pos = js.find("\"" + key + "\": ", pos);
    REQUIRE(pos != std::string::npos);
    pos += key.size() + 4;
  }
  return std::stod(js.substr(pos));
}

}  // namespace

TEST_CASE("fit: the lambda schedule advances every step, so phase 3 and snap_beta happen in a 2-epoch run") {
  Data d;
  auto net = small_net();
  train::QuantContext quant(
      *net,
      {.method = "dorefa", .wbits = 4, .reg = "waveq", .lambda_beta = 0.5, .beta_freeze = 0.5, .snap_beta = true});
  auto groups = quant.param_groups(base_group());
  auto spy = std::make_shared<PositionSpy>();
  groups[0].regularizers.push_back(spy);
  optim::SGD opt(groups);
  const train::FitResult r =
      train::fit(*net, opt, *d.train_loader, d.test_loader.get(), {.epochs = 2, .verbose = 0}, &quant);
  REQUIRE(r.finished);
  const int64_t nb = d.train_loader->num_batches();
  REQUIRE(spy->t.size() == size_t(2 * nb));
  for (int64_t s = 0; s < 2 * nb; ++s)
    CHECK(spy->t[size_t(s)] == doctest::Approx(double(s / nb) + double(s % nb) / nb));
  // The last step is at t = 2 - 1/nb of T = 2: lambda_beta has fallen (phase 3); stepped per epoch it
  // would sit at half its plateau (t = 1 is the fall's centre).
  const std::string js = quant.epoch_json();
  CHECK(json_value(js, "lambda_beta") < 1e-3 * 0.5);
  CHECK(json_value(js, "lambda_w") == doctest::Approx(1.0).epsilon(1e-3));
  // --snap-beta: from t = 0.5 T every beta is an integer and stays there.
  for (const auto& row : quant.layer_rows()) CHECK(row.beta == std::round(row.beta));
}

TEST_CASE("learned beta with a quantizer: it trains at k = ceil(beta) + 1 (always / phase3) or at wbits (never)") {
  for (const std::string policy : {"always", "phase3", "never"}) {
    CAPTURE(policy);
    Data d;
    auto net = small_net();
    train::QuantContext quant(*net, {.method = "dorefa",
                                     .wbits = 6,
                                     .reg = "waveq",
                                     .lambda_beta = 2,
                                     .beta_freeze = 0.5,
                                     .beta_lr = 0.5,
                                     .bits_follow_beta = policy});
    optim::SGD opt(quant.param_groups(base_group()));
    const auto& layer = quant.quantization().layers[1];  // conv2
    REQUIRE(layer.name == "conv2");
    int steps = 0, followed = 0, at_start_bits = 0;
    double t = 0;
    const int64_t nb = d.train_loader->num_batches();
    train::FitOptions fo{.epochs = 2, .verbose = 0};
    fo.step = [&](Module& m, const data::Batch& b) {
      // What the layer trains at in this step, against the beta the step starts from.
      const double beta = quant.layer_rows()[0].beta;
      const int k = *layer.weight_bits;
      followed += k == quant::learned_weight_bits(beta);
      at_start_bits += k == 6;
      if (policy != "never") {
        // The layer's effective weight has at most 2^k levels (DoReFa) at the bits it trains at.
        NoGradGuard ng;
        auto v = dynamic_cast<Conv2d&>(*layer.module).effective_weight().data().to_vector();
        std::sort(v.begin(), v.end());
        CHECK(std::unique(v.begin(), v.end()) - v.begin() <= (int64_t(1) << k));
      }
      if (policy == "phase3") {
        if (t < 1.0) CHECK(k == 6);
        if (t >= 1.0) CHECK(k == quant::learned_weight_bits(beta));
      }
      t += 1.0 / double(nb);
      ++steps;
      Variable logits = m(Variable(b.images));
      return train::StepOutput{cross_entropy(logits, b.labels), logits.data()};
    };
    REQUIRE(train::fit(*net, opt, *d.train_loader, nullptr, fo, &quant).finished);
    const train::QuantReport rep = quant.final_report(*d.test_loader);
    const train::LayerReport& lr = rep.layers[1];
    REQUIRE(lr.beta.has_value());
    CHECK(lr.bits == quant::learned_weight_bits(*lr.beta));
    CHECK(*lr.beta < 5.0);  // beta learned down from 5 (the penalty is strong)
    if (policy == "always") {
      CHECK(followed == steps);
      CHECK(lr.trained_bits == lr.bits);
    }
    if (policy == "never") {
      CHECK(at_start_bits == steps);
      CHECK(lr.trained_bits == 6);
      CHECK(lr.bits < 6);
      const std::string text = train::format_report(rep);
      CHECK(contains(text, "  conv2                      6 bits   " + std::to_string(lr.bits) + " bits"));
    }
  }
}

TEST_CASE("one meaning of bits: the epoch table, metrics.jsonl, the final report and report.html agree") {
  Data d;
  const std::string out = temp_dir("bits");
  auto net = small_net();
  train::QuantContext quant(*net, {.method = "wrpn", .wbits = 5, .reg = "waveq", .lambda_beta = 1, .beta_lr = 0.3});
  optim::SGD opt(quant.param_groups(base_group()));
  train::fit(*net, opt, *d.train_loader, d.test_loader.get(), {.epochs = 2, .out = out, .verbose = 0}, &quant);
  const std::string js = last_line(out + "/metrics.jsonl");
  const auto rows = quant.layer_rows();
  const train::QuantReport rep = quant.final_report(*d.test_loader, false, out + "/report.html");
  REQUIRE(rows.size() == 2);  // conv2, conv3 (first and last stay FP32)
  for (int i = 0; i < 2; ++i) {
    const int k = quant::learned_weight_bits(rows[size_t(i)].beta);  // sign bit included
    CHECK(rows[size_t(i)].bits == k);
    CHECK(json_value(js, "bits", i) == k);
    CHECK(json_value(js, "trained_bits", i) == k);
    CHECK(rep.layers[size_t(i) + 1].bits == k);
    CHECK(json_value(js, "beta", i) == doctest::Approx(rows[size_t(i)].beta).epsilon(1e-5));
  }
  const std::string table = train::format_layer_rows(rows, true);
  CHECK(contains(table, " " + std::to_string(rows[0].bits) + " "));
  std::ifstream html(out + "/report.html");
  std::stringstream h;
  h << html.rdbuf();
  CHECK(contains(h.str(), "rounded at (bits)"));
  CHECK(contains(h.str(), "<td>" + std::to_string(rep.layers[1].bits) + " bits</td>"));

  // SinReQ: the configured k, sign included, everywhere.
  auto net2 = small_net();
  train::QuantContext sinreq(*net2, {.method = "dorefa", .wbits = 3, .reg = "sinreq"});
  for (const auto& row : sinreq.layer_rows()) CHECK(row.bits == 3);
  CHECK(json_value(sinreq.epoch_json(), "bits") == 3);
  std::filesystem::remove_all(out);
}

TEST_CASE("the sinusoid's grid is derived from the quantizer, or a mismatch is refused") {
  auto net = small_net();
  CHECK(contains(train::QuantContext(*net, {.method = "dorefa", .wbits = 4, .reg = "sinreq"}).describe(),
                 "dorefa grid, on tanh(w) / max|tanh w|"));
  CHECK(contains(train::QuantContext(*net, {.method = "pact", .wbits = 4, .reg = "sinreq"}).describe(),
                 "dorefa grid, on tanh(w) / max|tanh w|"));
  CHECK(train::QuantContext(*net, {.method = "wrpn", .wbits = 4, .reg = "sinreq"}).describe() ==
        "wrpn w4/a4 + sinreq (wrpn grid, on w / max|w|)");
  CHECK(contains(
      train::QuantContext(*net, {.method = "wrpn", .wbits = 4, .weight_scale = "max", .reg = "waveq"}).describe(),
      "wrpn grid, on w / max|w|"));
  // Float training: the grid spans each layer's weights by default.
  CHECK(contains(train::QuantContext(*net, {.wbits = 4, .reg = "waveq"}).describe(), "wrpn grid, on w / max|w|"));
  for (const std::string m : {"lsq", "u3", "binary", "ternary"}) {
    CAPTURE(m);
    const std::string e = error_of([&] { train::QuantContext(*net, {.method = m, .reg = "sinreq"}); });
    CHECK(contains(e, "--reg sinreq with --quant " + m + ": no sinusoid has the levels"));
  }
  const std::string e = error_of(
      [&] { train::QuantContext(*net, {.method = "dorefa", .wbits = 4, .weight_scale = "none", .reg = "sinreq"}); });
  CHECK(contains(e, "the sinusoid's zeros would not be the quantizer's levels"));
  CHECK(contains(e, "--allow-grid-mismatch"));
  CHECK(contains(
      train::QuantContext(
          *net, {.method = "dorefa", .wbits = 4, .weight_scale = "none", .reg = "sinreq", .allow_grid_mismatch = true})
          .describe(),
      "dorefa grid)"));
  CHECK(contains(error_of([&] { train::QuantContext(*net, {.wbits = 4, .reg = "sinreq", .grid = "fixed"}); }),
                 "no quantizer rounds on these levels"));
  CHECK(contains(error_of([&] { train::QuantContext(*net, {.method = "wrpn", .wbits = 4, .grid = "dorefa"}); }),
                 "needs --reg"));
}

TEST_CASE("options that match no layer and bits outside a method's range are errors naming the option") {
  auto net = small_net();
  CHECK(
      contains(error_of([&] { train::QuantContext(*net, {.method = "dorefa", .wbits_overrides = "nosuch=3"}); }),
               "--wbits-overrides 'nosuch=3': 'nosuch' matches no weight layer (there are: conv1, conv2, conv3, fc)"));
  CHECK(contains(
      error_of([&] { train::QuantContext(*net, {.method = "dorefa", .abits = 4, .abits_overrides = "x*=2"}); }),
      "--abits-overrides 'x*=2': 'x*' matches no activation (there are: relu1, relu2, relu3)"));
  CHECK(contains(error_of([&] { train::QuantContext(*net, {.method = "dorefa", .wbits = 64}); }),
                 "--wbits 64: dorefa takes 1..16 bits"));
  CHECK(contains(error_of([&] { train::QuantContext(*net, {.method = "wrpn", .wbits_overrides = "conv2=1"}); }),
                 "--wbits-overrides 'conv2=1': wrpn takes 2..16 bits"));
  CHECK(contains(error_of([&] { train::QuantContext(*net, {.method = "binary", .wbits = 4}); }),
                 "--wbits 4: binary takes 1 bits"));
  CHECK(contains(error_of([&] { train::QuantContext(*net, {.method = "dorefa", .abits = 0, .gbits = 40}); }),
                 "--gbits 40"));
  // Without --wbits a method quantizes at its default bits: binary at 1, dorefa at 4.
  CHECK(*train::QuantContext(*net, {.method = "binary"}).quantization().layers[1].weight_bits == 1);
  CHECK(*train::QuantContext(*net, {.method = "dorefa"}).quantization().layers[1].weight_bits == 4);

  // Float training with a regularizer: an override is the bits that layer is regularized and rounded at.
  train::QuantContext q(*net, {.wbits = 4, .wbits_overrides = "conv2=2", .reg = "sinreq"});
  const auto rows = q.layer_rows();
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].name == "conv2");
  CHECK(rows[0].bits == 2);
  CHECK(rows[1].bits == 4);
  CHECK(contains(q.config_table(), "regularized at 2 bits"));
  Data d;
  const train::QuantReport rep = q.final_report(*d.test_loader);
  CHECK(rep.layers[1].bits == 2);
  CHECK(rep.layers[1].trained_bits == 32);
}

TEST_CASE("U3 through the fit loop: power-of-two steps, parameters clipped after each step, bits inferred") {
  Data d;
  auto net = small_net();
  train::QuantContext quant(*net, {.method = "u3", .wbits = 4, .abits = 4, .quantize_first_last = true});
  auto groups = quant.param_groups(base_group(0.05));
  REQUIRE(groups.size() == 2);
  CHECK(groups[1].name == "quantizer");
  CHECK(groups[1].weight_decay == 0);
  optim::SGD opt(groups);
  train::fit(*net, opt, *d.train_loader, nullptr, {.epochs = 1, .verbose = 0}, &quant);
  const train::QuantReport rep = quant.final_report(*d.test_loader);
  for (size_t i = 0; i < quant.quantization().layers.size(); ++i) {
    Module& m = *quant.quantization().layers[i].module;
    const double dv = m.param("w_d").item(), qv = m.param("w_qmax").item();
    CHECK(dv >= std::ldexp(1.0, -8));
    CHECK(dv <= 1.0);
    CHECK(dv < qv);
    CHECK(rep.layers[i].bits == quant::u3_bits(dv, qv, true));
    // The forward's levels are multiples of the power-of-two step.
    NoGradGuard ng;
    const double dq = quant::u3_effective(dv, qv).d;
    CHECK(dq == std::exp2(std::round(std::log2(dq))));
    for (double w : dynamic_cast<Conv2d*>(&m) ? dynamic_cast<Conv2d&>(m).effective_weight().data().to_vector()
                                              : dynamic_cast<Linear&>(m).effective_weight().data().to_vector())
      CHECK(w / dq == doctest::Approx(std::round(w / dq)).epsilon(1e-6));
  }
}

TEST_CASE("--gbits: DoReFa gradient quantization on the quantized layers, its noise resumed exactly") {
  const std::string out = temp_dir("gbits");
  auto run = [&](const std::string& dir, int64_t stop, const std::string& resume) {
    Data d;
    auto net = small_net();
    train::QuantContext quant(*net, {.method = "dorefa", .wbits = 4, .abits = 4, .gbits = 4, .reg = "waveq"});
    optim::SGD opt(quant.param_groups(base_group()));
    train::FitOptions fo{.epochs = 2, .out = dir, .resume = resume, .stop_after_batches = stop, .verbose = 0};
    train::fit(*net, opt, *d.train_loader, d.test_loader.get(), fo, &quant);
    return net->state_dict();
  };
  const auto straight = run(out + "/straight", -1, "");
  run(out + "/cut", 11, "");  // stops mid-epoch 2 (8 batches an epoch)
  const auto resumed = run(out + "/cut", -1, out + "/cut/checkpoint.ckpt");
  for (const auto& [name, t] : straight) {
    CAPTURE(name);
    CHECK(max_abs_diff(t, resumed.at(name)) == 0.0);
  }
  // The hook is on: conv2's weight gradient differs from the unquantized one.
  Data d;
  auto grad_of = [&](int gbits) {
    auto net = small_net();
    train::QuantContext quant(*net, {.method = "dorefa", .wbits = 4, .gbits = gbits});
    d.train_loader->begin_epoch(0);
    data::Batch b;
    d.train_loader->next(b);
    cross_entropy((*net)(Variable(b.images)), b.labels).backward();
    return net->at<Conv2d>(0)->weight().grad().data();
  };
  CHECK(max_abs_diff(grad_of(4), grad_of(32)) > 0);
  std::filesystem::remove_all(out);
}

TEST_CASE("PACT's lambda_alpha is the weight decay of its clip group; LSQ's steps have their own group") {
  auto net = small_net();
  train::QuantContext pact(*net, {.method = "pact", .wbits = 4, .abits = 4, .pact_decay = 0.01});
  const auto groups = pact.param_groups(base_group());
  REQUIRE(groups.size() == 2);
  CHECK(groups[1].name == "clip");
  CHECK(groups[1].weight_decay == 0.01);
  CHECK(groups[1].param_names == std::vector<std::string>{"relu1.alpha", "relu2.alpha", "relu3.alpha"});
  // Default: the weights' decay (Distiller's act_clip_decay = None).
  CHECK(train::QuantContext(*net, {.method = "pact", .abits = 4}).param_groups(base_group())[1].weight_decay == 1e-4);
  auto net2 = small_net();
  train::QuantContext lsq(*net2, {.method = "lsq", .wbits = 4, .abits = 4});
  const auto g2 = lsq.param_groups(base_group());
  REQUIRE(g2.size() == 2);
  CHECK(g2[1].name == "quantizer");
  CHECK(g2[1].param_names.front() == "conv2.w_step");
  // No parameter is in two groups, and every model parameter is in one.
  std::set<std::string> seen;
  size_t total = 0;
  for (const auto& g : g2)
    for (const auto& n : g.param_names) seen.insert(n), ++total;
  CHECK(seen.size() == total);
  CHECK(total == net2->named_parameters().size());
}

TEST_CASE("a section of a net trained against a teacher's features with a custom loss (the DCQ shape)") {
  Data d;
  auto teacher = small_net(11);
  // Train the teacher a little so its features mean something.
  {
    optim::SGD opt({optim::ParamGroup{.params = teacher->parameters(), .lr = 0.05, .momentum = 0.9}});
    train::fit(*teacher, opt, *d.train_loader, nullptr, {.epochs = 1, .verbose = 0});
  }
  // The student section: conv2 + relu2 as a copy of the teacher's, quantized at 2 bits.
  Generator gen(1);
  auto section = std::make_shared<Sequential>();
  section->push_back("conv2", std::make_shared<Conv2d>(8, 16, 3, conv_options(2, 1), true, gen));
  section->push_back("relu2", std::make_shared<ReLU>());
  std::map<std::string, Tensor> copy;
  for (const auto& [k, v] : teacher->state_dict())
    if (k.rfind("conv2.", 0) == 0) copy[k] = math::mul(v, 1.0);
  section->load_state_dict(copy);
  const Tensor teacher_conv3 = teacher->at<Conv2d>(4)->weight().data().contiguous();
  train::QuantContext quant(*section, {.method = "dorefa", .wbits = 2, .quantize_first_last = true});
  optim::SGD opt(quant.param_groups(base_group(0.02)));
  std::vector<double> losses;
  train::FitOptions fo{.epochs = 3, .verbose = 0};
  fo.step = [&](Module& student, const data::Batch& b) {
    Variable in, target;
    {
      NoGradGuard ng;  // the teacher's input to the section and its output at the boundary
      in = (*teacher->at<ReLU>(1))((*teacher->at<Conv2d>(0))(Variable(b.images)));
      target = (*teacher->at<ReLU>(3))((*teacher->at<Conv2d>(2))(in));
    }
    Variable y = student(Variable(in.data()));
    return train::StepOutput{mse_loss(y, Variable(target.data())), Tensor()};
  };
  fo.on_epoch = [&](const train::EpochRecord& r) {
    losses.push_back(r.train_loss);
    CHECK(std::isnan(r.train_acc));  // no logits, no accuracy
  };
  train::fit(*section, opt, *d.train_loader, nullptr, fo, &quant);
  REQUIRE(losses.size() == 3);
  CHECK(losses[2] < losses[0]);
  // Only the section trained; the teacher's other layers are untouched.
  CHECK(max_abs_diff(teacher->at<Conv2d>(4)->weight().data(), teacher_conv3) == 0.0);
  CHECK(*quant.quantization().layers[0].weight_bits == 2);
}

TEST_CASE("many short fine-tunes of different bit assignments in one process (the ReLeQ shape)") {
  Data d;
  auto net = small_net(21);
  {
    optim::SGD opt({optim::ParamGroup{.params = net->parameters(), .lr = 0.05, .momentum = 0.9}});
    train::fit(*net, opt, *d.train_loader, nullptr, {.epochs = 2, .verbose = 0});
  }
  std::map<std::string, Tensor> float_weights;
  for (const auto& [k, v] : net->state_dict()) float_weights[k] = math::mul(v, 1.0);
  auto fine_tune = [&](const std::string& bits) {
    net->load_state_dict(float_weights);
    train::QuantContext quant(
        *net,
        {.method = "wrpn", .wbits = 8, .quantize_first_last = true, .wbits_overrides = bits, .weight_scale = "max"});
    optim::SGD opt(quant.param_groups(base_group(0.01)));
    train::fit(*net, opt, *d.train_loader, nullptr, {.epochs = 1, .verbose = 0}, &quant);
    return quant.final_report(*d.test_loader);
  };
  const train::QuantReport a = fine_tune("conv1=8,conv2=2,conv3=4,fc=8");
  const train::QuantReport b = fine_tune("conv1=8,conv2=5,conv3=3,fc=8");
  const train::QuantReport a2 = fine_tune("conv1=8,conv2=2,conv3=4,fc=8");
  CHECK(a.layers[1].bits == 2);
  CHECK(a.layers[2].bits == 4);
  CHECK(b.layers[1].bits == 5);
  CHECK(b.layers[2].bits == 3);
  CHECK(a.average_bits != b.average_bits);
  // The same bit vector gives the same model: nothing of one fine-tune leaks into the next.
  CHECK(a2.quantized.accuracy == a.quantized.accuracy);
  CHECK(a2.quantized.loss == a.quantized.loss);
}

TEST_CASE("no silent collapse: the report says loudly when the learned bits lose the model, and why") {
  Data d;
  auto run = [&](const std::string& scale) {
    auto net = small_net(31);
    {
      optim::SGD opt({optim::ParamGroup{.params = net->parameters(), .lr = 0.05, .momentum = 0.9}});
      train::fit(*net, opt, *d.train_loader, nullptr, {.epochs = 2, .verbose = 0});
    }
    train::QuantContext quant(*net, {.wbits = 8,
                                     .quantize_first_last = true,
                                     .weight_scale = scale,
                                     .reg = "waveq",
                                     .grid = "wrpn",
                                     .lambda_beta = 0.5,
                                     .reg_warmup = 0.05,
                                     .beta_lr = 2});
    optim::SGD opt(quant.param_groups(base_group(0.01)));
    train::fit(*net, opt, *d.train_loader, nullptr, {.epochs = 3, .verbose = 0}, &quant);
    return quant.final_report(*d.test_loader);
  };
  // On raw w the [-1, 1] grid rounds these small weights to 0 once beta has fallen: lost, and said so.
  const train::QuantReport raw = run("none");
  CAPTURE(train::format_report(raw));
  REQUIRE(raw.fp32.accuracy > 0.9);
  CHECK(raw.quantized.accuracy < 0.5);
  REQUIRE(raw.warnings.size() >= 2);
  CHECK(contains(raw.warnings[0], "the model is lost at these bits"));
  bool names_scale = false;
  for (const auto& w : raw.warnings) names_scale |= contains(w, "--weight-scale max");
  CHECK(names_scale);
  CHECK(contains(train::format_report(raw), "WARNING: the model is lost"));
  // A net that never learned (lr 0: a constant classifier's accuracy) is named as such.
  {
    auto net = small_net(31);
    for (auto& p : net->at<Linear>(7)->parameters()) p.mutable_data().fill_(0.0);  // constant logits
    train::QuantContext quant(*net, {.method = "dorefa", .wbits = 4});
    optim::SGD opt(quant.param_groups(base_group(0.0)));
    train::fit(*net, opt, *d.train_loader, nullptr, {.epochs = 1, .verbose = 0}, &quant);
    const train::QuantReport r = quant.final_report(*d.test_loader);
    REQUIRE(r.warnings.size() == 2);
    CHECK(contains(r.warnings[0], "the model did not learn"));
    CHECK(contains(r.warnings[1], "diverged or stalled"));
  }
  // The default (the grid on w / max|w|) keeps it.
  const train::QuantReport scaled = run("auto");
  CAPTURE(train::format_report(scaled));
  CHECK(scaled.quantized.accuracy > 0.9);
  CHECK(scaled.warnings.empty());
}

TEST_CASE("checkpoints within an epoch, every N batches: a run resumed from one is bit-identical") {
  const std::string out = temp_dir("every");
  auto run = [&](const std::string& dir, int64_t stop, const std::string& resume, int64_t every) {
    Data d;
    auto net = small_net();
    train::QuantContext quant(*net, {.method = "dorefa", .wbits = 4, .reg = "waveq"});
    optim::SGD opt(quant.param_groups(base_group()));
    train::FitOptions fo{.epochs = 2,
                         .out = dir,
                         .resume = resume,
                         .stop_after_batches = stop,
                         .checkpoint_every_batches = every,
                         .verbose = 0};
    train::fit(*net, opt, *d.train_loader, d.test_loader.get(), fo, &quant);
    return net->state_dict();
  };
  const auto straight = run(out + "/straight", -1, "", 0);
  // Stop after 13 batches but keep only the checkpoint written at batch 3 of epoch 2 (every 3).
  run(out + "/cut", 11, "", 3);
  const Checkpoint c = load_checkpoint(out + "/cut/checkpoint.ckpt");
  CHECK(c.get_int("epoch") == 1);
  CHECK(c.get_int("batch") == 3);  // 11 batches = epoch 1 (8) + 3: the every-3 checkpoint
  const auto resumed = run(out + "/cut", -1, out + "/cut/checkpoint.ckpt", 3);
  for (const auto& [name, t] : straight) {
    CAPTURE(name);
    CHECK(max_abs_diff(t, resumed.at(name)) == 0.0);
  }
  // metrics.jsonl: one line per epoch, as the straight run's (the epoch-1 line written once).
  auto lines = [](const std::string& path) {
    std::ifstream in(path);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) n += !line.empty();
    return n;
  };
  CHECK(lines(out + "/cut/metrics.jsonl") == 2);
  std::filesystem::remove_all(out);
}

TEST_CASE("a non-finite loss, gradient or weight stops the run naming where; the last checkpoint is kept") {
  const std::string out = temp_dir("nonfinite");
  Data d;
  // Before batch 6 conv3's bias becomes infinite, and the loss with it: stopped at epoch 1, batch
  // 6, naming the loss, the first module whose output was not finite and the weight; the
  // checkpoint of batch 4 (every 2) is untouched.
  {
    auto net = small_net();
    optim::ParamGroup g = base_group();
    g.params = net->parameters();
    optim::SGD opt({g});
    int calls = 0;
    train::FitOptions fo{.epochs = 1, .out = out + "/a", .checkpoint_every_batches = 2, .verbose = 0};
    fo.step = [&](Module& m, const data::Batch& b) {
      Variable x(b.images);
      if (++calls == 6) net->at<Conv2d>(4)->param("bias").mutable_data().fill_(double(INFINITY));
      Variable logits = m(x);
      return train::StepOutput{cross_entropy(logits, b.labels), logits.data()};
    };
    const std::string e = error_of([&] { train::fit(*net, opt, *d.train_loader, nullptr, fo); });
    CAPTURE(e);
    CHECK(contains(e, "training stopped at epoch 1, batch 6 (step 6): the loss is "));
    CHECK(contains(e, "(the first output that is not finite: conv3) (the weight conv3.bias is not finite)"));
    CHECK(contains(e, "the last checkpoint (" + out + "/a/checkpoint.ckpt) is kept as it was"));
    const Checkpoint c = load_checkpoint(out + "/a/checkpoint.ckpt");
    CHECK(c.get_int("batch") == 4);
    // The same for the classifier's weight, at the next run's first step.
    net->at<Conv2d>(4)->param("bias").mutable_data().fill_(0.0);
    net->at<Linear>(7)->param("weight").mutable_data().fill_(std::nan(""));
    fo.out = "";
    fo.step = nullptr;
    const std::string e2 = error_of([&] { train::fit(*net, opt, *d.train_loader, nullptr, fo); });
    CAPTURE(e2);
    CHECK(contains(e2,
                   "batch 1 (step 6): the loss is nan (the first output that is not finite: fc) (the weight "
                   "fc.weight is not finite)"));
  }
  // A gradient that is not finite while the loss is: named by its parameter.
  {
    auto net = small_net();
    optim::ParamGroup g = base_group();
    g.params = net->parameters();
    optim::SGD opt({g});
    train::FitOptions fo{.epochs = 1, .verbose = 0};
    fo.step = [&](Module& m, const data::Batch& b) {
      Variable logits = m(Variable(b.images));
      // sqrt(0 * b) is 0, its gradient inf * 0 = NaN.
      Variable trap = sum(sqrt(mul(net->at<Linear>(7)->param("bias"), 0.0)));
      return train::StepOutput{cross_entropy(logits, b.labels) + trap, logits.data()};
    };
    const std::string e = error_of([&] { train::fit(*net, opt, *d.train_loader, nullptr, fo); });
    CHECK(contains(e, "batch 1 (step 1): the gradient of fc.bias is not finite"));
  }
  // A step that makes a weight infinite (an absurd learning rate): named after the step.
  {
    auto net = small_net();
    optim::SGD opt({optim::ParamGroup{.params = net->parameters(), .lr = 1e40}});
    const std::string e =
        error_of([&] { train::fit(*net, opt, *d.train_loader, nullptr, {.epochs = 1, .verbose = 0}); });
    CHECK(contains(e, "batch 1 (step 1): the step made the weight conv1.weight not finite"));
  }
  // skip-step: the NaN batches are skipped and counted; the run finishes with finite weights. Too
  // many in a row stop it.
  {
    auto net = small_net();
    optim::SGD opt({optim::ParamGroup{.params = net->parameters(), .lr = 0.05}});
    int calls = 0;
    train::FitOptions fo{.epochs = 2, .on_nonfinite = train::NonFinitePolicy::skip_step, .verbose = 0};
    fo.step = [&](Module& m, const data::Batch& b) {
      ++calls;
      Variable x(calls == 3 || calls == 12 ? math::mul(b.images, std::nan("")) : b.images);
      Variable logits = m(x);
      return train::StepOutput{cross_entropy(logits, b.labels), logits.data()};
    };
    const train::FitResult r = train::fit(*net, opt, *d.train_loader, nullptr, fo);
    CHECK(r.finished);
    CHECK(r.skipped_steps == 2);
    CHECK(opt.step_count() == 2 * 8 - 2);
    for (const auto& p : net->parameters()) CHECK(math::all_finite(p.data()));
    fo.max_skipped_steps = 3;
    fo.step = [&](Module& m, const data::Batch& b) {
      Variable logits = m(Variable(math::mul(b.images, std::nan(""))));
      return train::StepOutput{cross_entropy(logits, b.labels), logits.data()};
    };
    CHECK(contains(error_of([&] { train::fit(*net, opt, *d.train_loader, nullptr, fo); }),
                   "after 3 skipped steps in a row"));
  }
  std::filesystem::remove_all(out);
}
