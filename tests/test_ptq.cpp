// Range-based linear post-training quantization (quant/ptq.h, train/ptq.h; Distiller range-linear,
// spec §8.7): the quantizers against the formulas on hand-picked values (asymmetric with a zero
// point, symmetric, per channel); calibration records the true min/max of the activations it saw;
// a sweep leaves a float model exactly as it was; 16/16 gives the float predictions on a trained
// net while 2/2 does not; the settings parser and the per-setting file names.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <map>

#include "autograd/ops.h"
#include "core/math.h"
#include "deploy_fixtures.h"
#include "layers/layers.h"
#include "models/zoo.h"
#include "optim/sgd.h"
#include "quant/ptq.h"
#include "quant/qconfig.h"
#include "test_util.h"
#include "train/evaluate.h"
#include "train/fit.h"
#include "train/ptq.h"

using namespace lowbit;
using quant::LinearQuant;

namespace {

data::LoaderOptions quadrants_loader(bool shuffle = true) {
  data::LoaderOptions o;
  o.batch_size = 32, o.seed = 3, o.prefetch = 0, o.shuffle = shuffle;
  o.transforms = data::parse_transforms("normalize:0.35:0.25");
  return o;
}

std::shared_ptr<Module> small_lenet5(uint64_t seed = 11) {
  models::ModelOptions mo;
  mo.num_classes = 4, mo.in_channels = 1, mo.image_size = 28, mo.width_mult = 0.5, mo.seed = seed;
  return models::create_model("lenet5", mo);
}

// Four classes of 28x28 grey images: quadrant c of class c is brighter by `contrast` than the noise
// (uniform 0..200) — faint enough that a trained net's margins are small (quadrants28 is too easy:
// every net gets 100 %, even at 2 bits).
data::ImageDataset faint_quadrants(int64_t n, uint64_t seed, double contrast) {
  return fixtures::quadrant_images(n, seed, 28, 0, contrast, 200, "faint quadrants");
}

// Bit-for-bit copies of every parameter and buffer.
std::map<std::string, std::vector<double>> snapshot(const Module& m) {
  std::map<std::string, std::vector<double>> out;
  for (const auto& [name, t] : m.state_dict()) out[name] = t.to_vector();
  return out;
}

Tensor logits_of(Module& m, const Tensor& x) {
  NoGradGuard ng;
  m.eval();
  return m(Variable(x)).data().clone();
}

}  // namespace

TEST_CASE("asymmetric range-linear: x_q = round(q x - zp), q = (2^n - 1)/(max - min), zp = round(min q) (§8.7)") {
  // [-1, 3] at 2 bits: q = 3/4, zp = round(-0.75) = -1; codes 0..3, values (x_q + zp)/q.
  const LinearQuant q = quant::asymmetric_linear(-1, 3, 2);
  CHECK(q.scale == 0.75);
  CHECK(q.zero_point == -1);
  CHECK(q.code_min == 0);
  CHECK(q.code_max == 3);
  const std::vector<std::pair<double, double>> codes = {
      {-1, 0},   // round(-0.75 + 1) = 0
      {0, 1},    // 0 -> the code zp: exactly 0 again
      {1, 2},    // round(1.75) = 2
      {3, 3},    // round(3.25) = 3
      {10, 3},   // clamped
      {-5, 0},   // round(-2.75) = -3, clamped
      {-0.5, 1}  // round(0.625) = 1
  };
  for (const auto& [x, c] : codes) {
    CAPTURE(x);
    CHECK(q.code(x) == c);
    CHECK(q(x) == doctest::Approx((c - 1) / 0.75).epsilon(1e-15));
  }
  CHECK(q(0) == 0.0);
  // The range is widened to contain 0 (Distiller): [0.5, 2] at 3 bits is [0, 2]: q = 7/2, zp = 0.
  const LinearQuant u = quant::asymmetric_linear(0.5, 2, 3);
  CHECK(u.scale == 3.5);
  CHECK(u.zero_point == 0);
  CHECK(u.code(1.0) == 4);  // round(3.5) = 4 (half to even)
  CHECK(u.code(5.0 / 7.0) == 2);
  CHECK(u.code(0.7) == 2);  // round(2.45)
  CHECK(u(2.0) == 2.0);
  // After a ReLU (min 0): unsigned, 2^n levels from 0 to max.
  const LinearQuant r = quant::asymmetric_linear(0, 6, 4);
  CHECK(r.zero_point == 0);
  CHECK(r(6) == doctest::Approx(6));
  CHECK(r(0.19) == 0.0);
  CHECK(r(0.21) == doctest::Approx(0.4));
  // An all-zero range: scale 1, zero stays zero (Distiller).
  CHECK(quant::asymmetric_linear(0, 0, 4).scale == 1);
  CHECK(quant::asymmetric_linear(0, 0, 4)(0) == 0);
}

TEST_CASE("symmetric range-linear: x_q = round(x (2^(n-1) - 1)/max|x|) (§8.7)") {
  // max|x| = 2 at 3 bits: q = 3/2; codes clamped to [-4, 3] (Distiller's signed range).
  const LinearQuant q = quant::symmetric_linear(2, 3);
  CHECK(q.scale == 1.5);
  CHECK(q.zero_point == 0);
  CHECK(q.code_min == -4);
  CHECK(q.code_max == 3);
  const std::vector<std::pair<double, double>> codes = {{0.5, 1}, {-2, -3}, {2, 3}, {1, 2},
                                                        {-1, -2},  // round(-1.5) = -2 (half to even)
                                                        {5, 3},   {-5, -4}, {0, 0}, {0.3, 0}};
  for (const auto& [x, c] : codes) {
    CAPTURE(x);
    CHECK(q.code(x) == c);
    CHECK(q(x) == doctest::Approx(c / 1.5).epsilon(1e-15));
  }
  // The mode picks max(|min|, |max|).
  const LinearQuant m = quant::linear_quant(quant::RangeMode::symmetric, -3, 1, 4);
  CHECK(m.scale == doctest::Approx(7.0 / 3));
  // 8 bits on [-1, 1]: the 255 levels k/127.
  const LinearQuant e = quant::symmetric_linear(1, 8);
  std::vector<double> levels;
  for (int i = -1000; i <= 1000; ++i) levels.push_back(e(i / 1000.0));
  std::sort(levels.begin(), levels.end());
  levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
  CHECK(levels.size() == 255);
  CHECK(levels.front() == -1.0);
  CHECK(levels.back() == 1.0);
  CHECK(quant::symmetric_linear(0, 4).scale == 1);
  testing::expect_error([] { quant::symmetric_linear(1, 1); }, {"1 bits", "2..16"});
  testing::expect_error([] { quant::asymmetric_linear(1, 0, 4); }, {"min 1 > max 0"});
}

TEST_CASE("fake_quantize: elementwise, dtype and channels-last layout kept; per channel along dim 0") {
  Generator gen(5);
  for (DType dt : {DType::f32, DType::f64}) {
    const Tensor x = Tensor::randn({2, 3, 4, 5}, gen, dt).contiguous(MemoryFormat::channels_last);
    const LinearQuant q = quant::asymmetric_linear(-1.5, 2.5, 4);
    const Tensor y = quant::fake_quantize(x, q);
    CHECK(y.dtype() == dt);
    CHECK(y.strides() == x.strides());
    const std::vector<double> xv = x.to_vector(), yv = y.to_vector();
    for (size_t i = 0; i < xv.size(); ++i) CHECK(yv[i] == (dt == DType::f32 ? double(float(q(xv[i]))) : q(xv[i])));
  }
  // Per output channel: each row from its own max|w|; per tensor the small row is rounded to 0.
  const Tensor w = Tensor::from_vector(std::vector<double>{-1, 0.5, 0.2, 0.1, -0.05, 0.02}, {2, 3});
  const Tensor pc = quant::range_linear_weight(w, 3, quant::RangeMode::symmetric, /*per_channel=*/true);
  const std::vector<double> want_pc = {-1, 2.0 / 3, 1.0 / 3, 0.1, -2.0 / 30, 1.0 / 30};
  const std::vector<double> got_pc = pc.to_vector();
  for (size_t i = 0; i < want_pc.size(); ++i) CHECK(got_pc[i] == doctest::Approx(want_pc[i]).epsilon(1e-15));
  const std::vector<double> got_pt = quant::range_linear_weight(w, 3, quant::RangeMode::symmetric, false).to_vector();
  const std::vector<double> want_pt = {-1, 2.0 / 3, 1.0 / 3, 0, 0, 0};
  for (size_t i = 0; i < want_pt.size(); ++i) CHECK(got_pt[i] == doctest::Approx(want_pt[i]).epsilon(1e-15));
  // Asymmetric per channel: row 1's range [-0.05, 0.1] at 2 bits: q = 20, zp = round(-1) = -1.
  const std::vector<double> got_a = quant::range_linear_weight(w, 2, quant::RangeMode::asymmetric, true).to_vector();
  CHECK(got_a[3] == doctest::Approx(0.1));  // round(2 + 1) = 3 -> (3 - 1)/20
  CHECK(got_a[4] == doctest::Approx(-0.05));
  CHECK(got_a[5] == doctest::Approx(0.0));  // round(0.4 + 1) = 1 -> 0
  const auto mm = quant::channel_min_max(w);
  CHECK(mm[1].first == -0.05);
  CHECK(mm[1].second == 0.1);
}

TEST_CASE("calibration records the true min/max of the activations it saw (global over the batches)") {
  const data::ImageDataset set = fixtures::quadrants28(160, 7);
  data::DataLoader calib(set, quadrants_loader()), test(set, quadrants_loader(false));
  auto model = small_lenet5();
  // Direct: the same first 3 batches of epoch 0 through the float model, each ReLU's extremes.
  std::map<std::string, std::pair<double, double>> direct;
  std::vector<std::string> relus;
  for (auto& [name, m] : model->named_modules()) {
    if (!dynamic_cast<ReLU*>(m.get())) continue;
    relus.push_back(name);
    direct[name] = {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()};
    const std::string n = name;
    m->set_output_hook([&direct, n](const Variable& y) {
      const double lo = math::amin(y.data()).item(), hi = math::amax(y.data()).item();
      direct[n].first = std::min(direct[n].first, lo), direct[n].second = std::max(direct[n].second, hi);
      return y;
    });
  }
  REQUIRE(relus.size() == 3);
  {
    NoGradGuard ng;
    model->eval();
    for (int64_t b = 0; b < 3; ++b) (*model)(Variable(calib.make_batch(0, b).images));
  }
  for (auto& [name, m] : model->named_modules()) m->set_output_hook(nullptr);
  // A hook of the model's own (a counter on relu1) must be back after the sweep.
  int calls = 0;
  Module* relu1 = nullptr;
  for (auto& [name, m] : model->named_modules())
    if (name == relus[0]) relu1 = m.get();
  relu1->set_output_hook([&calls](const Variable& y) { return ++calls, y; });

  train::PtqOptions po;
  po.calib_batches = 3;
  const train::PtqSweep s = train::ptq_sweep(*model, calib, test, {{8, 8}}, po);
  CHECK(s.calib_batches == 3);
  CHECK(s.calib_images == 96);
  REQUIRE(s.activation_ranges.size() == 3);
  for (const auto& r : s.activation_ranges) {
    CAPTURE(r.name);
    CHECK(r.passes == 3);
    CHECK(r.min == direct.at(r.name).first);  // exactly: the same values, min/max are exact
    CHECK(r.max == direct.at(r.name).second);
    CHECK(r.min == 0);  // after a ReLU
    CHECK(r.max > 0);
  }
  // More calibration batches than the loader has: all of them (160 images in 5 batches).
  po.calib_batches = 100;
  const train::PtqSweep all = train::ptq_sweep(*model, calib, test, {{8, 8}}, po);
  CHECK(all.calib_batches == 5);
  CHECK(all.calib_images == 160);
  for (size_t i = 0; i < 3; ++i) CHECK(all.activation_ranges[i].max >= s.activation_ranges[i].max);
  // The weights' ranges are their own.
  REQUIRE(s.weight_ranges.size() == 4);
  const auto [lo, hi] = quant::tensor_min_max(model->named_parameters().front().second.data());
  CHECK(s.weight_ranges[0].weight);
  CHECK(s.weight_ranges[0].min == lo);
  CHECK(s.weight_ranges[0].max == hi);
  // relu1's own hook is back: one evaluation of 160 images in 5 batches calls it 5 times.
  calls = 0;
  train::evaluate(*model, test);
  CHECK(calls == 5);
  const std::string csv = train::ptq_ranges_csv(s);
  CHECK(testing::contains(csv, "kind,name,min,max,passes\nactivation," + relus[0] + ",0,"));
  CHECK(testing::contains(train::format_ptq_ranges(s), "weight"));
}

TEST_CASE("a sweep leaves a float model exactly as it was: hooks, parameters, buffers, predictions") {
  const data::ImageDataset set = fixtures::quadrants28(96, 9);
  data::DataLoader calib(set, quadrants_loader()), test(set, quadrants_loader(false));
  auto model = models::create_model("resnet20", {.num_classes = 4, .in_channels = 1, .image_size = 28, .seed = 3});
  const Tensor x = calib.make_batch(0, 0).images;
  const Tensor before = logits_of(*model, x);
  const auto params_before = snapshot(*model);
  const size_t n_params = model->parameters().size();
  std::vector<train::Prediction> p0, p1;
  train::evaluate(*model, test, &p0);
  model->train();
  train::PtqOptions po;
  po.calib_batches = 2, po.per_channel = true, po.predictions = true;
  const train::PtqSweep s = train::ptq_sweep(*model, calib, test, {{4, 4}, {2, 2}, {8, 32}}, po);
  CHECK(model->is_training());  // mode restored
  CHECK(s.rows.size() == 3);
  CHECK(s.float_predictions.size() == 96);
  CHECK(s.rows[1].predictions.size() == 96);
  CHECK(model->parameters().size() == n_params);  // nothing registered
  CHECK(snapshot(*model) == params_before);       // nothing written
  for (auto& [name, m] : model->named_modules()) {
    CAPTURE(name);
    CHECK(!m->output_hook());
    CHECK(!quant::weight_hook_of(*m));
  }
  const Tensor after = logits_of(*model, x);
  CHECK(after.to_vector() == before.to_vector());  // bit for bit
  train::evaluate(*model, test, &p1);
  REQUIRE(p0.size() == p1.size());
  for (size_t i = 0; i < p0.size(); ++i) CHECK(p0[i].predicted == p1[i].predicted);
  for (size_t i = 0; i < p0.size(); ++i) CHECK(s.float_predictions[i].predicted == p0[i].predicted);
}

TEST_CASE("16/16 gives the float predictions of a trained net; 2/2 changes them; first/last and per channel") {
  const data::ImageDataset train_set = faint_quadrants(512, 7, 10), test_set = faint_quadrants(512, 8, 10);
  data::DataLoader loader(train_set, quadrants_loader()), test(test_set, quadrants_loader(false));
  auto model = small_lenet5();
  optim::SGD sgd({optim::ParamGroup{.name = "weights", .params = model->parameters(), .lr = 0.02, .momentum = 0.9}});
  train::FitOptions fo;
  fo.epochs = 4, fo.verbose = 0;
  train::fit(*model, sgd, loader, nullptr, fo, nullptr);

  train::PtqOptions po;
  po.calib_batches = 4, po.predictions = true;
  std::string streamed;  // the table as it comes: the head after calibration, then a row per setting
  po.progress = [&streamed](const train::PtqSweep& p) {
    streamed += p.rows.empty() ? train::format_ptq_head(p) : train::format_ptq_row(p.rows.back());
  };
  const train::PtqSweep s = train::ptq_sweep(*model, loader, test, {{16, 16}, {8, 8}, {2, 2}}, po);
  CHECK(streamed == train::format_ptq_table(s));
  CAPTURE(s.float_result.accuracy);
  REQUIRE(s.float_result.accuracy > 0.6);  // it learned (chance: 0.25)
  const train::PtqRow &r16 = s.rows[0], &r8 = s.rows[1], &r2 = s.rows[2];
  CHECK(r16.result.accuracy == s.float_result.accuracy);
  CHECK(r16.float_accuracy == s.float_result.accuracy);
  CHECK(r16.drop() == 0);
  CHECK(r16.result.loss == doctest::Approx(s.float_result.loss).epsilon(1e-3));
  int64_t differ16 = 0, differ2 = 0;
  for (size_t i = 0; i < s.float_predictions.size(); ++i) {
    differ16 += r16.predictions[i].predicted != s.float_predictions[i].predicted;
    differ2 += r2.predictions[i].predicted != s.float_predictions[i].predicted;
  }
  CHECK(differ16 == 0);
  CAPTURE(r2.result.accuracy);
  CHECK(differ2 > 0);
  CHECK(r2.result.accuracy != s.float_result.accuracy);
  CHECK(r2.drop() > 0);
  CHECK(std::abs(r8.drop()) <= 0.02);
  // The table: the header, the float row first, then one row per setting.
  const std::string table = train::format_ptq_table(s);
  CHECK(testing::contains(table, "weights symmetric per tensor, activations asymmetric"));
  CHECK(testing::contains(table, "every layer at the setting's bits"));
  const size_t f = table.find("\nfloat "), a = table.find("\n16/16 "), b = table.find("\n8/8 "),
               c = table.find("\n2/2 ");
  CHECK(f != std::string::npos);
  CHECK(f < a);
  CHECK(a < b);
  CHECK(b < c);
  CHECK(c != std::string::npos);

  // The hooks directly: first and last layers (and the last layer's input) at --ptq-first-last.
  quant::PostTrainingQuantizer ptq(*model);
  ptq.calibrate();
  {
    NoGradGuard ng;
    model->eval();
    (*model)(Variable(loader.make_batch(0, 0).images));
  }
  ptq.quantize({.weight_bits = 2, .activation_bits = 2, .first_last_bits = 32});
  const auto& layers = ptq.quantization().layers;
  REQUIRE(layers.size() == 4);
  CHECK(*layers.front().weight_bits == 32);
  CHECK(*layers.back().weight_bits == 32);
  CHECK(*layers[1].weight_bits == 2);
  for (const auto& l : layers) {
    CAPTURE(l.name);
    const Tensor w = l.weight().data();
    const Tensor q = quant::weight_hook_of(*l.module)(l.weight()).data();
    if (*l.weight_bits == 32) CHECK(q.to_vector() == w.to_vector());
    if (*l.weight_bits == 2)
      CHECK(q.to_vector() == quant::range_linear_weight(w, 2, quant::RangeMode::symmetric, false).to_vector());
  }
  ptq.quantize({.weight_bits = 4, .activation_bits = 4, .per_channel = true});
  const Tensor w1 = layers[1].weight().data();
  CHECK(quant::weight_hook_of(*layers[1].module)(layers[1].weight()).data().to_vector() ==
        quant::range_linear_weight(w1, 4, quant::RangeMode::symmetric, true).to_vector());
  // The last activation module (relu3, the last layer's input) follows --ptq-first-last too.
  Module* relu3 = nullptr;
  for (auto& [name, m] : model->named_modules())
    if (name == "relu3") relu3 = m.get();
  REQUIRE(relu3 != nullptr);
  const Variable y(Tensor::from_vector(std::vector<float>{0.1f, 0.7f, 1.3f, 2.9f}, {1, 4}));
  ptq.quantize({.weight_bits = 32, .activation_bits = 2, .first_last_bits = 32});
  CHECK(relu3->output_hook()(y).data().to_vector() == y.data().to_vector());
  ptq.quantize({.weight_bits = 32, .activation_bits = 2});
  CHECK(relu3->output_hook()(y).data().to_vector() != y.data().to_vector());
  const auto r3 = ptq.activation_ranges().back();
  CHECK(r3.name == "relu3");
  const LinearQuant q3 = quant::asymmetric_linear(r3.min, r3.max, 2);
  const std::vector<double> got = relu3->output_hook()(y).data().to_vector();
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == double(float(q3(y.data().to_vector()[i]))));
}

TEST_CASE("fold_bn: a conv followed by a batch norm is rounded as w s (its folded weights), then divided back") {
  auto model = models::create_model("resnet20", {.num_classes = 4, .in_channels = 3, .image_size = 16, .seed = 5});
  Generator gen(8);
  model->train();
  for (int i = 0; i < 3; ++i) (*model)(Variable(Tensor::randn({8, 3, 16, 16}, gen)));  // running stats per channel
  model->eval();
  std::map<std::string, Module*> by_name;
  for (auto& [name, m] : model->named_modules()) by_name[name] = m.get();
  quant::PostTrainingQuantizer ptq(*model);
  const auto& layers = ptq.quantization().layers;
  auto hooked = [&](size_t i) { return quant::weight_hook_of(*layers[i].module)(layers[i].weight()).data(); };
  REQUIRE(layers[1].name == "layer1.0.conv1");
  auto* bn = dynamic_cast<BatchNorm2d*>(by_name.at("layer1.0.bn1"));
  REQUIRE(bn != nullptr);
  const std::vector<double> var = bn->buffer("running_var").to_vector();
  const Tensor w = layers[1].weight().data();
  const int64_t K = w.size(0), per = w.numel() / K;
  std::vector<double> s(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) s[size_t(k)] = 1 / std::sqrt(var[size_t(k)] + 1e-5);  // gamma = 1 at init
  std::vector<float> ws;
  for (double v : w.to_vector()) ws.push_back(float(v));
  for (int64_t i = 0; i < w.numel(); ++i) ws[size_t(i)] = float(ws[size_t(i)] * s[size_t(i / per)]);
  const std::vector<double> expect =
      quant::range_linear_weight(Tensor::from_vector(ws, w.shape()), 4, quant::RangeMode::symmetric, false).to_vector();
  ptq.quantize({.weight_bits = 4, .activation_bits = 32, .fold_bn = true});
  const std::vector<double> folded = hooked(1).to_vector();
  double worst = 0;
  for (int64_t i = 0; i < w.numel(); ++i)
    worst = std::max(worst, std::abs(double(folded[size_t(i)]) * s[size_t(i / per)] - expect[size_t(i)]));
  CHECK(worst < 1e-5);
  const Tensor fc_folded = hooked(layers.size() - 1);  // a Linear: no batch norm after it, rounded as before
  ptq.quantize({.weight_bits = 4, .activation_bits = 32});
  CHECK(hooked(1).to_vector() != folded);  // the fold changes the grid (the running variances differ)
  CHECK(hooked(1).to_vector() == quant::range_linear_weight(w, 4, quant::RangeMode::symmetric, false).to_vector());
  CHECK(hooked(layers.size() - 1).to_vector() == fc_folded.to_vector());
}

TEST_CASE("a setting or option out of range is an error before any work; an uncalibrated activation too") {
  auto model = small_lenet5();
  quant::PostTrainingQuantizer ptq(*model);
  testing::expect_error([&] { ptq.quantize({.weight_bits = 4, .activation_bits = 4}); },
                        {"activation 'relu1' has no calibrated range"});
  ptq.quantize({.weight_bits = 4, .activation_bits = 32});  // weights only: no ranges needed
  testing::expect_error([&] { ptq.quantize({.weight_bits = 1, .activation_bits = 32}); },
                        {"weights 1 bits", "2..16, or 32"});
  testing::expect_error([&] { ptq.quantize({.weight_bits = 4, .activation_bits = 17}); }, {"activations 17 bits"});
  const data::ImageDataset set = fixtures::quadrants28(32, 7);
  data::DataLoader calib(set, quadrants_loader()), test(set, quadrants_loader(false));
  testing::expect_error([&] { train::ptq_sweep(*model, calib, test, {{4, 40}}, {}); }, {"setting 4/40"});
  testing::expect_error(
      [&] {
        train::ptq_sweep(*model, calib, test, {{4, 4}}, {.calib_batches = 0});
      },
      {"calibration batches must be >= 1"});
}

TEST_CASE("parse_ptq_settings and the per-setting predictions file") {
  const auto s = train::parse_ptq_settings("8/8,6/6,4/4");
  REQUIRE(s.size() == 3);
  CHECK(s[0].weight_bits == 8);
  CHECK(s[2].activation_bits == 4);
  CHECK(s[1].label() == "6/6");
  CHECK(s[1].tag() == "w6a6");
  CHECK(train::parse_ptq_settings("4/32,2/16,")[0].activation_bits == 32);
  testing::expect_error([] { train::parse_ptq_settings("4/x"); }, {"--ptq '4/x'", "expected W/A bits"});
  testing::expect_error([] { train::parse_ptq_settings("8"); }, {"--ptq '8'", "expected W/A"});
  testing::expect_error([] { train::parse_ptq_settings("8/8,1/8"); }, {"--ptq '1/8'", "2..16 (32: float"});
  testing::expect_error([] { train::parse_ptq_settings("8/20"); }, {"'8/20'", "2..16"});
  testing::expect_error([] { train::parse_ptq_settings(""); }, {"--ptq ''"});
  testing::expect_error([] { train::parse_ptq_settings("-4/4"); }, {"expected W/A"});
  CHECK(train::ptq_predictions_path("p.csv", {4, 4}) == "p.w4a4.csv");
  CHECK(train::ptq_predictions_path("/tmp/run.d/p", {8, 6}) == "/tmp/run.d/p.w8a6");
  CHECK(train::ptq_predictions_path("out/p.x.csv", {2, 2}) == "out/p.x.w2a2.csv");
}
