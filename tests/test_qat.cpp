// Quantization attached to a model without touching its code (quant/qconfig.h), and SinReQ/WaveQ as
// optimizer-level regularizers (quant/regularize.h).
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/ops.h"
#include "core/math.h"
#include "layers/layers.h"
#include "optim/sgd.h"
#include "quant/qconfig.h"
#include "quant/quantizers.h"
#include "quant/regularize.h"

using namespace lowbit;

namespace {

std::shared_ptr<Sequential> small_net(Generator& gen) {
  auto net = std::make_shared<Sequential>();
  net->push_back("conv1", std::make_shared<Conv2d>(3, 4, 3, conv_options(1, 1), true, gen));
  net->push_back("relu1", std::make_shared<ReLU>());
  net->push_back("conv2", std::make_shared<Conv2d>(4, 6, 3, conv_options(2, 1), false, gen));
  net->push_back("relu2", std::make_shared<ReLU>());
  net->push_back("flatten", std::make_shared<Flatten>());
  net->push_back("fc", std::make_shared<Linear>(6 * 4 * 4, 5, true, gen));
  return net;
}

std::vector<double> values(const Variable& v) { return v.data().to_vector(); }

}  // namespace

TEST_CASE("name patterns") {
  CHECK(quant::name_matches("conv1", "conv1"));
  CHECK_FALSE(quant::name_matches("conv1", "conv12"));
  CHECK(quant::name_matches("layer*.conv1", "layer2.1.conv1"));
  CHECK(quant::name_matches("*", "anything"));
  CHECK(quant::name_matches("*fc", "classifier.fc"));
  CHECK_FALSE(quant::name_matches("*fc", "fc.bias"));
  CHECK_THROWS_AS(quant::find_method("int3"), Error);
}

TEST_CASE("DoReFa attached: first and last stay FP32, middle layers and activations are quantized") {
  Generator gen(3);
  auto net = small_net(gen);
  quant::QuantConfig cfg;
  cfg.method = "dorefa";
  cfg.weight_bits = 3;
  cfg.activation_bits = 2;
  quant::Quantization q = quant::attach_quantizers(*net, cfg);
  REQUIRE(q.layers.size() == 3);
  CHECK(q.layers[0].name == "conv1");
  CHECK(*q.layers[0].weight_bits == 32);
  CHECK(*q.layers[1].weight_bits == 3);
  CHECK(*q.layers[2].weight_bits == 32);
  CHECK(q.quantized_layers().size() == 1);
  CHECK(q.activations.size() == 2);

  auto conv1 = net->at<Conv2d>(0);
  auto conv2 = net->at<Conv2d>(2);
  CHECK(values(conv1->effective_weight()) == values(conv1->weight()));
  CHECK(values(conv2->effective_weight()) == values(quant::dorefa_weight(conv2->weight(), 3)));
  // 3-bit DoReFa weights take at most 2^3 distinct values.
  auto v = values(conv2->effective_weight());
  std::sort(v.begin(), v.end());
  CHECK(std::unique(v.begin(), v.end()) - v.begin() <= 8);

  // Activations: relu outputs land on the 2-bit grid {0, 1/3, 2/3, 1}.
  Variable x(Tensor::randn({2, 3, 8, 8}, gen));
  Variable a = (*net->at<ReLU>(1))((*conv1)(x));
  for (double y : values(a)) CHECK(std::fabs(y * 3 - std::round(y * 3)) < 1e-6);

  // Re-targeting one layer changes its quantizer; 32 bits switches it off.
  q.set_weight_bits("conv2", 32);
  CHECK(values(conv2->effective_weight()) == values(conv2->weight()));
  CHECK_THROWS_AS(q.set_weight_bits("nope", 4), Error);
}

TEST_CASE("overrides and first/last quantization") {
  Generator gen(4);
  auto net = small_net(gen);
  quant::QuantConfig cfg;
  cfg.method = "wrpn";
  cfg.weight_bits = 4;
  cfg.quantize_first_last = true;
  cfg.weight_overrides = "first=8,f*=2";
  quant::Quantization q = quant::attach_quantizers(*net, cfg);
  CHECK(*q.layers[0].weight_bits == 8);
  CHECK(*q.layers[1].weight_bits == 4);
  CHECK(*q.layers[2].weight_bits == 2);
  CHECK(q.activations.empty());  // activation_bits 32
  cfg.weight_overrides = "conv2=x";
  CHECK_THROWS_AS(quant::attach_quantizers(*net, cfg), Error);
}

TEST_CASE("gradients reach the float weights through the straight-through weight hook") {
  Generator gen(5);
  auto net = small_net(gen);
  auto conv2 = net->at<Conv2d>(2);
  conv2->weight().mutable_data().copy_(math::mul(conv2->weight().data(), 12.0));  // some |w| > 1: STE mask matters
  quant::QuantConfig cfg;
  cfg.method = "wrpn";
  cfg.weight_bits = 3;
  quant::attach_quantizers(*net, cfg);
  Variable x(Tensor::randn({2, 3, 8, 8}, gen));
  auto loss_of = [&] {
    Variable y = (*net)(x);
    return sum(mul(y, y));
  };
  loss_of().backward();
  const auto g_ste = values(conv2->weight().grad());

  // The same loss with the quantized weight as an explicit leaf: WRPN's surrogate gradient is that
  // leaf's gradient masked by 1[-1 <= w <= 1].
  const auto wv = conv2->weight().data().to_vector();
  Variable wq(quant::wrpn_weight(Variable(conv2->weight().data()), 3).data(), true);
  conv2->set_weight_hook([&](const Variable&) { return wq; });
  net->zero_grad();
  loss_of().backward();
  const auto g_q = values(wq.grad());
  REQUIRE(g_ste.size() == g_q.size());
  int outside = 0;
  for (size_t i = 0; i < g_ste.size(); ++i) {
    const double mask = (wv[i] >= -1 && wv[i] <= 1) ? 1.0 : 0.0;
    outside += mask == 0;
    CHECK(g_ste[i] == doctest::Approx(mask * g_q[i]).epsilon(1e-5));
  }
  CHECK(outside > 0);
}

TEST_CASE("learnable quantizer parameters are registered on the modules (LSQ, PACT)") {
  Generator gen(6);
  auto net = small_net(gen);
  quant::QuantConfig cfg;
  cfg.method = "pact";
  cfg.weight_bits = 4;
  cfg.activation_bits = 4;
  quant::Quantization q = quant::attach_quantizers(*net, cfg);
  CHECK(q.parameter_names == std::vector<std::string>{"relu1.alpha", "relu2.alpha"});
  Variable x(Tensor::randn({2, 3, 8, 8}, gen));
  sum((*net)(x)).backward();
  CHECK(net->at<ReLU>(1)->param("alpha").grad().defined());

  auto net2 = small_net(gen);
  cfg.method = "lsq";
  q = quant::attach_quantizers(*net2, cfg);
  CHECK(q.parameter_names == std::vector<std::string>{"conv2.w_step", "relu1.a_step", "relu2.a_step"});
  const double s0 = net2->at<Conv2d>(2)->param("w_step").item();
  CHECK(s0 == doctest::Approx(quant::lsq_init_step(net2->at<Conv2d>(2)->weight().data(), 4, true)));
  sum((*net2)(x)).backward();
  CHECK(net2->at<ReLU>(1)->param("a_step").item() > 0);  // initialised from the first batch
  CHECK(net2->at<Conv2d>(2)->param("w_step").grad().defined());
}

TEST_CASE("U3 (Uhlich et al.): learnable step and range, bitwidth inferred from them") {
  Generator gen(8);
  auto net = small_net(gen);
  quant::QuantConfig cfg;
  cfg.method = "u3";
  cfg.weight_bits = 4;
  cfg.activation_bits = 4;
  quant::Quantization q = quant::attach_quantizers(*net, cfg);
  CHECK(q.parameter_names == std::vector<std::string>{"conv2.w_d", "conv2.w_qmax", "relu1.a_d", "relu1.a_qmax",
                                                      "relu2.a_d", "relu2.a_qmax"});
  auto conv2 = net->at<Conv2d>(2);
  const double qmax = conv2->param("w_qmax").item(), d = conv2->param("w_d").item();
  // Spec §6.5: d = 2^floor(log2(max|w| / 7)), q_max = 7 d: the start is 4 bits.
  const quant::U3Params init = quant::u3_init_weight(conv2->weight().data(), 4);
  CHECK(d == init.d);
  CHECK(qmax == init.q_max);
  CHECK(std::exp2(std::round(std::log2(d))) == d);
  CHECK(q.stored_weight_bits(q.layers[1]) == 4);  // ceil(log2(qmax/d + 1) + 1) = 4
  CHECK(q.stored_weight_bits(q.layers[0]) == 32);
  Variable x(Tensor::randn({2, 3, 8, 8}, gen));
  sum((*net)(x)).backward();
  CHECK(conv2->param("w_d").grad().defined());
  CHECK(net->at<ReLU>(1)->param("a_qmax").item() > 0);
  // Halving the step adds a bit.
  conv2->param("w_d").mutable_data().fill_(d / 2);
  CHECK(q.stored_weight_bits(q.layers[1]) == 5);
}

TEST_CASE("WaveQ regularizer in an optimizer group: beta learns in its own group, lambda follows the schedule") {
  Generator gen(7);
  Variable w(Tensor::randn({64}, gen, DType::f64, 0, 0.3), true);
  Variable beta(Tensor::full({}, 4.0, DType::f64), true);
  quant::WaveQSchedule sched;
  sched.lambda_w = 1, sched.lambda_beta = 0.5, sched.rise = 0.2, sched.fall = 0.8, sched.width = 0.02;
  auto reg = std::make_shared<quant::WaveQRegularizer>(std::vector<Variable>{w}, std::vector<Variable>{beta},
                                                       quant::WaveQOptions{}, sched);
  std::vector<optim::ParamGroup> groups(2);
  groups[0].name = "weights", groups[0].params = {w}, groups[0].lr = 0.01, groups[0].regularizers = {reg};
  groups[1].name = "bitwidths", groups[1].params = {beta}, groups[1].lr = 0.5;
  optim::SGD opt(std::move(groups));

  reg->set_position(0.0, 10.0);  // phase 1: both lambdas ~0
  CHECK(reg->lambdas().w < 1e-6);
  Variable r0 = opt.regularization_loss();
  CHECK((!r0.defined() || std::fabs(r0.item()) < 1e-6));

  reg->set_position(3.0, 10.0);  // phase 2
  const auto l = reg->lambdas();
  CHECK(l.w == doctest::Approx(1.0).epsilon(1e-3));
  CHECK(l.beta == doctest::Approx(0.5).epsilon(1e-3));
  Variable r = opt.regularization_loss();
  const quant::WaveQTerms t = quant::waveq_penalty({w}, {beta}, {});
  CHECK(r.item() == doctest::Approx(l.w * t.weight_term.item() + l.beta * t.bitwidth_term.item()));
  opt.zero_grad();
  r.backward();
  const double g_beta = beta.grad().item();
  opt.step();
  CHECK(beta.item() == doctest::Approx(4.0 - 0.5 * g_beta));  // the bitwidths group's lr

  // Clamping after the step keeps beta in [1, 8].
  beta.mutable_data().fill_(0.2);
  reg->after_step();
  CHECK(beta.item() == 1.0);

  // SinReQ: lambda is 0 before its warm-up and L after.
  quant::SinReQSchedule ss;
  ss.lambda = 2, ss.warmup = 0.5;
  quant::SinReQRegularizer sr({w}, {3}, quant::SinReQOptions{}, ss);
  sr.set_position(1, 10);
  CHECK(!sr.loss(opt.param_groups()[0], 0).defined());
  sr.set_position(6, 10);
  CHECK(sr.loss(opt.param_groups()[0], 0).item() == doctest::Approx(2 * quant::sinreq_penalty({w}, {3}, {}).item()));
}

TEST_CASE("WaveQ snap_beta: from t = fall T beta is ceil(beta), gets no gradient and stays put") {
  Generator gen(8);
  Variable w(Tensor::randn({64}, gen, DType::f64, 0, 0.3), true);
  Variable beta(Tensor::full({}, 3.4, DType::f64), true);
  quant::WaveQSchedule sched;
  sched.lambda_beta = 0.5, sched.rise = 0.2, sched.fall = 0.8, sched.snap_beta = true;
  auto reg = std::make_shared<quant::WaveQRegularizer>(std::vector<Variable>{w}, std::vector<Variable>{beta},
                                                       quant::WaveQOptions{}, sched);
  std::vector<optim::ParamGroup> groups(2);
  groups[0].name = "weights", groups[0].params = {w}, groups[0].lr = 0.01, groups[0].regularizers = {reg};
  groups[1].name = "bitwidths", groups[1].params = {beta}, groups[1].lr = 0.5, groups[1].weight_decay = 1e-2;
  groups[1].momentum = 0.9;
  optim::SGD opt(std::move(groups));
  auto step = [&] {
    opt.zero_grad();
    opt.regularization_loss().backward();
    opt.step();
    reg->after_step();
  };
  reg->set_position(5.0, 10.0);  // phase 2: beta learns
  step();
  CHECK(!reg->snapped());
  CHECK(beta.item() != doctest::Approx(3.4));
  const double before = beta.item();
  REQUIRE(before > 3.0);
  REQUIRE(before < 4.0);
  reg->set_position(8.0, 10.0);  // phase 3 begins: snapped to ceil(beta) = 4
  step();
  REQUIRE(reg->snapped());
  CHECK(beta.item() == 4.0);
  CHECK((!beta.grad().defined() || beta.grad().item() == 0.0));
  // Momentum carried from phase 2 and weight decay would move it; after_step puts it back, and the
  // weight term is the fixed-period penalty at beta = 4.
  for (int i = 0; i < 3; ++i) step();
  CHECK(beta.item() == 4.0);
  const double lw = reg->lambdas().w;
  Variable b4(Tensor::full({}, 4.0, DType::f64));
  CHECK(reg->loss(opt.param_groups()[0], 0).item() ==
        doctest::Approx(lw * quant::waveq_penalty({w}, {b4}, {}).weight_term.item() + reg->lambdas().beta * 4.0));
}

TEST_CASE("WRPN with the per-layer max scale: levels m * s / (2^(k-1) - 1), straight-through gradient 1") {
  Generator gen(9);
  auto net = small_net(gen);
  auto conv2 = net->at<Conv2d>(2);
  quant::QuantConfig cfg;
  cfg.method = "wrpn";
  cfg.weight_bits = 3;
  cfg.weight_scale = quant::WeightScale::max_abs;
  quant::attach_quantizers(*net, cfg);
  const auto wv = conv2->weight().data().to_vector();
  double s = 0;
  for (double w : wv) s = std::max(s, std::abs(w));
  REQUIRE(s < 0.5);  // Kaiming scale: plain WRPN at 3 bits would zero every weight
  const auto q = values(conv2->effective_weight());
  const double step = s / 3;  // n = 2^(3-1) - 1 = 3 levels per side
  int nonzero = 0;
  for (size_t i = 0; i < wv.size(); ++i) {
    CHECK(q[i] == doctest::Approx(step * std::nearbyint(wv[i] / step)).epsilon(1e-6));
    nonzero += q[i] != 0;
  }
  CHECK(nonzero > int(wv.size()) / 4);
  // STE: d(loss)/dw equals the gradient at the quantized weight (every |w| <= s, mask 1).
  Variable x(Tensor::randn({2, 3, 8, 8}, gen));
  sum(mul((*net)(x), (*net)(x))).backward();
  const auto g_ste = values(conv2->weight().grad());
  Variable wq(conv2->effective_weight().data(), true);
  conv2->set_weight_hook([&](const Variable&) { return wq; });
  net->zero_grad();
  sum(mul((*net)(x), (*net)(x))).backward();
  const auto g_q = values(wq.grad());
  for (size_t i = 0; i < g_ste.size(); ++i) CHECK(g_ste[i] == doctest::Approx(g_q[i]).epsilon(1e-5));
}
