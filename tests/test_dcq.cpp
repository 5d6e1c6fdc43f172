// DCQ (train/dcq.h, spec §4): the chain of units runs every zoo model exactly, the sections
// partition it, the regression losses and their gradients, a section's boundary loss falls when
// trained through the fit loop, and the sections are independent: trained as concurrent tasks, one
// after another, or each alone in its own run and stitched, they give the same weights bit for bit.
#include <doctest/doctest.h>

#include <cmath>
#include <map>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "core/math.h"
#include "core/parallel.h"
#include "data/loader.h"
#include "deploy_fixtures.h"
#include "layers/layers.h"
#include "models/zoo.h"
#include "optim/sgd.h"
#include "train/dcq.h"
#include "train/evaluate.h"
#include "train/fit.h"
#include "train/quant_context.h"

using namespace lowbit;

namespace {

std::shared_ptr<Module> zoo(const std::string& name, int64_t channels, int64_t size, const std::string& variant = "",
                            uint64_t seed = 7) {
  models::ModelOptions o;
  o.in_channels = channels;
  o.image_size = size;
  o.variant = variant;
  o.seed = seed;
  return models::create_model(name, o);
}

bool same_tensor(const Tensor& a, const Tensor& b) { return a.shape() == b.shape() && a.to_vector() == b.to_vector(); }

// Four classes of 8x8 grey images (a bright quadrant per class), as tests/test_train.cpp.
struct Data {
  fixtures::Loaders loaders{fixtures::quadrant_images(192, 1, 8, 40, 130, 60),
                            fixtures::quadrant_images(64, 2, 8, 40, 130, 60), 32, "normalize:0.4:0.3"};
  std::unique_ptr<data::DataLoader>&train_loader = loaders.train, &test_loader = loaders.test;
};

// The teacher: a ResNet-20 (A) trained in float for 2 epochs on the quadrant images.
const std::map<std::string, Tensor>& teacher_state() {
  static const std::map<std::string, Tensor> state = [] {
    Data d;
    auto net = zoo("resnet20", 1, 8, "A", 11);
    optim::ParamGroup g;
    g.lr = 0.05;
    g.momentum = 0.9;
    for (auto& [name, p] : net->named_parameters()) g.params.push_back(p), g.param_names.push_back(name);
    optim::SGD opt({g});
    train::FitOptions fo;
    fo.epochs = 2;
    fo.verbose = 0;
    train::fit(*net, opt, *d.train_loader, nullptr, fo);
    std::map<std::string, Tensor> s;
    for (const auto& [name, t] : net->state_dict()) s[name] = t.clone();
    return s;
  }();
  return state;
}

// A DCQ run from that teacher: DoReFa binary weights (every layer), the default sections.
struct Run {
  std::shared_ptr<Module> teacher = zoo("resnet20", 1, 8, "A", 11), student = zoo("resnet20", 1, 8, "A", 11);
  std::unique_ptr<train::QuantContext> quant;
  std::unique_ptr<train::Dcq> dcq;
  std::unique_ptr<optim::SGD> opt;
  explicit Run(const train::DcqOptions& options) {
    teacher->load_state_dict(teacher_state());
    student->load_state_dict(teacher_state());
    train::QuantSpec spec;
    spec.method = "dorefa";
    spec.wbits = 1;
    spec.abits = 32;
    spec.quantize_first_last = true;
    quant = std::make_unique<train::QuantContext>(*student, spec);
    dcq = std::make_unique<train::Dcq>(*teacher, *student, options, std::vector<int64_t>{1, 8, 8});
    optim::ParamGroup base;
    base.lr = 0.02;
    base.momentum = 0.9;
    base.weight_decay = 1e-4;
    opt = std::make_unique<optim::SGD>(dcq->section_groups(quant->param_groups(base)));
  }
  train::FitResult fit(Data& d, int64_t epochs = 1, data::DataLoader* calibration = nullptr) {
    train::FitOptions fo;
    fo.epochs = epochs;
    fo.verbose = 0;
    fo = dcq->fit_options(fo, calibration ? d.test_loader.get() : nullptr, calibration);
    return train::fit(*student, *opt, *d.train_loader, d.test_loader.get(), fo, quant.get());
  }
};

}  // namespace

TEST_CASE("the chain of units runs every zoo model exactly as its forward pass") {
  struct Case {
    std::string name, variant;
    int64_t channels, size;
  };
  for (const Case& c : {Case{"lenet5", "", 1, 28}, Case{"simplenet_cifar", "", 3, 32}, Case{"resnet20", "A", 3, 16},
                        Case{"resnet20", "B", 3, 16}, Case{"vgg11_bn", "", 3, 32}, Case{"mobilenet_v1", "cifar", 3, 32},
                        Case{"mobilenet_v2", "cifar", 3, 32}, Case{"svhn_net", "", 3, 32}}) {
    CAPTURE(c.name);
    auto model = zoo(c.name, c.channels, c.size, c.variant);
    const auto chain = train::module_chain(*model);
    CHECK(chain.size() > 3);
    Generator gen(5);
    const Variable x(Tensor::randn({2, c.channels, c.size, c.size}, gen));
    bool dropout = false;
    model->apply([&](const std::string&, Module& m) { dropout = dropout || m.type_name() == "Dropout"; });
    for (bool training : {false, true}) {
      if (dropout && training) continue;  // dropout's draws differ between two passes
      model->train(training);
      NoGradGuard ng;
      CHECK(same_tensor((*model)(x).data(), train::run_chain(chain, 0, chain.size(), x).data()));
    }
  }
}

TEST_CASE("sections: default cuts, names of units and containers, errors") {
  auto resnet = zoo("resnet20", 3, 32, "A");
  CHECK(train::default_cuts(*resnet, {3, 32, 32}) == std::vector<std::string>{"layer1.2", "layer2.2"});
  auto lenet = zoo("lenet5", 1, 28);
  CHECK(train::default_cuts(*lenet, {1, 28, 28}) == std::vector<std::string>{"relu1", "relu2"});

  const auto chain = train::module_chain(*resnet);
  const auto by_unit = train::make_sections(chain, {"layer2.2", "layer1.2"});  // any order
  const auto by_container = train::make_sections(chain, {"layer1", "layer2"});
  REQUIRE(by_unit.size() == 3);
  REQUIRE(by_container.size() == 3);
  for (size_t i = 0; i < 3; ++i)
    CHECK((by_unit[i].begin == by_container[i].begin && by_unit[i].end == by_container[i].end));
  CHECK(by_unit[0].first == "conv1");
  CHECK(by_unit[0].last == "layer1.2");
  CHECK(by_unit[1].first == "layer2.0");
  CHECK(by_unit[2].last == "fc");
  CHECK(by_unit[2].end == chain.size());
  CHECK_THROWS_WITH_AS(train::make_sections(chain, {"layer9"}), doctest::Contains("'layer9' is not a unit"), Error);
  CHECK_THROWS_WITH_AS(train::make_sections(chain, {"fc"}), doctest::Contains("last section empty"), Error);
  CHECK_THROWS_WITH_AS(train::make_sections(chain, {"layer1", "layer1.2"}), doctest::Contains("same place"), Error);
}

TEST_CASE("the stitched student is its sections chained") {
  train::DcqOptions o;
  Run run(o);
  const auto& chain = run.dcq->student_chain();
  Generator gen(9);
  const Variable x(Tensor::randn({3, 1, 8, 8}, gen));
  for (bool training : {false, true}) {
    run.student->train(training);
    NoGradGuard ng;
    Variable y = x;
    for (const auto& s : run.dcq->sections()) y = train::run_chain(chain, s.begin, s.end, y);
    CHECK(same_tensor((*run.student)(x).data(), y.data()));
  }
}

TEST_CASE("regression losses: values by hand and gradients by finite differences") {
  const Tensor t = Tensor::from_list({0.0, 2.5}, {1, 2}, DType::f64);
  const Variable s(Tensor::from_list({1.0, 2.0}, {1, 2}, DType::f64));
  // d = s - t = (1, -0.5)
  CHECK(train::distill_loss(s, t, train::DistillLoss::mse).item() == doctest::Approx(0.625));
  CHECK(train::distill_loss(s, t, train::DistillLoss::l1).item() == doctest::Approx(0.75));
  // Huber at 0.4: both beyond delta, 0.4 (1 - 0.2) and 0.4 (0.5 - 0.2); at 0.8: 0.8 (1 - 0.4) and 0.5 * 0.25.
  CHECK(train::distill_loss(s, t, train::DistillLoss::huber, 0.4).item() == doctest::Approx((0.32 + 0.12) / 2));
  CHECK(train::distill_loss(s, t, train::DistillLoss::huber, 0.8).item() == doctest::Approx((0.48 + 0.125) / 2));
  // KL(p_t || p_s) of softmax(0, 2.5) and softmax(1, 2).
  const double zt = std::exp(0.0) + std::exp(2.5), zs = std::exp(1.0) + std::exp(2.0);
  const double p0 = 1 / zt, p1 = std::exp(2.5) / zt, q0 = std::exp(1.0) / zs, q1 = std::exp(2.0) / zs;
  CHECK(train::distill_loss(s, t, train::DistillLoss::kl).item() ==
        doctest::Approx(p0 * std::log(p0 / q0) + p1 * std::log(p1 / q1)));
  CHECK_THROWS_WITH_AS(train::distill_loss(s, Tensor::zeros({2, 1}, DType::f64), train::DistillLoss::mse),
                       doctest::Contains("differ in shape"), Error);

  Generator gen(3);
  const Tensor target = Tensor::randn({2, 3, 2, 2}, gen, DType::f64);
  for (auto loss :
       {train::DistillLoss::mse, train::DistillLoss::l1, train::DistillLoss::huber, train::DistillLoss::kl}) {
    CAPTURE(train::to_string(loss));
    Variable x(Tensor::randn({2, 3, 2, 2}, gen, DType::f64, 0, 0.7), true);
    const auto r =
        gradcheck([&](const std::vector<Variable>& v) { return train::distill_loss(v[0], target, loss, 0.4); }, {x});
    CHECK_MESSAGE(r.ok, r.message);
  }
}

TEST_CASE("DCQ through the fit loop: every section's boundary loss falls") {
  Data d;
  train::DcqOptions o;
  Run run(o);
  const std::vector<double> before = run.dcq->section_losses(*d.test_loader);
  const train::FitResult r = run.fit(d, 3);
  CHECK(r.finished);
  const std::vector<double> after = run.dcq->section_losses(*d.test_loader);
  REQUIRE(before.size() == 3);
  for (size_t i = 0; i < before.size(); ++i) {
    CAPTURE(i);
    CAPTURE(before[i]);
    CAPTURE(after[i]);
    CHECK(after[i] < 0.7 * before[i]);
  }
  // The epoch's evaluation is the stitched network's.
  CHECK(r.last_eval.accuracy == doctest::Approx(train::evaluate(*run.student, *d.test_loader).accuracy));
}

TEST_CASE("sections trained as concurrent tasks, one after another, or alone and stitched: the same weights") {
  const int threads = num_threads();
  set_num_threads(2);
  Data d;
  train::DcqOptions parallel_options;
  Run parallel(parallel_options);
  parallel.fit(d);
  train::DcqOptions sequential_options;
  sequential_options.parallel = false;
  Run sequential(sequential_options);
  sequential.fit(d);
  const auto p = parallel.student->state_dict(), s = sequential.student->state_dict();
  for (const auto& [name, t] : p) {
    CAPTURE(name);
    CHECK(same_tensor(t, s.at(name)));
  }

  // Each section alone (the others keep the teacher's weights), then stitched by section.
  const auto teacher = parallel.teacher->state_dict();
  std::map<std::string, Tensor> stitched;
  for (int64_t i = 0; i < 3; ++i) {
    train::DcqOptions alone_options;
    alone_options.train_sections = {i};
    Run alone(alone_options);
    alone.fit(d);
    for (const auto& [name, t] : alone.student->state_dict()) {
      const int64_t section = alone.dcq->section_of(name);
      REQUIRE(section >= 0);
      if (section == i)
        stitched[name] = t.clone();
      else
        CHECK_MESSAGE(same_tensor(t, teacher.at(name)), name, " of an untrained section moved");
    }
  }
  for (const auto& [name, t] : p) {
    CAPTURE(name);
    CHECK(same_tensor(t, stitched.at(name)));
  }
  set_num_threads(threads);
}

TEST_CASE("batch-norm recalibration: the cumulative mean of the batches' statistics, nothing else changed") {
  Generator g(5);
  auto conv = std::make_shared<Conv2d>(1, 3, 3, Conv2dOptions{.padding = {1, 1}}, true, g);
  auto bn = std::make_shared<BatchNorm2d>(3);
  auto net = std::make_shared<Sequential>(conv, std::make_shared<Dropout>(0.5, 3), bn, std::make_shared<ReLU>());
  net->train();
  Data d;
  {  // some training-mode forwards: running statistics away from the recalibrated ones
    NoGradGuard ng;
    d.train_loader->begin_epoch(0, 0);
    data::Batch b;
    for (int i = 0; i < 2 && d.train_loader->next(b); ++i) (*net)(Variable(math::mul(b.images, 3.0)));
  }
  const std::vector<double> weight = conv->named_parameters().at(0).second.data().to_vector();

  // By hand: each of the first 3 batches' per-channel mean and unbiased variance of conv(x), averaged.
  const int64_t batches = 3;
  std::vector<double> mean(3, 0), var(3, 0);
  {
    NoGradGuard ng;
    d.train_loader->begin_epoch(0, 0);
    data::Batch b;
    for (int64_t t = 0; t < batches && d.train_loader->next(b); ++t) {
      const Tensor y = (*conv)(Variable(b.images)).data();  // [N, 3, H, W]
      const int64_t N = y.size(0), HW = y.size(2) * y.size(3), n = N * HW;
      const std::vector<double> v = y.to_vector();
      for (int64_t c = 0; c < 3; ++c) {
        double s = 0, ss = 0;
        for (int64_t i = 0; i < N; ++i)
          for (int64_t k = 0; k < HW; ++k) s += v[size_t((i * 3 + c) * HW + k)];
        const double m = s / double(n);
        for (int64_t i = 0; i < N; ++i)
          for (int64_t k = 0; k < HW; ++k) ss += std::pow(v[size_t((i * 3 + c) * HW + k)] - m, 2);
        mean[size_t(c)] += m / double(batches);
        var[size_t(c)] += ss / double(n - 1) / double(batches);
      }
    }
  }
  CHECK(train::recalibrate_batch_norm(*net, *d.train_loader, batches) == 1);
  const std::vector<double> rm = bn->buffer("running_mean").to_vector(), rv = bn->buffer("running_var").to_vector();
  for (size_t c = 0; c < 3; ++c) {
    CAPTURE(c);
    CHECK(rm[c] == doctest::Approx(mean[c]).epsilon(1e-5));
    CHECK(rv[c] == doctest::Approx(var[c]).epsilon(1e-5));
  }
  // Mode, momentum and parameters as before; dropout was off (else the statistics above differ).
  CHECK(net->is_training());
  CHECK(bn->is_training());
  CHECK(bn->options().momentum == 0.1);
  CHECK(conv->named_parameters().at(0).second.data().to_vector() == weight);
  // A net without batch norms: nothing to do, the loader untouched.
  Sequential plain(std::make_shared<Conv2d>(1, 2, 3, Conv2dOptions{}, true, g));
  CHECK(train::recalibrate_batch_norm(plain, *d.train_loader, 2) == 0);
  CHECK_THROWS_WITH(train::recalibrate_batch_norm(*net, *d.train_loader, 0), doctest::Contains("batches must be >= 1"));
}

TEST_CASE("DCQ with batch-norm recalibration: each evaluation recalibrates the stitched network first") {
  Data d;
  train::DcqOptions o;
  o.recalibrate_bn_batches = 4;
  Run run(o);
  const train::FitResult r = run.fit(d, 2, d.train_loader.get());
  REQUIRE(r.finished);
  REQUIRE(run.dcq->unrecalibrated().images == 64);
  // The statistics the run ended with are those of recalibrating its weights (the evaluation's).
  std::map<std::string, std::vector<double>> after;
  for (const auto& [name, t] : run.student->state_dict()) after[name] = t.to_vector();
  CHECK(r.last_eval.accuracy == doctest::Approx(train::evaluate(*run.student, *d.test_loader).accuracy));
  train::recalibrate_batch_norm(*run.student, *d.train_loader, 4);
  int64_t running = 0;
  for (const auto& [name, t] : run.student->state_dict()) {
    CAPTURE(name);
    CHECK(t.to_vector() == after.at(name));
    running += name.find("running_") != std::string::npos;
  }
  CHECK(running > 0);
  // Without recalibration the same weights keep the statistics of training (on the teacher's features).
  Run plain(train::DcqOptions{});
  plain.fit(d, 2);
  const auto p = plain.student->state_dict();
  int64_t differ = 0;
  for (const auto& [name, t] : run.student->state_dict()) {
    if (name.find("running_") == std::string::npos) {
      CAPTURE(name);
      CHECK(same_tensor(t, p.at(name)));
    } else {
      differ += !same_tensor(t, p.at(name));
    }
  }
  CHECK(differ > 0);
}
