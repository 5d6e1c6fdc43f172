// Model zoo: every model builds and runs; parameter counts equal the reference architectures' counts,
// written here as arithmetic over the published layer lists (and, where well known, the published totals);
// PyTorch/Distiller-style names; resnet20 backward reaches every parameter.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "autograd/ops.h"
#include "core/math.h"
#include "layers/conv.h"
#include "models/resnet.h"
#include "models/zoo.h"

using namespace lowbit;
using namespace lowbit::models;

namespace {

// Parameter counts of single layers.
constexpr int64_t conv(int64_t in, int64_t out, int64_t k, bool bias = true, int64_t groups = 1) {
  return out * (in / groups) * k * k + (bias ? out : 0);
}
constexpr int64_t fc(int64_t in, int64_t out, bool bias = true) { return in * out + (bias ? out : 0); }
constexpr int64_t bn(int64_t c) { return 2 * c; }

bool has_param(Module& m, const std::string& name) {
  for (auto& [n, _] : m.named_parameters())
    if (n == name) return true;
  return false;
}

void check_forward(Module& m, int64_t batch, int64_t channels, int64_t size, int64_t classes) {
  Generator g(3);
  const Variable x(Tensor::randn({batch, channels, size, size}, g));
  const Variable y = m(x);
  CHECK(y.shape() == Shape{batch, classes});
  CHECK(std::isfinite(math::sum(math::abs(y.data())).item()));
}

}  // namespace

TEST_CASE("registry: names, info, errors") {
  const auto names = model_names();
  for (const char* n : {"lenet5", "simplenet_cifar", "svhn_net", "alexnet", "alexnet_bn", "vgg11", "vgg11_bn",
                        "resnet20", "resnet18", "mobilenet_v1", "mobilenet_v2"})
    CHECK(std::find(names.begin(), names.end(), n) != names.end());
  CHECK(model_info("lenet5").default_in_channels == 1);
  CHECK(model_info("lenet5").default_image_size == 28);
  CHECK(model_info("resnet20").variants.front() == "B");
  CHECK_THROWS_WITH_AS(create_model("resnet21"), doctest::Contains("unknown model 'resnet21' (known: lenet5"), Error);
  CHECK_THROWS_WITH_AS(model_info("nope"), doctest::Contains("resnet20"), Error);
  CHECK_THROWS_WITH_AS(create_model("resnet20", {.variant = "C"}),
                       doctest::Contains("unknown variant 'C' (known: B, A)"), Error);
  CHECK_THROWS_AS(create_model("lenet5", {.variant = "x"}), Error);
}

TEST_CASE("small models: parameter counts and forward at the default size") {
  const int64_t lenet = conv(1, 20, 5) + conv(20, 50, 5) + fc(800, 500) + fc(500, 10);
  CHECK(lenet == 431080);
  const int64_t simplenet = conv(3, 6, 5) + conv(6, 16, 5) + fc(400, 120) + fc(120, 84) + fc(84, 10);
  CHECK(simplenet == 62006);
  const int64_t svhn = conv(3, 32, 3) + conv(32, 32, 3) + conv(32, 64, 3) + conv(64, 64, 3) + conv(64, 128, 3) +
                       conv(128, 128, 3) + conv(128, 256, 3) + fc(256, 10);
  const int64_t alexnet_cifar =
      conv(3, 64, 11) + conv(64, 192, 5) + conv(192, 384, 3) + conv(384, 256, 3) + conv(256, 256, 3) + fc(256, 10);
  const int64_t vgg_convs = conv(3, 64, 3) + conv(64, 128, 3) + conv(128, 256, 3) + conv(256, 256, 3) +
                            conv(256, 512, 3) + 3 * conv(512, 512, 3);
  const int64_t vgg11 = vgg_convs + fc(512, 10);
  const int64_t vgg11_bn = vgg11 + bn(64) + bn(128) + 2 * bn(256) + 4 * bn(512);
  // resnet20: stem, 3 stages x 3 blocks x 2 convs (+BN), fc; option B adds two 1x1 projections + BN.
  const int64_t resnet20_a = conv(3, 16, 3, false) + bn(16) + 6 * (conv(16, 16, 3, false) + bn(16)) +
                             conv(16, 32, 3, false) + 5 * conv(32, 32, 3, false) + 6 * bn(32) + conv(32, 64, 3, false) +
                             5 * conv(64, 64, 3, false) + 6 * bn(64) + fc(64, 10);
  CHECK(resnet20_a == 269722);  // akamaster's published count
  const int64_t resnet20_b = resnet20_a + conv(16, 32, 1, false) + bn(32) + conv(32, 64, 1, false) + bn(64);

  struct Case {
    std::string name;
    ModelOptions opt;
    int64_t params, channels, size;
  };
  const std::vector<Case> cases = {
      {"lenet5", {}, lenet, 1, 28},
      {"simplenet_cifar", {}, simplenet, 3, 32},
      {"svhn_net", {}, svhn, 3, 32},
      {"alexnet", {}, alexnet_cifar, 3, 32},
      {"vgg11", {}, vgg11, 3, 32},
      {"vgg11_bn", {}, vgg11_bn, 3, 32},
      {"resnet20", {.variant = "A"}, resnet20_a, 3, 32},
      {"resnet20", {}, resnet20_b, 3, 32},
  };
  for (const Case& c : cases) {
    INFO(c.name, " ", c.opt.variant);
    auto m = create_model(c.name, c.opt);
    CHECK(m->num_parameters() == c.params);
    check_forward(*m, 2, c.channels, c.size, 10);
  }
}

TEST_CASE("CIFAR-sized variants of the ImageNet models: counts and forward") {
  // resnet18 cifar: 3x3 stem, no maxpool (kuangliu).
  const int64_t blocks18 =
      2 * (conv(64, 64, 3, false) + bn(64)) * 2 +
      (conv(64, 128, 3, false) + conv(128, 128, 3, false) + 2 * bn(128) + conv(64, 128, 1, false) + bn(128)) +
      (2 * conv(128, 128, 3, false) + 2 * bn(128)) +
      (conv(128, 256, 3, false) + conv(256, 256, 3, false) + 2 * bn(256) + conv(128, 256, 1, false) + bn(256)) +
      (2 * conv(256, 256, 3, false) + 2 * bn(256)) +
      (conv(256, 512, 3, false) + conv(512, 512, 3, false) + 2 * bn(512) + conv(256, 512, 1, false) + bn(512)) +
      (2 * conv(512, 512, 3, false) + 2 * bn(512));
  const int64_t resnet18_cifar = conv(3, 64, 3, false) + bn(64) + blocks18 + fc(512, 10);
  CHECK(resnet18_cifar == 11173962);
  auto r18 = create_model("resnet18", {.variant = "cifar"});
  CHECK(r18->num_parameters() == resnet18_cifar);
  r18->eval();
  check_forward(*r18, 1, 3, 32, 10);

  // MobileNet-V1 (Distiller): conv_bn(3, 32, s2) then 13 depthwise-separable blocks.
  const int64_t v1_widths[] = {32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024};
  int64_t v1_body = conv(3, 32, 3, false) + bn(32);
  for (int i = 0; i < 13; ++i)
    v1_body += conv(v1_widths[i], v1_widths[i], 3, false, v1_widths[i]) + bn(v1_widths[i]) +
               conv(v1_widths[i], v1_widths[i + 1], 1, false) + bn(v1_widths[i + 1]);
  auto v1 = create_model("mobilenet_v1", {.variant = "cifar"});
  CHECK(v1->num_parameters() == v1_body + fc(1024, 10));
  check_forward(*v1, 2, 3, 32, 10);

  auto v2 = create_model("mobilenet_v2", {.variant = "cifar"});
  CHECK(v2->num_parameters() == 3504872 - fc(1280, 1000) + fc(1280, 10));  // torchvision total, 10 classes
  check_forward(*v2, 2, 3, 32, 10);

  const int64_t alexnet64 = conv(3, 64, 5) + conv(64, 192, 5) + conv(192, 384, 3) + conv(384, 256, 3) +
                            conv(256, 256, 3) + fc(256 * 3 * 3, 4096) + fc(4096, 4096) + fc(4096, 200);
  auto a64 = create_model("alexnet", {.num_classes = 200, .variant = "64"});
  CHECK(a64->num_parameters() == alexnet64);
  a64->eval();
  check_forward(*a64, 1, 3, 64, 200);
}

TEST_CASE("ImageNet-sized models: parameter counts equal the published totals (construct only)") {
  const ModelOptions in1k{.num_classes = 1000};
  // torchvision AlexNet: 61,100,840.
  const int64_t alexnet224 = conv(3, 64, 11) + conv(64, 192, 5) + conv(192, 384, 3) + conv(384, 256, 3) +
                             conv(256, 256, 3) + fc(9216, 4096) + fc(4096, 4096) + fc(4096, 1000);
  CHECK(alexnet224 == 61100840);
  CHECK(create_model("alexnet", {.num_classes = 1000, .variant = "224"})->num_parameters() == alexnet224);

  // AlexNet-BN (§9.6b): grouped convs, no conv/fc bias except conv0 and fct.
  const int64_t alexnet_bn = conv(3, 96, 12) + conv(96, 256, 5, false, 2) + bn(256) + conv(256, 384, 3, false) +
                             bn(384) + conv(384, 384, 3, false, 2) + bn(384) + conv(384, 256, 3, false, 2) + bn(256) +
                             fc(9216, 4096, false) + bn(4096) + fc(4096, 4096, false) + bn(4096) + fc(4096, 1000);
  auto abn = create_model("alexnet_bn", in1k);
  CHECK(abn->num_parameters() == alexnet_bn);

  CHECK(create_model("resnet18", in1k)->num_parameters() == 11689512);     // torchvision
  CHECK(create_model("mobilenet_v2", in1k)->num_parameters() == 3504872);  // torchvision
  CHECK(create_model("mobilenet_v1", in1k)->num_parameters() == 4231976);  // Distiller / Howard et al. 4.2M
}

TEST_CASE("ImageNet-sized models: forward at batch 1 in eval mode") {
  // alexnet_bn at a quarter width: the 224-px graph is the same, its 9216x4096 FC would dominate the test time.
  for (const char* name : {"resnet18", "mobilenet_v1", "mobilenet_v2", "alexnet_bn"}) {
    INFO(name);
    auto m = create_model(name, {.num_classes = 7, .width_mult = std::string(name) == "alexnet_bn" ? 0.25 : 1.0});
    m->eval();
    check_forward(*m, 1, 3, 224, 7);
  }
}

TEST_CASE("parameter names follow PyTorch / Distiller") {
  auto r20 = create_model("resnet20");
  for (const char* n : {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer1.2.bn2.bias",
                        "layer2.0.downsample.0.weight", "layer3.0.downsample.1.weight", "fc.weight", "fc.bias"})
    CHECK_MESSAGE(has_param(*r20, n), n);
  int convs = 0;
  for (auto& [name, mod] : r20->named_modules()) convs += dynamic_cast<Conv2d*>(mod.get()) != nullptr;
  CHECK(convs == 21);  // stem + 18 + 2 projections (ReLeQ's 20 quantized layers exclude the stem)
  CHECK(r20->state_dict().count("layer3.2.bn2.running_var") == 1);

  auto vgg = create_model("vgg11");
  std::vector<std::string> conv_names;
  for (auto& [name, mod] : vgg->named_modules())
    if (dynamic_cast<Conv2d*>(mod.get())) conv_names.push_back(name);
  CHECK(conv_names == std::vector<std::string>{"features.0", "features.3", "features.6", "features.8", "features.11",
                                               "features.13", "features.16", "features.18"});
  CHECK(has_param(*vgg, "classifier.weight"));

  auto v2 = create_model("mobilenet_v2", {.variant = "cifar"});
  for (const char* n :
       {"features.0.0.weight", "features.1.conv.0.0.weight", "features.1.conv.1.weight", "features.2.conv.0.0.weight",
        "features.2.conv.2.weight", "features.2.conv.3.bias", "features.18.0.weight", "classifier.1.weight"})
    CHECK_MESSAGE(has_param(*v2, n), n);
  for (const char* n : {"conv1.weight", "conv2.bias", "fc1.weight", "fc2.bias"})
    CHECK_MESSAGE(has_param(*create_model("lenet5"), n), n);
  for (const char* n : {"model.0.0.weight", "model.1.0.weight", "model.1.3.weight", "model.13.4.bias", "fc.weight"})
    CHECK_MESSAGE(has_param(*create_model("mobilenet_v1", {.variant = "cifar"}), n), n);
}

TEST_CASE("resnet20 option A shortcut subsamples and zero-pads channels") {
  auto r20 = create_model("resnet20", {.variant = "A"});
  std::shared_ptr<Module> sc;
  for (auto& [name, mod] : r20->named_modules())
    if (name == "layer2.0.shortcut") sc = mod;
  REQUIRE(sc != nullptr);
  Generator g(8);
  const Tensor x = Tensor::randn({1, 16, 6, 6}, g);
  const Tensor y = (*sc)(Variable(x)).data().contiguous();
  REQUIRE(y.shape() == Shape{1, 32, 3, 3});
  const auto xv = x.to_vector(), yv = y.to_vector();
  for (int64_t c = 0; c < 32; ++c)
    for (int64_t h = 0; h < 3; ++h)
      for (int64_t w = 0; w < 3; ++w) {
        const double expect = (c < 8 || c >= 24) ? 0.0 : xv[((c - 8) * 6 + 2 * h) * 6 + 2 * w];
        CHECK(yv[(c * 3 + h) * 3 + w] == expect);
      }
}

TEST_CASE("resnet20 backward at batch 2 reaches every parameter") {
  for (const char* variant : {"A", "B"}) {
    auto m = create_model("resnet20", {.variant = variant, .seed = 5});
    Generator g(4);
    const Variable x(Tensor::randn({2, 3, 32, 32}, g));
    const Tensor target = Tensor::from_vector(std::vector<int32_t>{1, 7}, {2});
    cross_entropy((*m)(x), target).backward();
    for (auto& [name, p] : m->named_parameters()) {
      INFO(variant, " ", name);
      REQUIRE(p.grad().defined());
      CHECK(p.grad().shape() == p.shape());
      CHECK(math::amax(math::abs(p.grad().data())).item() > 0);
    }
  }
}

TEST_CASE("options: width multiplier, image size, input channels, seeds") {
  // WRPN widening doubles hidden channels but not the input channels or classes.
  auto wide = create_model("resnet20", {.width_mult = 2.0, .variant = "A"});
  const int64_t wide_count = conv(3, 32, 3, false) + bn(32) + 6 * (conv(32, 32, 3, false) + bn(32)) +
                             conv(32, 64, 3, false) + 5 * conv(64, 64, 3, false) + 6 * bn(64) +
                             conv(64, 128, 3, false) + 5 * conv(128, 128, 3, false) + 6 * bn(128) + fc(128, 10);
  CHECK(wide->num_parameters() == wide_count);
  check_forward(*wide, 1, 3, 32, 10);
  auto wide_lenet = create_model("lenet5", {.width_mult = 0.5});
  CHECK(wide_lenet->num_parameters() == conv(1, 10, 5) + conv(10, 25, 5) + fc(400, 250) + fc(250, 10));

  auto lenet32 = create_model("lenet5", {.in_channels = 3, .image_size = 32});
  CHECK(lenet32->num_parameters() == conv(3, 20, 5) + conv(20, 50, 5) + fc(50 * 5 * 5, 500) + fc(500, 10));
  check_forward(*lenet32, 2, 3, 32, 10);

  auto a = create_model("simplenet_cifar", {.seed = 1}), b = create_model("simplenet_cifar", {.seed = 1}),
       c = create_model("simplenet_cifar", {.seed = 2});
  const auto sa = a->state_dict(), sb = b->state_dict(), sc = c->state_dict();
  for (auto& [k, t] : sa) {
    CHECK(max_abs_diff(t, sb.at(k)) == 0);
    CHECK(max_abs_diff(t, sc.at(k)) > 0);
  }
}

TEST_CASE("default input size follows the variant") {
  CHECK(models::default_image_size("mobilenet_v1", "cifar") == 32);
  CHECK(models::default_image_size("mobilenet_v1", "") == 224);
  CHECK(models::default_image_size("alexnet", "64") == 64);
  CHECK(models::default_image_size("lenet5", "") == 28);
  CHECK_THROWS_AS(models::default_image_size("lenet6", ""), Error);
}

TEST_CASE("BasicBlock's fused ReLUs give the values and gradients of its modules called one by one") {
  for (const bool projection : {false, true}) {
    CAPTURE(projection);
    Generator g(31);
    BasicBlock block(8, projection ? 16 : 8, projection ? 2 : 1, ShortcutKind::projection, g);
    std::map<std::string, std::shared_ptr<Module>> child;
    for (auto& [name, mod] : block.named_modules()) child[name] = mod;
    for (auto& [name, p] : block.named_parameters())
      if (name.find("bn") != std::string::npos && name.find("bias") != std::string::npos)
        p.mutable_data().copy_(Tensor::randn(p.shape(), g));
    // An activation hook on relu1 (as quant/ installs) must apply on the fused path too.
    child["relu1"]->set_output_hook([](const Variable& v) { return mul(v, 0.75); });
    const Variable x(Tensor::randn({3, 8, 6, 6}, g), true);
    auto run = [&](bool fused) {
      block.zero_grad();
      x.impl()->grad.reset();
      Variable y;
      if (fused) {
        y = block(x);
      } else {
        auto& m = child;
        const Variable h = (*m["relu1"])((*m["bn1"])((*m["conv1"])(x)));
        const Variable s = projection ? (*m["downsample"])(x) : x;
        y = (*m["relu2"])(add((*m["bn2"])((*m["conv2"])(h)), s));
      }
      sum(mul(y, y)).backward();
      std::vector<Tensor> out{y.data().contiguous(), x.grad().data().contiguous()};
      for (auto& [name, p] : block.named_parameters()) out.push_back(p.grad().data().clone());
      return out;
    };
    const auto fused = run(true), plain = run(false);
    REQUIRE(fused.size() == plain.size());
    for (size_t i = 0; i < fused.size(); ++i) {
      CAPTURE(i);
      CHECK(allclose(fused[i], plain[i], 0.0, 0.0));
    }
  }
}
