// The method registry (quant/methods.h) walked: every registered quantizer has a row here, and each
// row checks what the registry says of it — the levels at its bits, the parameters it registers,
// that its sinusoid's zeros are its levels, its bit range — through attach_quantizers, the way the
// training context uses it. A method without a row, or a row without a method, fails.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "autograd/ops.h"
#include "core/math.h"
#include "layers/layers.h"
#include "quant/methods.h"
#include "quant/qconfig.h"
#include "quant/quantizers.h"
#include "quant/regularizers.h"

using namespace lowbit;

namespace {

std::shared_ptr<Sequential> net_for_methods() {
  Generator gen(17);
  auto net = std::make_shared<Sequential>();
  net->push_back("conv1", std::make_shared<Conv2d>(3, 8, 3, conv_options(1, 1), true, gen));
  net->push_back("relu1", std::make_shared<ReLU>());
  net->push_back("conv2", std::make_shared<Conv2d>(8, 16, 3, conv_options(2, 1), false, gen));
  net->push_back("relu2", std::make_shared<ReLU>());
  net->push_back("flatten", std::make_shared<Flatten>());
  net->push_back("fc", std::make_shared<Linear>(16 * 4 * 4, 5, true, gen));
  return net;
}

std::vector<double> distinct(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

// What a row checks beyond the common checks, on conv2 (quantized at `bits`) after one forward.
using RowCheck = std::function<void(Conv2d& conv2, const std::vector<double>& levels, int bits)>;

struct MethodRow {
  std::string name;
  int bits;  // weight bits the row runs at
  RowCheck check;
};

const std::vector<MethodRow>& method_rows() {
  static const std::vector<MethodRow> rows = {
      {"none", 32,
       [](Conv2d& c, const std::vector<double>& levels, int) {
         CHECK(!c.weight_hook());
         CHECK(levels.size() > 100);
       }},
      {"dorefa", 3,
       [](Conv2d&, const std::vector<double>& levels, int bits) {
         CHECK(levels.size() <= size_t(1) << bits);
         for (double l : levels) CHECK(std::fabs(l) <= 1 + 1e-6);
       }},
      {"wrpn", 4,
       [](Conv2d&, const std::vector<double>& levels, int bits) {
         CHECK(levels.size() <= (size_t(1) << bits) - 1);  // 2^k - 1 symmetric levels, zero one of them
       }},
      {"binary", 1,
       [](Conv2d&, const std::vector<double>& levels, int) {
         CHECK(levels == std::vector<double>{-1, 1});
       }},
      {"ternary", 2,
       [](Conv2d&, const std::vector<double>& levels, int) {
         REQUIRE(levels.size() == 3);
         CHECK(levels[1] == 0);
         CHECK(levels[0] == -levels[2]);
       }},
      {"lsq", 4,
       [](Conv2d& c, const std::vector<double>& levels, int bits) {
         const double s = c.param("w_step").item();
         CHECK(levels.size() <= size_t(1) << bits);
         for (double l : levels) CHECK(l / s == doctest::Approx(std::round(l / s)).epsilon(1e-5));
       }},
      {"pact", 4,
       [](Conv2d&, const std::vector<double>& levels, int bits) {
         CHECK(levels.size() <= size_t(1) << bits);  // DoReFa weights
       }},
      {"u3", 4,
       [](Conv2d& c, const std::vector<double>& levels, int) {
         const int inferred = quant::u3_bits(c.param("w_d").item(), c.param("w_qmax").item(), true);
         CHECK(levels.size() <= (size_t(1) << inferred) - 1);
       }},
      {"u1", 4,
       [](Conv2d& c, const std::vector<double>& levels, int) {
         CHECK(c.param("w_b").item() == 4);  // one forward: b unchanged
         CHECK(levels.size() <= (size_t(1) << quant::u12_bits(c.param("w_b").item(), true)) - 1);
       }},
      {"u2", 3,
       [](Conv2d& c, const std::vector<double>& levels, int bits) {
         CHECK(bits == 3);
         CHECK(levels.size() <= (size_t(1) << quant::u12_bits(c.param("w_b").item(), true)) - 1);
       }},
      {"p1", 4,
       [](Conv2d& c, const std::vector<double>& levels, int) {
         CHECK(levels.size() <= size_t(1) << quant::p12_bits(c.param("w_b").item(), true));
         for (double l : levels) CHECK(std::fabs(l) == std::exp2(std::round(std::log2(std::fabs(l)))));
       }},
      {"p2", 3,
       [](Conv2d& c, const std::vector<double>& levels, int) {
         CHECK(levels.size() <= size_t(1) << quant::p12_bits(c.param("w_b").item(), true));
         for (double l : levels) CHECK(std::fabs(l) == std::exp2(std::round(std::log2(std::fabs(l)))));
       }},
      {"msqe", 3,
       [](Conv2d& c, const std::vector<double>& levels, int bits) {
         const double d = c.param("w_delta").item();  // Choi et al. §3.1: d r, r in [-2^(k-1), 2^(k-1) - 1]
         CHECK(levels.size() <= size_t(1) << bits);
         for (double l : levels) {
           CHECK(l / d == doctest::Approx(std::round(l / d)).epsilon(1e-5));
           CHECK(std::round(l / d) >= -4);
           CHECK(std::round(l / d) <= 3);
         }
       }},
      {"p3", 4,
       [](Conv2d& c, const std::vector<double>& levels, int) {
         const int inferred = quant::p3_bits(c.param("w_qmin").item(), c.param("w_qmax").item(), true);
         CHECK(levels.size() <= size_t(1) << inferred);  // 2M signed powers of two, no zero
         for (double l : levels) CHECK(std::fabs(l) == std::exp2(std::round(std::log2(std::fabs(l)))));
       }},
  };
  return rows;
}

}  // namespace

TEST_CASE("every registered method has a row, and every row a method") {
  std::set<std::string> rows;
  for (const auto& r : method_rows()) rows.insert(r.name);
  for (const auto& m : quant::quant_methods()) {
    CAPTURE(m.name);
    CHECK_MESSAGE(rows.count(m.name) == 1, "method '", m.name, "' has no row in tests/test_methods.cpp");
    CHECK_FALSE(m.help.empty());
  }
  for (const auto& r : method_rows()) CHECK_NOTHROW(quant::find_method(r.name));
  CHECK(quant::method_names() ==
        "none | dorefa | wrpn | binary | ternary | lsq | pact | u3 | p3 | u1 | u2 | p1 | p2 | msqe");
}

TEST_CASE("each method through attach_quantizers: its levels, parameters, gradients and bit range") {
  for (const auto& row : method_rows()) {
    CAPTURE(row.name);
    const quant::QuantMethod& m = quant::find_method(row.name);
    auto net = net_for_methods();
    quant::QuantConfig cfg;
    cfg.method = row.name;
    cfg.weight_bits = row.bits;
    cfg.activation_bits = m.activation ? 3 : 32;
    const quant::Quantization q = quant::attach_quantizers(*net, cfg);
    auto conv2 = net->at<Conv2d>(2);
    Generator gen(3);
    Variable x(Tensor::randn({4, 3, 8, 8}, gen));
    Variable y = (*net)(x);
    sum(mul(y, y)).backward();
    // The learnable parameters the entry declares are the ones registered, and they get gradients.
    std::vector<std::string> expected;
    if (row.bits < 32)
      for (const auto& p : m.weight_params) expected.push_back("conv2." + p);
    for (const char* act : {"relu1", "relu2"})
      for (const auto& p : m.activation_params) expected.push_back(std::string(act) + "." + p);
    std::sort(expected.begin(), expected.end());
    std::vector<std::string> got = q.parameter_names;
    std::sort(got.begin(), got.end());
    CHECK(got == expected);
    for (const auto& full : q.parameter_names)
      for (auto& [name, p] : net->named_parameters())
        if (name == full) CHECK_MESSAGE(p.grad().defined(), full, " gets no gradient");
    CHECK(conv2->weight().grad().defined());
    // Activations land on at most 2^abits levels.
    if (m.activation) {
      NoGradGuard ng;
      const auto a = distinct((*net->at<ReLU>(1))((*net->at<Conv2d>(0))(x)).data().to_vector());
      CHECK(a.size() <= 8);
    }
    // The weight levels at the bits the layer is stored at.
    NoGradGuard ng;
    const auto levels = distinct(conv2->effective_weight().data().to_vector());
    const int stored = q.stored_weight_bits(q.layers[1]);
    if (m.weight) CHECK(stored <= std::max(row.bits, m.name == "u3" || m.name == "p3" ? 16 : row.bits));
    row.check(*conv2, levels, stored);
    // Bits outside the entry's range are refused naming the option.
    if (m.weight_bits.max < 16) {
      quant::QuantConfig bad = cfg;
      bad.weight_bits = m.weight_bits.max + 1;
      CHECK_THROWS_WITH_AS(quant::attach_quantizers(*net_for_methods(), bad), doctest::Contains("--wbits"), Error);
    }
  }
}

TEST_CASE("a method's sinusoid has zeros exactly at its weight levels (the grid the regularizers use)") {
  int matched = 0;
  for (const auto& m : quant::quant_methods()) {
    if (!m.sinusoid || !m.weight) continue;
    for (quant::WeightScale scale : {quant::WeightScale::none, quant::WeightScale::max_abs}) {
      quant::QuantConfig cfg;
      cfg.method = m.name;
      cfg.weight_scale = scale;
      const auto match = m.sinusoid(cfg);
      if (!match) continue;
      for (int bits : {2, 3, 4, 5}) {
        CAPTURE(m.name);
        CAPTURE(bits);
        CAPTURE(int(match->scale));
        auto net = net_for_methods();
        cfg.weight_bits = bits;
        quant::attach_quantizers(*net, cfg);
        auto conv2 = net->at<Conv2d>(2);
        NoGradGuard ng;
        // The quantizer's output in the sinusoid's domain (its own scale divided out) ...
        const Tensor w = conv2->weight().data();
        const double s = match->scale == quant::WeightScale::max_abs ? quant::weight_scale_of(w, match->scale) : 1.0;
        const auto out = math::mul(conv2->effective_weight().data(), 1.0 / s).to_vector();
        // ... is the sinusoid's input rounded to the nearest of its zeros on [-1, 1].
        const auto y = quant::to_sinusoid_domain(w, match->scale).to_vector();
        const auto zeros = quant::grid_levels(match->grid, bits);
        for (size_t i = 0; i < y.size(); ++i) {
          double best = zeros[0];
          for (double z : zeros)
            if (std::fabs(z - y[i]) < std::fabs(best - y[i])) best = z;
          CHECK(out[i] == doctest::Approx(best).epsilon(1e-5));
        }
        // And the SinReQ penalty of a weight sitting on those zeros is zero.
        const Variable on_levels(Tensor::from_vector(zeros, {int64_t(zeros.size())}).to(DType::f64));
        CHECK(quant::sinreq_layer(on_levels, bits, {match->grid, Reduction::mean, quant::WeightScale::none}).item() ==
              doctest::Approx(0).epsilon(1e-12));
        ++matched;
      }
    }
  }
  CHECK(matched >= 4 * 4);  // dorefa, pact (tanh domain), wrpn on w and on w / max|w|
}

TEST_CASE("the README and docs/quantization.md list every method") {
  std::ifstream doc(std::string(LOWBIT_SOURCE_DIR) + "/docs/quantization.md");
  REQUIRE(doc.good());
  std::stringstream d;
  d << doc.rdbuf();
  for (const auto& m : quant::quant_methods())
    if (m.name != "none")
      CHECK_MESSAGE(d.str().find("| `" + m.name + "` |") != std::string::npos,
                    "docs/quantization.md's method table has no row for ", m.name);
  std::ifstream in(std::string(LOWBIT_SOURCE_DIR) + "/README.md");
  REQUIRE(in.good());
  std::stringstream s;
  s << in.rdbuf();
  std::string list = quant::method_names("|");
  CHECK_MESSAGE(s.str().find("`--quant " + list + "`") != std::string::npos, "README.md should list `--quant ", list,
                "`");
}
