// MobileNet v2's residual stream as a signed activation (issue 15): the StreamPoint `out` of every
// InvertedResidual (models/mobilenet.h) gets signed_pact (quant/quantizers.h) when the run quantizes
// activations (quant/qconfig.h), its clip alpha learned in the "clip" group like PACT's; float runs
// and other models are unchanged; a checkpoint from before (no alpha) is refused naming the keys.
#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "autograd/ops.h"
#include "core/math.h"
#include "layers/layers.h"
#include "models/mobilenet.h"
#include "models/zoo.h"
#include "quant/qconfig.h"
#include "test_util.h"
#include "train/quant_context.h"

using namespace lowbit;
using namespace lowbit::testing;

namespace {

std::shared_ptr<Module> mobilenet_v2() {
  models::ModelOptions mo;
  mo.num_classes = 10, mo.width_mult = 0.25, mo.variant = "cifar", mo.seed = 3;
  return models::create_model("mobilenet_v2", mo);
}

}  // namespace

TEST_CASE("MobileNet v2: a signed quantizer on every InvertedResidual's out, alpha in the clip group") {
  auto net = mobilenet_v2();
  train::QuantContext quant(*net, {.method = "dorefa", .wbits = 4, .abits = 4});
  const quant::Quantization& q = quant.quantization();
  int blocks = 0;
  for (auto& [name, m] : net->named_modules()) blocks += dynamic_cast<models::InvertedResidual*>(m.get()) != nullptr;
  REQUIRE(blocks == 17);
  REQUIRE(q.signed_activations.size() == 17);
  CHECK(q.signed_activations[0].name == "features.1.out");
  CHECK(q.signed_activations[16].name == "features.17.out");
  for (const auto& a : q.signed_activations) CHECK(a.bits == 4);
  CHECK(q.activations.size() == 35);  // the ReLU6s: stem, 2 per expanding block, 1 in block 1, the last conv

  // alpha: a parameter of the StreamPoint, 0 until the first batch; in the "clip" group with PACT's decay.
  const std::vector<optim::ParamGroup> groups =
      quant.param_groups({.name = "weights", .lr = 0.1, .weight_decay = 1e-4, .momentum = 0.9});
  std::set<std::string> clip, weights;
  for (const auto& g : groups) {
    for (const auto& n : g.param_names) (g.name == "clip" ? clip : weights).insert(n);
    if (g.name == "clip") CHECK(g.weight_decay == 1e-4);
  }
  CHECK(clip.size() == 17);
  CHECK(clip.count("features.2.out.alpha") == 1);
  CHECK(weights.count("features.2.out.alpha") == 0);
  Module& point = *q.signed_activations[1].module;  // features.2.out: x + conv(x)
  CHECK(point.param("alpha").item() == 0);

  // The first batch sets alpha = max|a| of the stream there; the output is on alpha m / 7, |m| <= 7,
  // both signs. (Wrap the hook to see its input.)
  Tensor seen_in, seen_out;
  const VariableTransform hook = point.output_hook();
  point.set_output_hook([&](const Variable& a) {
    seen_in = a.data();
    const Variable y = hook(a);
    seen_out = y.data();
    return y;
  });
  Generator gen(4);
  net->train();
  (*net)(Variable(Tensor::randn({4, 3, 32, 32}, gen)));
  const double alpha = point.param("alpha").item();
  CHECK(alpha == doctest::Approx(math::amax(math::abs(seen_in)).item()).epsilon(1e-6));
  std::set<int> levels;
  for (double v : seen_out.to_vector()) {
    const double m = v * 7 / alpha;
    CHECK(m == doctest::Approx(std::nearbyint(m)).epsilon(1e-5).scale(1));
    levels.insert(int(std::nearbyint(m)));
  }
  CHECK(*levels.begin() < 0);
  CHECK(*levels.rbegin() > 0);
  CHECK(*levels.rbegin() <= 7);
  CHECK(*levels.begin() >= -7);
  // After a step alpha is kept >= 0.01 (a clip value, as PACT's).
  point.param("alpha").mutable_data().fill_(-0.5);
  q.after_step();
  CHECK(point.param("alpha").item() == doctest::Approx(0.01));
}

TEST_CASE("MobileNet v2's signed sites: bits per method and override; float runs and other models unchanged") {
  {  // BNN's 1-bit activations: a signed site takes 2 bits (sign and one level).
    auto net = mobilenet_v2();
    train::QuantContext quant(*net, {.method = "binary", .wbits = 1, .abits = 1});
    REQUIRE(quant.quantization().signed_activations.size() == 17);
    CHECK(quant.quantization().signed_activations[0].bits == 2);
  }
  {  // --abits-overrides reaches them by name; --abits 32: none.
    auto net = mobilenet_v2();
    train::QuantContext quant(*net, {.method = "pact", .wbits = 4, .abits = 4, .abits_overrides = "features.3.out=8"});
    CHECK(quant.quantization().signed_activations[2].name == "features.3.out");
    CHECK(quant.quantization().signed_activations[2].bits == 8);
    CHECK(quant.quantization().signed_activations[3].bits == 4);
    auto net2 = mobilenet_v2();
    train::QuantContext none(*net2, {.method = "dorefa", .wbits = 4, .abits = 32});
    CHECK(none.quantization().signed_activations.empty());
  }
  {  // Float training: no quantizer, no parameter: the state dict is torchvision's.
    auto net = mobilenet_v2();
    train::QuantContext quant(*net, {.method = "none"});
    CHECK(quant.quantization().signed_activations.empty());
    for (const auto& [name, t] : net->state_dict()) CHECK_MESSAGE(name.find(".out.") == std::string::npos, name);
    Generator gen(5);
    net->eval();
    NoGradGuard ng;
    const Tensor x = Tensor::randn({2, 3, 32, 32}, gen);
    auto twin = mobilenet_v2();  // never attached: the same function
    twin->eval();
    CHECK(allclose((*net)(Variable(x)).data(), (*twin)(Variable(x)).data(), 0, 0));
  }
  {  // Other models: no StreamPoint, nothing new.
    auto r20 = models::create_model("resnet20");
    train::QuantContext quant(*r20, {.method = "dorefa", .wbits = 4, .abits = 4});
    CHECK(quant.quantization().signed_activations.empty());
  }
}

TEST_CASE("a MobileNet v2 checkpoint from before the signed sites: a quantized run refuses it naming the keys") {
  // What such a checkpoint holds: the model's tensors without the streams' alphas.
  auto old = mobilenet_v2();
  const std::map<std::string, Tensor> state = old->state_dict();
  auto net = mobilenet_v2();
  train::QuantContext quant(*net, {.method = "dorefa", .wbits = 4, .abits = 4});
  const std::string e = error_of([&] { net->load_state_dict(state); });
  CHECK(contains(e, "missing keys"));
  CHECK(contains(e, "features.1.out.alpha"));
  // Non-strict (--init: fine-tuning from it) keeps alpha unset, so the first batch initialises it.
  net->load_state_dict(state, /*strict=*/false);
  CHECK(quant.quantization().signed_activations[0].module->param("alpha").item() == 0);
  // A float run's checkpoint of today loads into the old layout and back (no new tensors).
  auto f = mobilenet_v2();
  train::QuantContext none(*f, {.method = "none"});
  f->load_state_dict(state);
}
