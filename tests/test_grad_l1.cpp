// Gradient-l1 regularization (quant/grad_l1.h; Alizadeh et al., spec §7): the penalty's value against
// gradients taken independently, finite-difference checks of the penalty's own gradient (the gradient
// of the l1 norm of a gradient) in float64 on small conv / batch-norm / residual / depthwise nets, the
// fused batch-norm double backward against its composed twin, and the penalty through the fit loop
// (active only in the last epoch, logged, resumed exactly, and lowering the gradient norms it targets).
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "core/math.h"
#include "core/serialize.h"
#include "deploy_fixtures.h"
#include "layers/layers.h"
#include "models/resnet.h"
#include "models/zoo.h"
#include "optim/sgd.h"
#include "quant/grad_l1.h"
#include "test_util.h"
#include "train/fit.h"
#include "train/quant_context.h"

using namespace lowbit;
using namespace lowbit::testing;

namespace {

Tensor labels_of(std::vector<int32_t> v) { return Tensor::from_vector(v, {static_cast<int64_t>(v.size())}); }

// conv -> BN -> ReLU (fused) -> max pool (or average pool) -> conv (bias) -> BN -> ReLU6 -> global
// average pool -> linear.
std::shared_ptr<Sequential> conv_bn_net(uint64_t seed, bool max_pool = true) {
  Generator gen(seed);
  auto net = std::make_shared<Sequential>();
  net->push_back("conv1", std::make_shared<Conv2d>(2, 3, 3, conv_options(1, 1), false, gen));
  net->push_back("bn1", std::make_shared<BatchNorm2d>(3));
  net->push_back("relu1", std::make_shared<ReLU>());
  if (max_pool)
    net->push_back("pool", std::make_shared<MaxPool2d>(2));
  else
    net->push_back("pool", std::make_shared<AvgPool2d>(2));
  net->push_back("conv2", std::make_shared<Conv2d>(3, 4, 3, conv_options(1, 1), true, gen));
  net->push_back("bn2", std::make_shared<BatchNorm2d>(4));
  net->push_back("relu2", std::make_shared<ReLU6>());
  net->push_back("gap", std::make_shared<GlobalAvgPool2d>());
  net->push_back("fc", std::make_shared<Linear>(4, 3, true, gen));
  return net;
}

// A stem and three ResNet blocks: identity shortcut, zero-pad shortcut (stride 2, option A) and
// projection shortcut (stride 2, option B): residual adds with the ReLU fused into them.
std::shared_ptr<Sequential> residual_net(uint64_t seed) {
  Generator gen(seed);
  using models::BasicBlock;
  using models::ShortcutKind;
  auto net = std::make_shared<Sequential>();
  net->push_back("conv1", std::make_shared<Conv2d>(1, 2, 3, conv_options(1, 1), false, gen));
  net->push_back("bn1", std::make_shared<BatchNorm2d>(2));
  net->push_back("relu", std::make_shared<ReLU>());
  net->push_back("block1", std::make_shared<BasicBlock>(2, 2, 1, ShortcutKind::zero_pad, gen));
  net->push_back("block2", std::make_shared<BasicBlock>(2, 4, 2, ShortcutKind::zero_pad, gen));
  net->push_back("block3", std::make_shared<BasicBlock>(4, 4, 2, ShortcutKind::projection, gen));
  net->push_back("gap", std::make_shared<GlobalAvgPool2d>());
  net->push_back("fc", std::make_shared<Linear>(4, 3, true, gen));
  return net;
}

// MobileNet-style: conv -> BN -> ReLU6, depthwise 3x3 -> BN -> ReLU, pointwise 1x1 -> BN, pool, linear.
std::shared_ptr<Sequential> depthwise_net(uint64_t seed) {
  Generator gen(seed);
  auto net = std::make_shared<Sequential>();
  net->push_back("conv1", std::make_shared<Conv2d>(1, 4, 3, conv_options(1, 1), false, gen));
  net->push_back("bn1", std::make_shared<BatchNorm2d>(4));
  net->push_back("relu1", std::make_shared<ReLU6>());
  net->push_back("dw", std::make_shared<Conv2d>(4, 4, 3, conv_options(2, 1, 4), false, gen));
  net->push_back("bn2", std::make_shared<BatchNorm2d>(4));
  net->push_back("relu2", std::make_shared<ReLU>());
  net->push_back("pw", std::make_shared<Conv2d>(4, 6, 1, conv_options(1, 0), false, gen));
  net->push_back("bn3", std::make_shared<BatchNorm2d>(6));
  net->push_back("gap", std::make_shared<GlobalAvgPool2d>());
  net->push_back("fc", std::make_shared<Linear>(6, 3, true, gen));
  return net;
}

struct Batch {
  Tensor x, y;
};

Batch batch_for(int64_t n, int64_t c, int64_t size, uint64_t seed) {
  Generator gen(seed);
  std::vector<int32_t> y;
  for (int64_t i = 0; i < n; ++i) y.push_back(int32_t(i % 3));
  return {Tensor::randn({n, c, size, size}, gen, DType::f64), labels_of(y)};
}

// P(theta) for the gradient checks: the penalty of the batch's cross-entropy.
quant::GradL1Penalty penalty_of(Module& net, const quant::GradL1Regularizer& gl1, const Batch& b) {
  quant::ActivationCapture capture = gl1.capture();
  const Variable loss = cross_entropy(net(Variable(b.x)), b.y);
  return gl1.penalty(loss, capture.activations());
}

void check_penalty_gradient(Module& net, const Batch& b, quant::GradL1Options options, size_t expect_acts) {
  net.to(DType::f64);
  net.train();
  const quant::GradL1Regularizer gl1(net, options);
  CHECK(gl1.activation_names().size() == expect_acts);
  // The value: the norms of gradients taken by plain backward passes (no recorded graph).
  const quant::GradL1Penalty p = penalty_of(net, gl1, b);
  double weight_l1 = 0, act_l1 = 0;
  {
    quant::ActivationCapture capture = gl1.capture();
    const Variable loss = cross_entropy(net(Variable(b.x)), b.y);
    std::vector<Variable> inputs;
    for (const auto& [name, w] : gl1.weights()) inputs.push_back(w);
    const size_t nw = inputs.size();
    for (const Variable& a : capture.activations()) inputs.push_back(a);
    CHECK(capture.activations().size() == expect_acts);
    const auto g = grad({loss}, inputs, {}, false, false, true);
    for (size_t i = 0; i < g.size(); ++i) {
      // Range scaling: each norm times max|x| of its tensor.
      const double r =
          options.scale == quant::GradL1Scale::range ? math::amax(math::abs(inputs[i].data())).item() : 1.0;
      (i < nw ? weight_l1 : act_l1) += r * math::sum(math::abs(g[i].data())).item();
    }
  }
  if (options.lambda_w > 0) CHECK(p.weight_l1 == doctest::Approx(weight_l1).epsilon(1e-12));
  if (options.lambda_a > 0) CHECK(p.act_l1 == doctest::Approx(act_l1).epsilon(1e-12));
  CHECK(p.value.item() == doctest::Approx(options.lambda_w * p.weight_l1 + options.lambda_a * p.act_l1).epsilon(1e-12));
  CHECK(p.value.item() > 0);
  // The gradient of the penalty: double backward against central differences, every parameter.
  const std::vector<Variable> params = net.parameters();
  const GradcheckResult r = gradcheck([&](const std::vector<Variable>&) { return penalty_of(net, gl1, b).value; },
                                      params, {.eps = 1e-6, .atol = 1e-6, .rtol = 1e-4});
  CHECK_MESSAGE(r.ok, r.message);
}

}  // namespace

TEST_CASE("grad-l1: the penalty and its gradient (conv, batch norm, ReLU, pooling, linear)") {
  const Batch b = batch_for(4, 2, 6, 11);
  constexpr auto range = quant::GradL1Scale::range;
  for (quant::GradL1Options o :
       {quant::GradL1Options{1.0, 0.0}, quant::GradL1Options{0.0, 1.0}, quant::GradL1Options{0.3, 2.0},
        quant::GradL1Options{.lambda_w = 1.0, .lambda_a = 0.0, .scale = range},
        quant::GradL1Options{.lambda_w = 0.0, .lambda_a = 1.0, .scale = range}}) {
    CAPTURE(o.lambda_w);
    CAPTURE(o.lambda_a);
    CAPTURE(int(o.scale));
    auto net = conv_bn_net(3);
    check_penalty_gradient(*net, b, o, 2);
  }
}

TEST_CASE("grad-l1: the penalty's gradient through residual adds (identity, zero-pad, projection)") {
  const Batch b = batch_for(3, 1, 6, 12);
  for (quant::GradL1Options o :
       {quant::GradL1Options{1.0, 0.0}, quant::GradL1Options{0.0, 1.0},
        quant::GradL1Options{.lambda_w = 0.5, .lambda_a = 1.0, .scale = quant::GradL1Scale::range}}) {
    CAPTURE(o.lambda_w);
    CAPTURE(int(o.scale));
    auto net = residual_net(4);
    check_penalty_gradient(*net, b, o, 7);  // the stem's ReLU and two per block
  }
}

TEST_CASE("grad-l1: the penalty's gradient through a depthwise convolution") {
  const Batch b = batch_for(4, 1, 6, 13);
  for (quant::GradL1Options o :
       {quant::GradL1Options{1.0, 0.0}, quant::GradL1Options{0.0, 1.0},
        quant::GradL1Options{.lambda_w = 0.5, .lambda_a = 1.0, .scale = quant::GradL1Scale::range}}) {
    CAPTURE(o.lambda_w);
    CAPTURE(int(o.scale));
    auto net = depthwise_net(5);
    check_penalty_gradient(*net, b, o, 2);
  }
}

// Why range scaling (grad_l1.h): conv1 feeds batch norm, so scaling its weight by 4 changes neither
// the function nor any other gradient, and dL/dW_1 falls by 4; scaling bn1's gamma and beta by 4
// scales relu1's output, which feeds conv2 (bias) -> bn2, and dL/da_1 falls by 4. The unscaled
// penalty falls with both, the range-scaled one stays (up to batch norm's eps).
TEST_CASE("grad-l1: the range-scaled penalty is invariant to the scales batch norm leaves free") {
  const Batch b = batch_for(4, 2, 6, 11);
  auto penalties = [&](int which, quant::GradL1Scale scale) {
    auto net = conv_bn_net(3);
    net->to(DType::f64);
    net->train();
    auto scale_param = [&](const std::string& name) {
      for (auto& [k, p] : net->named_parameters())
        if (k == name) math::mul_(p.mutable_data(), 4.0);
    };
    if (which == 1) scale_param("conv1.weight");
    if (which == 2) scale_param("bn1.weight"), scale_param("bn1.bias");
    const quant::GradL1Regularizer gl1(*net, {.lambda_w = 1, .lambda_a = 1, .scale = scale});
    const quant::GradL1Penalty p = penalty_of(*net, gl1, b);
    return std::pair{p.weight_l1, p.act_l1};
  };
  const auto [w0, a0] = penalties(0, quant::GradL1Scale::none);
  const auto [r_w0, r_a0] = penalties(0, quant::GradL1Scale::range);
  for (int which : {1, 2}) {
    CAPTURE(which);
    const auto [w, a] = penalties(which, quant::GradL1Scale::none);
    const auto [r_w, r_a] = penalties(which, quant::GradL1Scale::range);
    MESSAGE("scaled ", std::string(which == 1 ? "conv1.weight" : "bn1 (gamma, beta)"), " by 4: unscaled terms ", w / w0,
            ", ", a / a0, " of before; range-scaled ", r_w / r_w0, ", ", r_a / r_a0);
    CHECK((which == 1 ? w : a) < 0.97 * (which == 1 ? w0 : a0));  // the unscaled penalty falls
    CHECK(r_w == doctest::Approx(r_w0).epsilon(1e-4));
    CHECK(r_a == doctest::Approx(r_a0).epsilon(1e-4));
  }
}

TEST_CASE("grad-l1: the capture keeps an activation quantizer's hook and puts it back") {
  auto net = conv_bn_net(3);
  auto relu = net->at<ReLU>(2);
  int calls = 0;
  relu->set_output_hook([&calls](const Variable& y) {
    ++calls;
    return mul(y, 2.0);
  });
  const quant::GradL1Regularizer gl1(*net, {});
  const Batch b = batch_for(4, 2, 6, 11);
  {
    quant::ActivationCapture capture = gl1.capture();
    const Variable out = (*net)(Variable(b.x.to(DType::f32)));
    CHECK(calls == 1);
    REQUIRE(capture.activations().size() == 2);
    // a_l is the module's own output (the hook's input): non-negative, while the hook doubles it.
    CHECK(math::amin(capture.activations()[0].data()).item() >= 0.0);
  }
  REQUIRE(relu->output_hook());
  (*net)(Variable(b.x.to(DType::f32)));
  CHECK(calls == 2);
  Variable probe(Tensor::ones({1}));
  CHECK(relu->output_hook()(probe).item() == 2.0);  // the quantizer's hook, not the capture's
}

namespace {

// The derivatives of P = <dL/dx, wx> + <dL/dgamma, wg> + <dL/dbeta, wb> (dL/d. the batch norm's recorded
// first-order gradients for the output gradient v) with respect to x, gamma, beta and v: by the fused
// double-backward kernel (second backward not recorded) and by the composed formulas (recorded).
void check_bn_double_backward(const Shape& shape, bool relu, bool affine, DType dt, double tol) {
  CAPTURE(shape_str(shape));
  CAPTURE(relu);
  CAPTURE(affine);
  const std::string type = dtype_name(dt);
  CAPTURE(type);
  Generator gen(7);
  const int64_t C = shape[1];
  auto make = [&](const Shape& s, double offset) {
    Tensor t = math::add(Tensor::randn(s, gen, dt), offset);
    return s.size() == 4 ? t.contiguous(MemoryFormat::channels_last) : t;
  };
  Variable x(make(shape, 0.3), true), v(make(shape, 0.0), true);
  Variable gamma = affine ? Variable(math::add(Tensor::randn({C}, gen, dt), 1.0), true) : Variable();
  Variable beta = affine ? Variable(Tensor::randn({C}, gen, dt), true) : Variable();
  const Variable wx(make(shape, 0.1));
  const Variable wg(Tensor::randn({C}, gen, dt)), wb(Tensor::randn({C}, gen, dt));
  const Variable y = relu ? batch_norm_relu(x, gamma, beta, Tensor(), Tensor(), true)
                          : batch_norm(x, gamma, beta, Tensor(), Tensor(), true);
  std::vector<Variable> first_inputs{x};
  if (affine) first_inputs.push_back(gamma), first_inputs.push_back(beta);
  const auto g = grad({y}, first_inputs, {v}, true, true);
  Variable P = sum(mul(g[0], wx));
  if (affine) P = add(P, add(sum(mul(g[1], wg)), sum(mul(g[2], wb))));
  std::vector<Variable> second_inputs = first_inputs;
  second_inputs.push_back(v);
  const auto fused = grad({P}, second_inputs, {}, true, /*create_graph=*/false, true);
  const auto composed = grad({P}, second_inputs, {}, true, /*create_graph=*/true, true);
  for (size_t i = 0; i < second_inputs.size(); ++i) {
    CAPTURE(i);
    // beta does not enter the first-order gradients: no second derivative (undefined) on either side.
    CHECK(fused[i].defined() == composed[i].defined());
    CHECK(fused[i].defined() == (i != 2 || !affine));
    if (!fused[i].defined() || !composed[i].defined()) continue;
    const Tensor a = fused[i].data().to(DType::f64), c = composed[i].data().to(DType::f64);
    const double scale = std::max(1e-3, math::amax(math::abs(c)).item());
    CHECK(math::amax(math::abs(math::sub(a, c))).item() / scale < tol);
  }
}

}  // namespace

TEST_CASE("grad-l1: fused batch-norm double backward = its composed twin (ResNet-20 shapes, odd sizes)") {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 5e-4 : 1e-9;
    for (const Shape& s : {Shape{4, 16, 32, 32}, Shape{4, 32, 16, 16}, Shape{4, 64, 8, 8}, Shape{3, 5, 7, 3},
                           Shape{2, 17, 3, 5}, Shape{2, 1, 1, 2}, Shape{5, 3}, Shape{33, 65}})
      for (bool relu : {false, true})
        for (bool affine : {true, false}) check_bn_double_backward(s, relu, affine, dt, tol);
  }
}

namespace {

// Four classes of 8x8 grey images: class c has a bright quadrant c on a noisy background.
data::ImageDataset quadrants(int64_t n, uint64_t seed) { return fixtures::quadrant_images(n, seed, 8, 60, 90, 80); }

std::shared_ptr<Sequential> fit_net() {
  Generator gen(21);
  auto net = std::make_shared<Sequential>();
  net->push_back("conv1", std::make_shared<Conv2d>(1, 8, 3, conv_options(1, 1), false, gen));
  net->push_back("bn1", std::make_shared<BatchNorm2d>(8));
  net->push_back("relu1", std::make_shared<ReLU>());
  net->push_back("pool", std::make_shared<MaxPool2d>(2));
  net->push_back("conv2", std::make_shared<Conv2d>(8, 8, 3, conv_options(1, 1), false, gen));
  net->push_back("bn2", std::make_shared<BatchNorm2d>(8));
  net->push_back("relu2", std::make_shared<ReLU>());
  net->push_back("gap", std::make_shared<GlobalAvgPool2d>());
  net->push_back("fc", std::make_shared<Linear>(8, 4, true, gen));
  return net;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

double json_number(const std::string& js, const std::string& key) {
  const size_t pos = js.find("\"" + key + "\": ");
  REQUIRE_MESSAGE(pos != std::string::npos, key, " not in ", js);
  return std::stod(js.substr(pos + key.size() + 4));
}

struct FitRun {
  std::map<std::string, Tensor> state;
  std::vector<std::string> metrics;
  std::vector<double> losses;  // every step's loss, as the step returned it
};

// Six epochs of 8 batches; with lambda > 0 the gradient-l1 penalty in the last three.
FitRun fit_run(const std::string& dir, double lambda, int64_t stop = -1, bool resume = false,
               const std::string& mode = "exact", bool balance = false, double lambda_a = -1) {
  const data::ImageDataset train_set = quadrants(256, 1), test_set = quadrants(64, 2);
  data::LoaderOptions lo;
  lo.batch_size = 32, lo.seed = 3, lo.prefetch = 0;
  lo.transforms = data::parse_transforms("normalize:0.45:0.2");
  data::DataLoader train(train_set, lo);
  lo.shuffle = false;
  data::DataLoader test(test_set, lo);
  auto net = fit_net();
  train::QuantSpec spec;
  if (lambda > 0) spec.reg = "grad-l1", spec.lambda = lambda, spec.reg_last_epochs = 3, spec.grad_l1_mode = mode;
  spec.grad_l1_balance = balance, spec.lambda_a = lambda_a;
  train::QuantContext quant(*net, spec);
  optim::SGD opt(quant.param_groups({.name = "weights", .lr = 0.05, .weight_decay = 1e-4, .momentum = 0.9}));
  FitRun r;
  train::FitOptions fo{.epochs = 6,
                       .out = dir,
                       .resume = resume ? dir + "/checkpoint.ckpt" : "",
                       .stop_after_batches = stop,
                       .verbose = 0};
  fo.step = [&r](Module& m, const data::Batch& b) {
    const Variable logits = m(Variable(b.images));
    train::StepOutput out{cross_entropy(logits, b.labels), logits.data()};
    r.losses.push_back(out.loss.item());
    return out;
  };
  train::fit(*net, opt, train, &test, fo, &quant);
  for (const auto& [k, v] : net->state_dict()) r.state[k] = v.clone();
  r.metrics = lines_of(dir + "/metrics.jsonl");
  return r;
}

// Sum_l ||dL/dW_l||_1 and sum_l ||dL/da_l||_1 of the cross-entropy (train mode) of the first batch
// of `epoch` as fit_run's loader (shuffle seed 3) gives it; by default 64 held-out images in one batch.
std::pair<double, double> gradient_norms(std::map<std::string, Tensor> state,
                                         const data::ImageDataset& images = quadrants(64, 9), int64_t batch = 64,
                                         bool shuffle = false, int64_t epoch = 0) {
  auto net = fit_net();
  state.erase("grad_l1_lambda_a");  // --grad-l1-balance's buffer: not in the plain net
  net->load_state_dict(state);
  data::LoaderOptions lo;
  lo.batch_size = batch, lo.shuffle = shuffle, lo.seed = 3, lo.prefetch = 0;
  lo.transforms = data::parse_transforms("normalize:0.45:0.2");
  data::DataLoader loader(images, lo);
  loader.begin_epoch(epoch, 0);
  data::Batch b;
  REQUIRE(loader.next(b));
  const quant::GradL1Regularizer gl1(*net, {.lambda_w = 1, .lambda_a = 1});
  const quant::GradL1Penalty p = penalty_of(*net, gl1, {b.images, b.labels});
  return {p.weight_l1, p.act_l1};
}

}  // namespace

TEST_CASE("grad-l1 through fit: off, then on in the last epochs (logged), resumed exactly, lower gradient norms") {
  TempDir dir("grad_l1_fit");
  const double lambda = 0.1;
  const FitRun plain = fit_run(dir / "plain", 0);
  const FitRun reg = fit_run(dir / "reg", lambda);
  REQUIRE(reg.metrics.size() == 6);
  REQUIRE(plain.metrics.size() == 6);
  // Epochs 1-3: the penalty is off: no grad_l1 keys, and training is the unregularized run's, bit for bit.
  for (size_t e = 0; e < 6; ++e) {
    CAPTURE(e);
    CHECK(plain.metrics[e].find("grad_l1") == std::string::npos);
    if (e >= 3) continue;
    CHECK(reg.metrics[e].find("grad_l1") == std::string::npos);
    CHECK(json_number(reg.metrics[e], "train_loss") == json_number(plain.metrics[e], "train_loss"));
    CHECK(json_number(reg.metrics[e], "test_loss") == json_number(plain.metrics[e], "test_loss"));
  }
  // Epochs 4-6: on. Each line carries the penalty (= lambda (weights + activations), means over the
  // epoch), and train_loss stays the cross-entropy the steps returned, without the penalty.
  REQUIRE(reg.losses.size() == 48);
  for (size_t e = 3; e < 6; ++e) {
    CAPTURE(e);
    const std::string& line = reg.metrics[e];
    const double p = json_number(line, "grad_l1"), w = json_number(line, "grad_l1_weights"),
                 a = json_number(line, "grad_l1_acts");
    CHECK(w > 0);
    CHECK(a > 0);
    CHECK(p == doctest::Approx(lambda * (w + a)).epsilon(1e-4));
    double ce = 0;
    for (size_t i = 8 * e; i < 8 * e + 8; ++i) ce += reg.losses[i];
    CHECK(json_number(line, "train_loss") == doctest::Approx(ce / 8).epsilon(1e-5));
  }
  // A real effect: on held-out images the regularized model's gradient norms are well below those of
  // its unregularized twin (same initialisation, data order and first three epochs), at no loss of
  // accuracy on this easy task.
  const auto [w_reg, a_reg] = gradient_norms(reg.state);
  const auto [w_plain, a_plain] = gradient_norms(plain.state);
  MESSAGE("held-out sum ||dL/dW||_1: ", w_reg, " (grad-l1) vs ", w_plain, "; sum ||dL/da||_1: ", a_reg, " vs ",
          a_plain);
  CHECK(w_reg < 0.75 * w_plain);
  CHECK(a_reg < 0.75 * a_plain);
  CHECK(json_number(reg.metrics[5], "test_acc") >= json_number(plain.metrics[5], "test_acc") - 0.05);
  // The finite-difference mode through the same loop: the same first epochs, the penalty logged after,
  // and the same effect on the gradient norms.
  const FitRun fd = fit_run(dir / "fd", lambda, -1, false, "fd");
  REQUIRE(fd.metrics.size() == 6);
  CHECK(json_number(fd.metrics[2], "train_loss") == json_number(plain.metrics[2], "train_loss"));
  CHECK(fd.metrics[2].find("grad_l1") == std::string::npos);
  CHECK(json_number(fd.metrics[3], "grad_l1") == doctest::Approx(json_number(reg.metrics[3], "grad_l1")).epsilon(0.2));
  const auto [w_fd, a_fd] = gradient_norms(fd.state);
  MESSAGE("fd mode: ", w_fd, ", ", a_fd);
  CHECK(w_fd < 0.75 * w_plain);
  CHECK(a_fd < 0.75 * a_plain);
  // Resume: stopped in the middle of a regularized epoch, continued from the checkpoint: the same
  // weights and the same metrics lines (the epoch's penalty sums are in the checkpoint).
  fit_run(dir / "cut", lambda, 35);
  const FitRun resumed = fit_run(dir / "cut", lambda, -1, true);
  for (const auto& [name, t] : reg.state) {
    CAPTURE(name);
    CHECK(math::amax(math::abs(math::sub(t.to(DType::f64), resumed.state.at(name).to(DType::f64)))).item() == 0.0);
  }
  REQUIRE(resumed.metrics.size() == 6);
  for (size_t e = 3; e < 6; ++e)
    for (const char* key : {"train_loss", "grad_l1", "grad_l1_weights", "grad_l1_acts", "test_loss"})
      CHECK(json_number(resumed.metrics[e], key) == json_number(reg.metrics[e], key));
}

TEST_CASE("grad-l1 --grad-l1-balance through fit: lambda_a from the first regularized batch, held, resumed") {
  TempDir dir("grad_l1_balance");
  const double lambda = 0.1;
  for (const std::string mode : {"exact", "fd"}) {
    CAPTURE(mode);
    const std::string d = dir / mode;
    const FitRun bal = fit_run(d + "/bal", lambda, -1, false, mode, true);
    REQUIRE(bal.state.count("grad_l1_lambda_a"));
    const double lambda_a = bal.state.at("grad_l1_lambda_a").item();
    // The value: lambda * weight sums / activation sums at the parameters and on the batch of the first
    // regularized step (epoch 4, batch 1), computed here from a run stopped just before it.
    const FitRun before = fit_run(d + "/before", lambda, 24, false, mode, true);
    CHECK(before.state.at("grad_l1_lambda_a").item() == -1.0);  // not set in the plain epochs
    const auto [w, a] = gradient_norms(before.state, quadrants(256, 1), 32, true, 3);
    MESSAGE(mode, ": weight sums ", w, ", activation sums ", a, ", lambda_a ", lambda_a);
    CHECK(lambda_a == doctest::Approx(lambda * w / a).epsilon(1e-9));
    // Held for the rest of the run and logged each regularized epoch; the extra forward pass that
    // measured it left no trace: the run is the one with that lambda_a given, bit for bit.
    for (size_t e = 3; e < 6; ++e)
      CHECK(json_number(bal.metrics[e], "grad_l1_lambda_a") == doctest::Approx(lambda_a).epsilon(1e-5));
    CHECK(bal.metrics[2].find("grad_l1_lambda_a") == std::string::npos);
    const FitRun given = fit_run(d + "/given", lambda, -1, false, mode, false, lambda_a);
    for (const auto& [name, t] : given.state) {
      CAPTURE(name);
      CHECK(math::amax(math::abs(math::sub(t.to(DType::f64), bal.state.at(name).to(DType::f64)))).item() == 0.0);
    }
    // Stopped in the middle of the regularized epochs and resumed: lambda_a comes from the checkpoint
    // (no second measurement), the weights are the uninterrupted run's.
    fit_run(d + "/cut", lambda, 35, false, mode, true);
    const FitRun resumed = fit_run(d + "/cut", lambda, -1, true, mode, true);
    for (const auto& [name, t] : bal.state) {
      CAPTURE(name);
      CHECK(math::amax(math::abs(math::sub(t.to(DType::f64), resumed.state.at(name).to(DType::f64)))).item() == 0.0);
    }
  }
  // A batch whose loss is not finite measures nothing: lambda_a stays pending for the next batch.
  {
    auto net = fit_net();
    train::QuantSpec spec;
    spec.reg = "grad-l1", spec.lambda = lambda, spec.grad_l1_balance = true;
    train::QuantContext quant(*net, spec);
    const data::Batch b = [] {
      data::LoaderOptions lo;
      lo.batch_size = 32, lo.prefetch = 0;
      const data::ImageDataset images = quadrants(64, 5);
      data::DataLoader loader(images, lo);
      loader.begin_epoch(0, 0);
      data::Batch first;
      REQUIRE(loader.next(first));
      return first;
    }();
    auto loss = [&] { return cross_entropy((*net)(Variable(b.images)), b.labels); };
    CHECK(quant.grad_l1_balance_pending());
    CHECK(quant.balance_grad_l1([&] { return mul(loss(), std::nan("")); }) == -1.0);
    CHECK(quant.grad_l1_balance_pending());
    const double lambda_a = quant.balance_grad_l1(loss);
    CHECK(lambda_a > 0);
    CHECK_FALSE(quant.grad_l1_balance_pending());
    CHECK(net->buffer("grad_l1_lambda_a").item() == lambda_a);
    REQUIRE(quant.grad_l1() != nullptr);
    CHECK(quant.grad_l1()->options().lambda_a == lambda_a);
  }
  // Misuse: with --lambda-a, with lambda 0, or without the grad-l1 regularizer, a clear error.
  auto net = fit_net();
  train::QuantSpec spec;
  spec.reg = "grad-l1", spec.grad_l1_balance = true, spec.lambda_a = 1e-3;
  CHECK_THROWS_WITH_AS(train::QuantContext(*net, spec), doctest::Contains("drop --lambda-a"), Error);
  spec.lambda_a = -1, spec.lambda = 0;
  CHECK_THROWS_WITH_AS(train::QuantContext(*net, spec), doctest::Contains("must be > 0"), Error);
  spec.reg = "none", spec.lambda = 1e-3;
  CHECK_THROWS_WITH_AS(train::QuantContext(*net, spec), doctest::Contains("an option of --reg grad-l1"), Error);
}

namespace {

// Every parameter's gradient after `run`, from zeroed gradients.
std::vector<Tensor> grads_after(Module& net, const std::function<void()>& run) {
  net.zero_grad();
  run();
  std::vector<Tensor> g;
  for (const Variable& p : net.parameters())
    g.push_back(p.grad().defined() ? p.grad().data().clone() : Tensor::zeros(p.shape(), p.dtype()));
  return g;
}

}  // namespace

namespace {

// Every parameter's gradient by the exact mode ((loss + P).backward()) and by fd_step from the same
// state, and the penalties' values; the state after each is checked to be the same.
struct FdAgainstExact {
  std::vector<Tensor> exact, fd;
  std::vector<Tensor> loss_only;  // the plain gradient of the loss: exact - loss_only is dP/dtheta
  double p_exact = 0, p_fd = 0;
};

FdAgainstExact fd_against_exact(Module& net, const Tensor& x, const Tensor& y, quant::GradL1Options exact_opt,
                                quant::GradL1Options fd_opt) {
  std::map<std::string, Tensor> start;
  for (const auto& [k, v] : net.state_dict()) start[k] = v.clone();
  const quant::GradL1Regularizer exact(net, exact_opt), fd(net, fd_opt);
  FdAgainstExact r;
  r.exact = grads_after(net, [&] {
    quant::ActivationCapture capture = exact.capture();
    const Variable loss = cross_entropy(net(Variable(x)), y);
    const quant::GradL1Penalty p = exact.penalty(loss, capture.activations());
    r.p_exact = p.value.item();
    add(loss, p.value).backward();
  });
  std::map<std::string, Tensor> after_exact;
  for (const auto& [k, v] : net.state_dict()) after_exact[k] = v.clone();
  net.load_state_dict(start);
  r.fd = grads_after(
      net, [&] { r.p_fd = fd.fd_step(net, [&] { return cross_entropy(net(Variable(x)), y); }).value.item(); });
  // The weights are put back bit for bit and the batch-norm statistics moved once, as by one forward pass.
  for (const auto& [k, v] : net.state_dict()) {
    CAPTURE(k);
    CHECK(math::amax(math::abs(math::sub(v, after_exact.at(k)))).item() == 0.0);
  }
  net.load_state_dict(start);
  r.loss_only = grads_after(net, [&] { cross_entropy(net(Variable(x)), y).backward(); });
  net.load_state_dict(start);
  return r;
}

// dP/dtheta of each: the step's gradient minus the loss's.
std::vector<Tensor> penalty_part(const std::vector<Tensor>& total, const std::vector<Tensor>& loss_only) {
  std::vector<Tensor> out;
  for (size_t i = 0; i < total.size(); ++i) out.push_back(math::sub(total[i], loss_only[i]));
  return out;
}

double max_relative_difference(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, math::amax(math::abs(math::sub(a[i], b[i]))).item());
    scale = std::max(scale, math::amax(math::abs(b[i])).item());
  }
  return diff / scale;
}

double norm(const std::vector<Tensor>& a) {
  double aa = 0;
  for (const Tensor& t : a) {
    const Tensor x = t.to(DType::f64);
    aa += math::sum(math::mul(x, x)).item();
  }
  return std::sqrt(aa);
}

double cosine(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const Tensor x = a[i].to(DType::f64), y = b[i].to(DType::f64);
    ab += math::sum(math::mul(x, y)).item(), aa += math::sum(math::mul(x, x)).item(),
        bb += math::sum(math::mul(y, y)).item();
  }
  return ab / std::sqrt(aa * bb);
}

// The fd-against-exact nets (float64, train mode) and their batches: 0 conv/BN/average pool, 1 the same
// with max pooling, 2 residual blocks, 3 depthwise.
std::pair<std::shared_ptr<Sequential>, Batch> fd_test_case(int which) {
  auto net = which == 0   ? conv_bn_net(3, false)
             : which == 1 ? conv_bn_net(3, true)
             : which == 2 ? residual_net(4)
                          : depthwise_net(5);
  net->to(DType::f64);
  net->train();
  return {net, batch_for(4, which <= 1 ? 2 : 1, 6, 14)};
}

}  // namespace

TEST_CASE("grad-l1 fd: forward differences of the gradient against the exact double backward (float64)") {
  for (int which = 0; which < 4; ++which) {
    CAPTURE(which);
    // which 1: max pooling over ReLU outputs, where windows of tied zeros get broken by the activation
    // offsets unless the second pass replays the first's winners (kinks frozen, the default).
    const auto [net, b] = fd_test_case(which);
    // Unscaled, then range-scaled (the gradient through r(x) enters the second pass's loss) at two
    // steps: its perturbation is r(x) times the step's, so its O(step) error is larger at one step
    // and must fall tenfold with the step.
    for (quant::GradL1Scale scale : {quant::GradL1Scale::none, quant::GradL1Scale::range}) {
      std::vector<double> rel_p;
      for (double step : {1e-7, 1e-8}) {
        if (scale == quant::GradL1Scale::none && step < 1e-7) continue;
        CAPTURE(int(scale));
        CAPTURE(step);
        const quant::GradL1Options exact_opt{.lambda_w = 0.3, .lambda_a = 0.7, .scale = scale};
        quant::GradL1Options fd_opt = exact_opt;
        fd_opt.mode = quant::GradL1Mode::fd;
        fd_opt.fd_step = step;
        const FdAgainstExact r = fd_against_exact(*net, b.x, b.y, exact_opt, fd_opt);
        CHECK(r.p_fd == doctest::Approx(r.p_exact).epsilon(1e-12));
        const double rel = max_relative_difference(r.fd, r.exact);
        // The penalty's own part, where an error in the range term would show.
        rel_p.push_back(max_relative_difference(penalty_part(r.fd, r.loss_only), penalty_part(r.exact, r.loss_only)));
        MESSAGE("model ", which, " scale ", int(scale), " step ", step, ": max |fd - exact| / max |exact| = ", rel,
                "; of dP/dtheta alone ", rel_p.back());
        CHECK(rel < (scale == quant::GradL1Scale::none ? 1e-5 : 3e-5));
      }
      if (rel_p.size() == 2) {
        CHECK(rel_p[1] < 0.2 * rel_p[0]);
        CHECK(rel_p[1] < 1e-5);
      }
    }
  }
}

// Range scaling's ablations (GradL1Scale): range_fixed keeps the Hessian part of dP/dtheta, range_only
// the ranges' part; the two add up to range's gradient, P is the same, and each fd twin follows its
// exact one (range_only's fd is exact: no second pass).
TEST_CASE("grad-l1 range scaling's ablations: the two parts add up to the whole, fd = exact for each (float64)") {
  for (int which = 0; which < 4; ++which) {
    CAPTURE(which);
    const auto [net, b] = fd_test_case(which);
    std::map<quant::GradL1Scale, FdAgainstExact> runs;
    for (quant::GradL1Scale scale :
         {quant::GradL1Scale::range, quant::GradL1Scale::range_fixed, quant::GradL1Scale::range_only}) {
      CAPTURE(int(scale));
      const quant::GradL1Options exact_opt{.lambda_w = 0.3, .lambda_a = 0.7, .scale = scale};
      quant::GradL1Options fd_opt = exact_opt;
      fd_opt.mode = quant::GradL1Mode::fd;
      fd_opt.fd_step = 1e-8;
      runs[scale] = fd_against_exact(*net, b.x, b.y, exact_opt, fd_opt);
      const FdAgainstExact& r = runs[scale];
      CHECK(r.p_fd == doctest::Approx(r.p_exact).epsilon(1e-12));
      const double rel = max_relative_difference(penalty_part(r.fd, r.loss_only), penalty_part(r.exact, r.loss_only));
      MESSAGE("model ", which, " scale ", int(scale), ": dP/dtheta, max |fd - exact| / max |exact| = ", rel);
      CHECK(rel < (scale == quant::GradL1Scale::range_only ? 1e-9 : 1e-5));
    }
    const FdAgainstExact &whole = runs[quant::GradL1Scale::range], &fixed = runs[quant::GradL1Scale::range_fixed],
                         &only = runs[quant::GradL1Scale::range_only];
    CHECK(fixed.p_exact == doctest::Approx(whole.p_exact).epsilon(1e-12));
    CHECK(only.p_exact == doctest::Approx(whole.p_exact).epsilon(1e-12));
    const std::vector<Tensor> p_whole = penalty_part(whole.exact, whole.loss_only),
                              p_fixed = penalty_part(fixed.exact, fixed.loss_only),
                              p_only = penalty_part(only.exact, only.loss_only);
    std::vector<Tensor> sum;
    for (size_t i = 0; i < p_whole.size(); ++i) sum.push_back(math::add(p_fixed[i], p_only[i]));
    CHECK(max_relative_difference(sum, p_whole) < 1e-10);
    // Neither part is negligible on these nets (else the sum check could not fail).
    CHECK(norm(p_fixed) > 0.05 * norm(p_whole));
    CHECK(norm(p_only) > 0.05 * norm(p_whole));
  }
}

// Steps large enough for ReLU units to cross 0 between the passes. With the kinks frozen the error is
// the O(step) of the smooth parts (the sign-vector perturbation is coherent, so its constant is large)
// and falls tenfold per decade of step; with them free, the switched units add an error that does not
// fall with the step.
TEST_CASE("grad-l1 fd: with frozen kinks the error falls with the step, with free kinks it does not (float64)") {
  // Max pooling over ReLU outputs: windows of tied zeros, which the activation offsets break at any step.
  auto net = conv_bn_net(3, true);
  const Batch b = batch_for(4, 2, 6, 14);
  net->to(DType::f64);
  net->train();
  const quant::GradL1Options exact_opt{.lambda_w = 0.3, .lambda_a = 0.7};
  std::vector<double> e_frozen, e_free;
  for (double step : {1e-3, 1e-4, 1e-5}) {
    quant::GradL1Options frozen = exact_opt, free = exact_opt;
    frozen.mode = free.mode = quant::GradL1Mode::fd;
    frozen.fd_step = free.fd_step = step;
    free.fd_freeze_kinks = false;
    const FdAgainstExact rf = fd_against_exact(*net, b.x, b.y, exact_opt, frozen);
    const FdAgainstExact rn = fd_against_exact(*net, b.x, b.y, exact_opt, free);
    e_frozen.push_back(max_relative_difference(rf.fd, rf.exact));
    e_free.push_back(max_relative_difference(rn.fd, rn.exact));
    MESSAGE("step ", step, ": max relative error frozen ", e_frozen.back(), ", free ", e_free.back(),
            "; cosine frozen ", cosine(rf.fd, rf.exact), ", free ", cosine(rn.fd, rn.exact));
  }
  for (size_t i = 1; i < e_frozen.size(); ++i) CHECK(e_frozen[i] < 0.2 * e_frozen[i - 1]);
  CHECK(e_frozen.back() < 1e-3);
  CHECK(e_free.back() > 100 * e_frozen.back());
}

// ResNet-20 (A) in float32, batch 32, random initialisation: the fd gradient of the whole step against
// the exact one over a range of steps (docs/quantization.md quotes these cosines). Frozen kinks converge
// to the exact gradient as the step falls; free ones move away from it (more units switch per unit of
// step).
TEST_CASE("grad-l1 fd: ResNet-20 in float32, frozen kinks agree with the exact gradient") {
  const auto net = models::create_model("resnet20", {.variant = "A", .seed = 3});
  net->train();
  Generator gen(5);
  const Tensor x = Tensor::randn({32, 3, 32, 32}, gen);
  std::vector<int32_t> labels;
  for (int i = 0; i < 32; ++i) labels.push_back(i % 10);
  const Tensor y = labels_of(labels);
  const quant::GradL1Options exact_opt{.lambda_w = 0.05, .lambda_a = 0.05};
  std::map<double, double> c_frozen, c_free, p_cos_frozen, n_ratio_frozen;
  const double default_step = quant::GradL1Options{}.fd_step;
  for (double step : {3e-3, 1e-4, 1e-5, default_step, 1e-7}) {
    quant::GradL1Options frozen = exact_opt, free = exact_opt;
    frozen.mode = free.mode = quant::GradL1Mode::fd;
    frozen.fd_step = free.fd_step = step;
    free.fd_freeze_kinks = false;
    const FdAgainstExact rf = fd_against_exact(*net, x, y, exact_opt, frozen);
    const FdAgainstExact rn = fd_against_exact(*net, x, y, exact_opt, free);
    c_frozen[step] = cosine(rf.fd, rf.exact), c_free[step] = cosine(rn.fd, rn.exact);
    const double p_frozen = cosine(penalty_part(rf.fd, rf.loss_only), penalty_part(rf.exact, rf.loss_only));
    const double n_ratio = norm(penalty_part(rf.fd, rf.loss_only)) / norm(penalty_part(rf.exact, rf.loss_only));
    n_ratio_frozen[step] = n_ratio;
    const double p_free = cosine(penalty_part(rn.fd, rn.loss_only), penalty_part(rn.exact, rn.loss_only));
    p_cos_frozen[step] = p_frozen;
    MESSAGE("ResNet-20 float32, step ", step, ": cosine(fd, exact) of the step's gradient: kinks frozen ",
            c_frozen[step], ", free ", c_free[step], "; of dP/dtheta alone: frozen ", p_frozen, " (norm ratio ",
            n_ratio, "), free ", p_free);
  }
  CHECK(p_cos_frozen[default_step] > 0.9999);
  CHECK(n_ratio_frozen[default_step] == doctest::Approx(1.0).epsilon(0.01));
  CHECK(p_cos_frozen[1e-5] > 0.999);
  CHECK(c_free[default_step] < c_frozen[default_step] - 0.2);
}
