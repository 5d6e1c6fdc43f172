// Module system and layers: float64 gradient checks, hierarchical naming, state dicts, train/eval
// behaviour, initialisation statistics and the quantization hooks.
#include <doctest/doctest.h>

#include <cmath>
#include <sstream>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "core/math.h"
#include "layers/layers.h"

using namespace lowbit;

namespace {

// Gradient check of a module's output with respect to its input and all its parameters (float64).
void check_module_grad(Module& m, const Shape& input_shape, uint64_t seed = 7) {
  m.to(DType::f64);
  Generator gen(seed);
  Variable x(Tensor::randn(input_shape, gen, DType::f64), true);
  std::vector<Variable> inputs{x};
  for (auto& p : m.parameters()) inputs.push_back(p);
  const auto res = gradcheck([&](const std::vector<Variable>& in) { return m(in[0]); }, inputs);
  INFO(m.str(), ": ", res.message);
  CHECK(res.ok);
}

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Variable>>& v) {
  std::vector<std::string> out;
  for (auto& [n, _] : v) out.push_back(n);
  return out;
}

}  // namespace

TEST_CASE("gradcheck: Linear, with and without bias") {
  Generator g(1);
  Linear a(4, 3, true, g), b(5, 2, false, g);
  CHECK(a.parameters().size() == 2);
  CHECK(b.parameters().size() == 1);
  check_module_grad(a, {2, 4});
  check_module_grad(b, {3, 5});
}

TEST_CASE("gradcheck: Conv2d plain, strided, grouped, depthwise") {
  Generator g(2);
  Conv2d plain(3, 4, 3, conv_options(1, 1), true, g);
  Conv2d grouped(4, 6, {3, 2}, conv_options(2, 1, 2), true, g);
  Conv2d depthwise(3, 3, 3, conv_options(1, 1, 3), false, g);
  CHECK(grouped.weight().shape() == Shape{6, 2, 3, 2});
  CHECK(depthwise.is_depthwise());
  check_module_grad(plain, {2, 3, 5, 5});
  check_module_grad(grouped, {1, 4, 6, 5});
  check_module_grad(depthwise, {2, 3, 4, 4});
}

TEST_CASE("gradcheck: BatchNorm1d / BatchNorm2d in train and eval mode") {
  BatchNorm1d bn1(3);
  BatchNorm2d bn2(3);
  // Non-trivial affine parameters so that their gradients matter.
  Generator g(3);
  for (Module* m : std::initializer_list<Module*>{&bn1, &bn2})
    for (auto& p : m->parameters()) p.mutable_data().copy_(Tensor::randn(p.shape(), g));
  check_module_grad(bn1, {6, 3});
  check_module_grad(bn2, {2, 3, 3, 3});
  BatchNorm1d bn1l(2);
  check_module_grad(bn1l, {3, 2, 4});  // [N, C, L]
  bn2.eval();
  check_module_grad(bn2, {2, 3, 2, 2});
}

TEST_CASE("gradcheck: LocalResponseNorm (odd and even window)") {
  LocalResponseNorm odd(3, 0.5, 0.75, 2.0), even(2, 1e-1, 0.6, 1.0);
  check_module_grad(odd, {2, 5, 3, 2});
  check_module_grad(even, {1, 4, 2, 3});
}

TEST_CASE("LocalResponseNorm matches the PyTorch formula computed directly") {
  Generator g(4);
  const int64_t N = 2, C = 6, H = 2, W = 3, n = 5;
  const double alpha = 0.3, beta = 0.75, k = 2;
  Tensor x = Tensor::randn({N, C, H, W}, g, DType::f64);
  LocalResponseNorm lrn(n, alpha, beta, k);
  const Tensor y = lrn(Variable(x)).data().contiguous();
  const auto xv = x.to_vector(), yv = y.to_vector();
  double max_err = 0;
  for (int64_t b = 0; b < N; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t s = 0; s < H * W; ++s) {
        double acc = 0;
        for (int64_t c2 = c - n / 2; c2 <= c + (n - 1) / 2; ++c2)
          if (c2 >= 0 && c2 < C) acc += std::pow(xv[(b * C + c2) * H * W + s], 2);
        const double expect = xv[(b * C + c) * H * W + s] / std::pow(k + alpha / n * acc, beta);
        max_err = std::max(max_err, std::abs(expect - yv[(b * C + c) * H * W + s]));
      }
  CHECK(max_err < 1e-12);
}

TEST_CASE("gradcheck: Sequential chain conv-bn-relu-pool-flatten-linear and Residual") {
  Generator g(5);
  Sequential net(std::make_shared<Conv2d>(2, 3, 3, conv_options(1, 1), false, g), std::make_shared<BatchNorm2d>(3),
                 std::make_shared<ReLU>(), std::make_shared<AvgPool2d>(2), std::make_shared<Flatten>(),
                 std::make_shared<Linear>(12, 2, true, g));
  check_module_grad(net, {2, 2, 4, 4});

  auto body = std::make_shared<Sequential>(std::make_shared<Conv2d>(2, 2, 3, conv_options(1, 1), true, g),
                                           std::make_shared<Tanh>());
  Residual res(body, std::make_shared<Conv2d>(2, 2, 1, Conv2dOptions{}, false, g));
  check_module_grad(res, {1, 2, 3, 3});
}

TEST_CASE("hierarchical names, registration order, named_modules and apply") {
  auto make_block = [] {
    auto b = std::make_shared<Sequential>();
    b->push_back("conv1", std::make_shared<Conv2d>(2, 2, 3, conv_options(1, 1), false));
    b->push_back("bn1", std::make_shared<BatchNorm2d>(2));
    return b;
  };
  auto net = std::make_shared<Sequential>();
  net->push_back("conv1", std::make_shared<Conv2d>(1, 2, 3));
  auto layer2 = net->push_back("layer2", std::make_shared<Sequential>(make_block(), make_block()));
  net->push_back("fc", std::make_shared<Linear>(2, 3));

  const std::vector<std::string> expect = {"conv1.weight",
                                           "conv1.bias",
                                           "layer2.0.conv1.weight",
                                           "layer2.0.bn1.weight",
                                           "layer2.0.bn1.bias",
                                           "layer2.1.conv1.weight",
                                           "layer2.1.bn1.weight",
                                           "layer2.1.bn1.bias",
                                           "fc.weight",
                                           "fc.bias"};
  CHECK(names_of(net->named_parameters()) == expect);
  CHECK(names_of(net->named_parameters(false)).empty());
  const auto bufs = net->named_buffers();
  REQUIRE(bufs.size() == 4);
  CHECK(bufs[2].first == "layer2.1.bn1.running_mean");

  const auto mods = net->named_modules();
  REQUIRE(mods.size() == 10);
  CHECK(mods[0].first == "");
  CHECK(mods[0].second.get() == net.get());
  CHECK(mods[5].first == "layer2.0.bn1");
  CHECK(mods[6].first == "layer2.1");
  CHECK(mods[7].first == "layer2.1.conv1");
  CHECK(mods[9].first == "fc");
  CHECK(dynamic_cast<Conv2d*>(mods[7].second.get()) != nullptr);
  CHECK(net->named_children().size() == 3);
  CHECK((*layer2)[1].get() == mods[6].second.get());

  std::vector<std::string> convs;
  net->apply([&](const std::string& name, Module& m) {
    if (dynamic_cast<Conv2d*>(&m)) convs.push_back(name);
  });
  CHECK(convs == std::vector<std::string>{"conv1", "layer2.0.conv1", "layer2.1.conv1"});

  const int64_t count = (2 * 9 + 2) + 2 * (2 * 2 * 9 + 2 + 2) + (3 * 2 + 3);
  CHECK(net->num_parameters() == count);
  net->at<Linear>(2)->register_parameter("frozen", Tensor::zeros({4}), /*requires_grad=*/false);
  CHECK(net->num_parameters() == count + 4);
  CHECK(net->num_parameters(/*trainable_only=*/true) == count);
}

TEST_CASE("param(), duplicate names and Sequential indexing report errors") {
  Linear fc(2, 3);
  CHECK(fc.param("weight").same(fc.weight()));
  CHECK_THROWS_WITH_AS(fc.param("gamma"), doctest::Contains("Linear::param: no parameter 'gamma'"), Error);
  CHECK_THROWS_AS(fc.register_parameter("weight", Tensor::zeros({1})), Error);
  CHECK_THROWS_AS(fc.register_buffer("a.b", Tensor::zeros({1})), Error);
  Sequential s(std::make_shared<ReLU>());
  CHECK_THROWS_WITH_AS(s[3], doctest::Contains("out of range"), Error);
  CHECK_THROWS_AS(s.at<Linear>(0), Error);
  CHECK(s.at<ReLU>(0) != nullptr);
}

TEST_CASE("state_dict round trip, storage sharing and strict errors") {
  auto make = [](uint64_t seed) {
    Generator g(seed);
    return std::make_shared<Sequential>(std::make_shared<Conv2d>(1, 2, 3, Conv2dOptions{}, true, g),
                                        std::make_shared<BatchNorm2d>(2), std::make_shared<Flatten>(),
                                        std::make_shared<Linear>(8, 3, true, g));
  };
  auto a = make(1), b = make(2);
  Generator g(9);
  const Variable x(Tensor::randn({4, 1, 4, 4}, g));
  (*a)(x);  // moves a's running statistics away from their initial values
  a->eval();
  b->eval();
  CHECK(max_abs_diff((*a)(x).data(), (*b)(x).data()) > 1e-3);

  const auto sd = a->state_dict();
  CHECK(sd.size() == 8);  // conv w,b; bn w,b,running_mean,running_var; fc w,b
  CHECK(sd.count("1.running_var") == 1);
  b->load_state_dict(sd);
  CHECK(max_abs_diff((*a)(x).data(), (*b)(x).data()) == 0);
  CHECK(!b->state_dict().at("0.weight").shares_storage(sd.at("0.weight")));

  // state_dict tensors alias the module's parameters.
  Tensor w = a->state_dict().at("3.bias");
  w.fill_(5);
  CHECK(a->at<Linear>(3)->bias().data().to_vector()[0] == 5);

  auto missing = sd;
  missing.erase("1.running_mean");
  CHECK_THROWS_WITH_AS(b->load_state_dict(missing), doctest::Contains("missing keys [1.running_mean]"), Error);
  b->load_state_dict(missing, /*strict=*/false);

  auto unexpected = sd;
  unexpected["4.weight"] = Tensor::zeros({1});
  CHECK_THROWS_WITH_AS(b->load_state_dict(unexpected), doctest::Contains("unexpected keys [4.weight]"), Error);

  auto wrong_shape = sd;
  wrong_shape["3.weight"] = Tensor::zeros({3, 9});
  CHECK_THROWS_WITH_AS(b->load_state_dict(wrong_shape, false),
                       doctest::Contains("shape mismatch for '3.weight': checkpoint [3, 9], module [3, 8]"), Error);

  auto wrong_dtype = sd;
  wrong_dtype["3.bias"] = Tensor::zeros({3}, DType::f64);
  CHECK_THROWS_WITH_AS(b->load_state_dict(wrong_dtype), doctest::Contains("dtype mismatch for '3.bias'"), Error);
  b->load_state_dict(wrong_dtype, false);  // converted
  CHECK(b->at<Linear>(3)->bias().data().to_vector() == std::vector<double>{0, 0, 0});
}

TEST_CASE("to(float64) converts parameters and buffers in place, keeping Variable identity") {
  BatchNorm2d bn(3);
  const Variable w = bn.param("weight");
  bn.to(DType::f64);
  CHECK(w.same(bn.param("weight")));
  CHECK(w.dtype() == DType::f64);
  CHECK(bn.buffer("running_var").dtype() == DType::f64);
}

TEST_CASE("train/eval: Dropout identity in eval, Bernoulli mask in training; BN running statistics") {
  Dropout drop(0.25, 42);
  Variable x(Tensor::ones({10000}));
  drop.eval();
  CHECK(!drop.is_training());
  CHECK(drop(x).same(x));
  drop.train();
  const auto y = drop(x).data().to_vector();
  int64_t zeros = 0;
  for (double v : y) {
    if (v == 0)
      ++zeros;
    else
      CHECK(std::abs(v - 1 / 0.75) < 1e-6);
  }
  CHECK(std::abs(zeros / 10000.0 - 0.25) < 0.02);  // ~6 standard deviations
  // The generator state determines the mask.
  const uint64_t seed = drop.generator().seed(), offset = drop.generator().offset();
  const Tensor m1 = drop(x).data();
  drop.generator().set_state(seed, offset);
  CHECK(max_abs_diff(drop(x).data(), m1) == 0);

  BatchNorm2d bn(2, {.eps = 1e-3, .momentum = 0.2});
  Generator g(3);
  Tensor xb = Tensor::randn({4, 2, 3, 3}, g, DType::f32, 1.5, 2.0);
  bn(Variable(xb));
  const Tensor batch_mean = math::mean(xb, {0, 2, 3});
  const Tensor batch_var = math::var(xb, {0, 2, 3}, /*unbiased=*/true);
  CHECK(allclose(bn.buffer("running_mean"), math::mul(batch_mean, 0.2), 1e-5, 1e-6));
  CHECK(allclose(bn.buffer("running_var"), math::add(math::mul(batch_var, 0.2), 0.8), 1e-5, 1e-6));
  bn.eval();
  const Tensor y_eval = bn(Variable(xb)).data();
  const Tensor rm = bn.buffer("running_mean").reshape({1, 2, 1, 1}),
               rv = bn.buffer("running_var").reshape({1, 2, 1, 1});
  const Tensor expect = math::div(math::sub(xb, rm), math::sqrt(math::add(rv, 1e-3)));
  CHECK(allclose(y_eval, expect, 1e-5, 1e-5));
  CHECK(allclose(bn.buffer("running_mean"), math::mul(batch_mean, 0.2), 1e-5, 1e-6));  // unchanged in eval

  Sequential net(std::make_shared<Dropout>(0.5), std::make_shared<Sequential>(std::make_shared<BatchNorm1d>(2)));
  net.eval();
  for (auto& [_, m] : net.named_modules()) CHECK(!m->is_training());
}

TEST_CASE("initialisation statistics follow the PyTorch formulas") {
  Generator g(11);
  const int64_t fan_in = 3 * 5 * 5;
  Conv2d conv(3, 200, 5, Conv2dOptions{}, true, g);
  const double bound =
      1 / std::sqrt(double(fan_in));  // kaiming_uniform(a = sqrt 5) = sqrt(6 / (1 + 5)) * sqrt(3 / fan_in)
  const Tensor w = conv.weight().data();
  CHECK(math::amax(math::abs(w)).item() <= bound);
  CHECK(math::amax(math::abs(w)).item() > 0.99 * bound);
  const double var = math::var(w.flatten()).item();
  CHECK(std::abs(var / (bound * bound / 3) - 1) < 0.05);  // 15000 draws: relative sd of var ~1.5%
  CHECK(math::amax(math::abs(conv.bias().data())).item() <= bound);

  Tensor t = Tensor::empty({256, 64, 3, 3});
  init::kaiming_normal_(t, 0, init::FanMode::fan_out, init::Nonlinearity::relu, g);
  const double std_expect = std::sqrt(2.0 / (256 * 9));
  CHECK(std::abs(std::sqrt(math::var(t.flatten()).item()) / std_expect - 1) < 0.02);
  CHECK(std::abs(math::mean(t).item()) < 5 * std_expect / std::sqrt(double(t.numel())));

  Tensor xu = Tensor::empty({300, 200});
  init::xavier_uniform_(xu, 1.0, g);
  const double xb = std::sqrt(6.0 / 500);
  CHECK(math::amax(math::abs(xu)).item() <= xb);
  CHECK(std::abs(math::var(xu.flatten()).item() / (xb * xb / 3) - 1) < 0.03);
  Tensor xn = Tensor::empty({300, 200}, DType::f64);
  init::xavier_normal_(xn, 2.0, g);
  CHECK(std::abs(std::sqrt(math::var(xn.flatten()).item()) / (2 * std::sqrt(2.0 / 500)) - 1) < 0.02);

  // Seeded: the same generator seed gives the same weights; the default generator follows manual_seed.
  Generator g1(5), g2(5);
  CHECK(max_abs_diff(Linear(7, 4, true, g1).weight().data(), Linear(7, 4, true, g2).weight().data()) == 0);
  manual_seed(77);
  const Tensor a = Linear(7, 4).weight().data();
  manual_seed(77);
  CHECK(max_abs_diff(a, Linear(7, 4).weight().data()) == 0);
}

TEST_CASE("weight hook and output hook are applied and gradients flow through them") {
  Generator g(12);
  auto conv = std::make_shared<Conv2d>(2, 3, 3, conv_options(1, 1), false, g);
  auto fc = std::make_shared<Linear>(3 * 4 * 4, 2, true, g);
  Sequential net(conv, std::make_shared<Flatten>(), fc);
  net.to(DType::f64);
  Variable x(Tensor::randn({2, 2, 4, 4}, g, DType::f64));

  const Variable y0 = net(x);
  sum(y0).backward();
  const Tensor grad0 = conv->weight().grad().data().clone();
  net.zero_grad();
  CHECK(!conv->weight().grad().defined());

  conv->set_weight_hook([](const Variable& w) { return mul(w, 2.0); });
  CHECK(allclose(conv->effective_weight().data(), math::mul(conv->weight().data(), 2.0)));
  const Variable y_expect =
      linear(flatten(conv2d(x, mul(conv->weight(), 2.0), Variable(), conv_options(1, 1))), fc->weight(), fc->bias());
  fc->set_output_hook([](const Variable& v) { return mul(v, 3.0); });
  const Variable y = net(x);
  CHECK(allclose(y.data(), math::mul(y_expect.data(), 3.0), 1e-10, 1e-10));
  CHECK(allclose(fc->forward(flatten(conv->forward(x))).data(), y_expect.data(), 1e-10, 1e-10));  // forward: no hook
  sum(y).backward();
  // y = 3 * fc(conv(x; 2w)) is linear in w: d/dw = 6 * (gradient without hooks).
  CHECK(allclose(conv->weight().grad().data(), math::mul(grad0, 6.0), 1e-9, 1e-9));

  // The hooked module still passes a gradient check through the hook.
  conv->set_weight_hook([](const Variable& w) { return tanh(w); });
  check_module_grad(net, {1, 2, 4, 4});
}

TEST_CASE("str() prints a PyTorch-like tree") {
  Sequential net(std::make_shared<Conv2d>(3, 16, 3, conv_options(1, 1)), std::make_shared<ReLU6>());
  std::ostringstream os;
  os << net;
  CHECK(os.str() == "Sequential(\n  (0): Conv2d(3, 16, kernel=3x3, stride=1, pad=1)\n  (1): ReLU6()\n)");
}

TEST_CASE("layer input checks name the layer and the shapes") {
  Linear fc(4, 2);
  CHECK_THROWS_WITH_AS(fc(Variable(Tensor::zeros({2, 5}))),
                       doctest::Contains("Linear::forward: expected input [..., 4], got [2, 5]"), Error);
  Conv2d conv(3, 4, 3);
  CHECK_THROWS_WITH_AS(conv(Variable(Tensor::zeros({1, 2, 5, 5}))), doctest::Contains("Conv2d::forward"), Error);
  BatchNorm2d bn(3);
  CHECK_THROWS_AS(bn(Variable(Tensor::zeros({1, 3, 1, 1}))), Error);  // one value per channel in training
  CHECK_THROWS_AS(Conv2d(3, 4, 3, conv_options(1, 0, 2)), Error);     // groups must divide channels
}

TEST_CASE("Conv2d options survive make_shared with an int kernel (g++ 12.2 -O2 -march=native SLP regression)") {
  // A delegating constructor taking Conv2dOptions by value came out with padding {1, 0} here.
  auto c = std::make_shared<Conv2d>(2, 2, 1, Conv2dOptions{}, false);
  CHECK(c->options().padding == std::array<int64_t, 2>{0, 0});
  CHECK(c->options().stride == std::array<int64_t, 2>{1, 1});
  CHECK(c->kernel_size() == std::array<int64_t, 2>{1, 1});
  CHECK((*c)(Variable(Tensor::zeros({1, 2, 3, 3}))).shape() == Shape{1, 2, 3, 3});
}

TEST_CASE("Sequential fuses BatchNorm -> ReLU: bit-identical to the modules called one by one, hooks honoured") {
  Generator g(21);
  auto conv = std::make_shared<Conv2d>(3, 5, 3, conv_options(1, 1), false, g);
  auto bn = std::make_shared<BatchNorm2d>(5);
  auto relu = std::make_shared<ReLU>();
  Sequential net(conv, bn, relu);
  bn->param("bias").mutable_data().copy_(Tensor::randn({5}, g));  // some channels mostly negative
  const Variable x(Tensor::randn({4, 3, 6, 6}, g));
  const Tensor w = Tensor::randn({4, 5, 6, 6}, g);
  for (int hooks = 0; hooks < 3; ++hooks) {
    CAPTURE(hooks);
    if (hooks == 1) relu->set_output_hook([](const Variable& v) { return mul(v, 0.5); });  // fused + hook
    if (hooks == 2) bn->set_output_hook([](const Variable& v) { return add(v, 0.25); });   // not fusable
    for (bool training : {true, false}) {
      CAPTURE(training);
      net.train(training);
      auto run = [&](bool fused) {
        net.zero_grad();
        const Variable y = fused ? net(x) : (*relu)((*bn)((*conv)(x)));
        sum(mul(y, Variable(w))).backward();
        return std::vector<Tensor>{y.data().contiguous(), conv->weight().grad().data().clone(),
                                   bn->param("weight").grad().data().clone(), bn->param("bias").grad().data().clone()};
      };
      const auto fused = run(true), plain = run(false);
      for (size_t i = 0; i < fused.size(); ++i) CHECK(allclose(fused[i], plain[i], 0.0, 0.0));
    }
  }
  // The fused op is what ran (no separate relu node), and the hook's effect is visible.
  relu->set_output_hook(nullptr);
  bn->set_output_hook(nullptr);
  net.train(true);
  const Variable y = net(x);
  CHECK(y.grad_fn()->name == "batch_norm_relu");
  CHECK(math::amin(y.data()).item() == 0.0);
}
