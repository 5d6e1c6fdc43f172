#include <doctest/doctest.h>

#include <cmath>

#include "core/math.h"
#include "core/parallel.h"
#include "core/random.h"
#include "core/tensor.h"

using namespace lowbit;

namespace {
std::vector<double> vals(const Tensor& t) { return t.to_vector(); }
}  // namespace

TEST_CASE("creation and metadata") {
  Tensor z = Tensor::zeros({2, 3});
  CHECK(z.shape() == Shape{2, 3});
  CHECK(z.strides() == Shape{3, 1});
  CHECK(z.numel() == 6);
  CHECK(z.is_contiguous());
  CHECK(reinterpret_cast<uintptr_t>(z.data_ptr()) % 64 == 0);
  for (double v : vals(z)) CHECK(v == 0);
  CHECK(vals(Tensor::full({2}, 3.5, DType::f64)) == std::vector<double>{3.5, 3.5});
  CHECK(vals(Tensor::arange(5, DType::i32)) == std::vector<double>{0, 1, 2, 3, 4});
  CHECK(vals(Tensor::arange(1, 2, 0.25)) == std::vector<double>{1, 1.25, 1.5, 1.75});
  CHECK(Tensor::scalar(2).dim() == 0);
  CHECK(Tensor::scalar(2).item() == 2);
  for (DType t : {DType::f32, DType::f64, DType::i32, DType::i8, DType::u8}) CHECK(Tensor::ones({3}, t).dtype() == t);
}

TEST_CASE("views share storage and copy nothing") {
  Tensor a = Tensor::arange(24).reshape({2, 3, 4});
  CHECK(a.reshape({6, 4}).shares_storage(a));
  Tensor p = a.permute({2, 0, 1});
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK(p.shares_storage(a));
  CHECK_FALSE(p.is_contiguous());
  CHECK(p.contiguous().is_contiguous());
  CHECK_FALSE(p.contiguous().shares_storage(a));
  CHECK(a.contiguous().shares_storage(a));  // no copy when already contiguous
  // Element checks through the view.
  CHECK(p.contiguous().to_vector()[1] == 4);  // p[0,0,1] = a[0,1,0] = 4
  Tensor n = a.narrow(2, 1, 2);
  CHECK(n.shape() == Shape{2, 3, 2});
  CHECK(vals(n.contiguous())[0] == 1);
  Tensor s = a.select(1, 2);
  CHECK(s.shape() == Shape{2, 4});
  CHECK(vals(s.contiguous())[0] == 8);
  Tensor sl = Tensor::arange(10).slice(0, 1, 9, 3);
  CHECK(vals(sl.contiguous()) == std::vector<double>{1, 4, 7});
  Tensor e = Tensor::arange(3).reshape({3, 1}).expand({3, 4});
  CHECK(e.strides()[1] == 0);
  CHECK(vals(e.contiguous())[5] == 1);
  CHECK(a.unsqueeze(0).shape() == Shape{1, 2, 3, 4});
  CHECK(a.unsqueeze(0).squeeze(0).shape() == Shape{2, 3, 4});
  CHECK(a.flatten(1).shape() == Shape{2, 12});
  CHECK(a.transpose(0, 2).shape() == Shape{4, 3, 2});
  // reshape of a non-viewable tensor copies; view refuses.
  CHECK_THROWS_AS(p.view({8, 3}), Error);
  CHECK(p.reshape({8, 3}).shape() == Shape{8, 3});
  CHECK(a.reshape({-1, 4}).shape() == Shape{6, 4});
}

TEST_CASE("channels-last layout is a view with permuted strides") {
  Tensor x = Tensor::randn({2, 3, 4, 5});
  Tensor cl = x.contiguous(MemoryFormat::channels_last);
  CHECK(cl.shape() == x.shape());
  CHECK(cl.strides() == Shape{60, 1, 15, 3});
  CHECK(cl.is_contiguous(MemoryFormat::channels_last));
  CHECK(cl.is_dense());
  CHECK(allclose(cl, x, 0, 0));
  // Elementwise results keep the layout.
  Tensor y = math::relu(cl);
  CHECK(y.is_contiguous(MemoryFormat::channels_last));
  CHECK(allclose(y, math::relu(x), 0, 0));
  CHECK(math::add(cl, cl).is_contiguous(MemoryFormat::channels_last));
}

TEST_CASE("shape errors name the op and the shapes") {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4});
  try {
    math::add(a, b);
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("add") != std::string::npos);
    CHECK(msg.find("[2, 3]") != std::string::npos);
    CHECK(msg.find("[4]") != std::string::npos);
  }
  CHECK_THROWS_AS(math::matmul(Tensor::zeros({2, 3}), Tensor::zeros({2, 3})), Error);
  CHECK_THROWS_AS(math::add(Tensor::zeros({2}), Tensor::zeros({2}, DType::f64)), Error);
  CHECK_THROWS_AS(a.reshape({5}), Error);
  CHECK_THROWS_AS(a.narrow(1, 2, 2), Error);
  CHECK_THROWS_AS(math::exp(Tensor::zeros({2}, DType::i32)), Error);
}

TEST_CASE("broadcasting binary ops match a scalar loop") {
  Generator gen(1);
  Tensor a = Tensor::randn({4, 1, 5}, gen, DType::f64);
  Tensor b = Tensor::randn({3, 1}, gen, DType::f64);
  Tensor c = math::mul(a, b);
  REQUIRE(c.shape() == Shape{4, 3, 5});
  const auto va = vals(a), vb = vals(b), vc = vals(c);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 5; ++k) CHECK(vc[(i * 3 + j) * 5 + k] == va[i * 5 + k] * vb[j]);
  // Non-contiguous operand.
  Tensor t = Tensor::randn({5, 4}, gen, DType::f64).t();
  CHECK(allclose(math::add(t, t), math::mul(t.contiguous(), 2.0), 0, 0));
}

TEST_CASE("reductions: dims, keepdim, layouts") {
  Tensor a = Tensor::arange(24, DType::f64).reshape({2, 3, 4});
  CHECK(math::sum(a).item() == 276);
  CHECK(vals(math::sum(a, {0, 2})) == std::vector<double>{60, 92, 124});
  CHECK(math::sum(a, {1}, true).shape() == Shape{2, 1, 4});
  CHECK(vals(math::sum(a, {1})) == std::vector<double>{12, 15, 18, 21, 48, 51, 54, 57});
  CHECK(vals(math::amax(a, {2})) == std::vector<double>{3, 7, 11, 15, 19, 23});
  CHECK(vals(math::amin(a, {0, 1})) == std::vector<double>{0, 1, 2, 3});
  CHECK(math::mean(a).item() == doctest::Approx(11.5));
  CHECK(math::var(Tensor::from_list({1, 2, 3, 4}, {4}, DType::f64)).item() == doctest::Approx(5.0 / 3));
  CHECK(vals(math::argmax(Tensor::from_list({1, 5, 2, 7, 0, 3}, {2, 3}), 1)) == std::vector<double>{1, 0});
  // Same answers on a permuted (non-contiguous) and a channels-last input.
  Tensor p = a.permute({2, 0, 1});
  CHECK(allclose(math::sum(p, {1}), math::sum(p.contiguous(), {1}), 0, 0));
  Tensor x = Tensor::randn({3, 4, 5, 6}, DType::f64);
  Tensor cl = x.contiguous(MemoryFormat::channels_last);
  CHECK(allclose(math::sum(cl, {0, 2, 3}), math::sum(x, {0, 2, 3}), 1e-12, 1e-12));
  CHECK(allclose(math::sum(cl, {2, 3}), math::sum(x, {2, 3}), 1e-12, 1e-12));
  CHECK(allclose(math::sum(cl, {1, 3}), math::sum(x, {1, 3}), 1e-12, 1e-12));
  CHECK(allclose(math::sum_to(x, {4, 1, 1}), math::sum(x, {0, 2, 3}, true).reshape({4, 1, 1}), 1e-12, 1e-12));
}

TEST_CASE("reductions and RNG do not depend on the thread count") {
  set_num_threads(1);
  Generator g1(99);
  Tensor a1 = Tensor::randn({1 << 18}, g1);
  const double s1 = math::sum(a1).item();
  Tensor r1 = math::sum(a1.reshape({512, 512}), {0});
  set_num_threads(2);
  Generator g2(99);
  Tensor a2 = Tensor::randn({1 << 18}, g2);
  CHECK(allclose(a1, a2, 0, 0));
  CHECK(math::sum(a2).item() == s1);
  CHECK(allclose(math::sum(a2.reshape({512, 512}), {0}), r1, 0, 0));
  // Distribution sanity: mean ~ 0, var ~ 1 for 262144 samples (4-5 sigma bounds).
  CHECK(std::abs(math::mean(a2).item()) < 0.01);
  CHECK(std::abs(math::var(a2).item() - 1) < 0.02);
  Tensor u = Tensor::rand({100000}, g2);
  CHECK(math::amin(u).item() >= 0);
  CHECK(math::amax(u).item() < 1);
  CHECK(std::abs(math::mean(u).item() - 0.5) < 0.01);
}

TEST_CASE("matmul matches a naive product, with transposed views and batches") {
  Generator gen(5);
  for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {3, 5, 7}, {17, 33, 9}, {64, 31, 65}}) {
    Tensor a = Tensor::randn({M, K}, gen, DType::f64), b = Tensor::randn({K, N}, gen, DType::f64);
    Tensor c = math::matmul(a, b);
    const auto va = vals(a), vb = vals(b), vc = vals(c);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += va[i * K + k] * vb[k * N + j];
        CHECK(vc[i * N + j] == doctest::Approx(s).epsilon(1e-12));
      }
    // Transposed views are read in place.
    Tensor at = a.t().contiguous().t();
    CHECK(allclose(math::matmul(at, b), c, 1e-12, 1e-12));
    Tensor bt = b.t().contiguous().t();
    CHECK(allclose(math::matmul(a, bt), c, 1e-12, 1e-12));
  }
  Tensor x = Tensor::randn({2, 3, 4, 5}, gen), w = Tensor::randn({5, 6}, gen);
  Tensor y = math::matmul(x, w);
  CHECK(y.shape() == Shape{2, 3, 4, 6});
  CHECK(allclose(y.select(0, 1).select(0, 2), math::matmul(x.select(0, 1).select(0, 2), w), 1e-5, 1e-5));
  Tensor v = Tensor::randn({5}, gen);
  CHECK(math::matmul(x, v).shape() == Shape{2, 3, 4});
  CHECK(math::matmul(v, w).shape() == Shape{6});
}

TEST_CASE("cat, stack, pad, softmax") {
  Tensor a = Tensor::arange(6).reshape({2, 3}), b = Tensor::arange(3).reshape({1, 3});
  CHECK(vals(math::cat({a, b}, 0)) == std::vector<double>{0, 1, 2, 3, 4, 5, 0, 1, 2});
  CHECK(math::stack({a, a}, 1).shape() == Shape{2, 2, 3});
  Tensor p = math::pad(Tensor::ones({1, 2}), {1, 2}, 0);
  CHECK(vals(p) == std::vector<double>{0, 1, 1, 0, 0});
  CHECK(vals(math::pad(Tensor::arange(5), {-1, -2})) == std::vector<double>{1, 2});
  Tensor s = math::softmax(Tensor::from_list({1000, 1001, 1002}, {3}), 0);
  CHECK(math::sum(s).item() == doctest::Approx(1));
  CHECK(std::isfinite(vals(s)[0]));
  Tensor ls = math::log_softmax(Tensor::from_list({1, 2, 3, 4}, {2, 2}, DType::f64), 1);
  CHECK(vals(ls)[0] == doctest::Approx(1 - std::log(std::exp(1.0) + std::exp(2.0))));
}

TEST_CASE("copy_, to, fill_, printing") {
  Tensor a = Tensor::arange(6).reshape({2, 3});
  Tensor i8 = a.to(DType::i8);
  CHECK(i8.dtype() == DType::i8);
  CHECK(vals(i8) == vals(a));
  Tensor d = Tensor::empty({2, 3}, DType::f64);
  d.copy_(Tensor::arange(3));
  CHECK(vals(d) == std::vector<double>{0, 1, 2, 0, 1, 2});
  d.narrow(1, 0, 1).fill_(-1);
  CHECK(vals(d) == std::vector<double>{-1, 1, 2, -1, 1, 2});
  const std::string s = a.str();
  CHECK(s.find("shape=[2, 3]") != std::string::npos);
  CHECK(s.find("float32") != std::string::npos);
  CHECK(Tensor::zeros({100, 100}).str().find("...") != std::string::npos);
  CHECK_FALSE(allclose(Tensor::from_list({1, 2}, {2}), Tensor::from_list({1, 2.1}, {2})));
  CHECK(max_abs_diff(Tensor::from_list({1, 2}, {2}), Tensor::from_list({1, 2.5}, {2})) == doctest::Approx(0.5));
}

TEST_CASE("empty tensors: creation, fill, copy and reductions") {
  Tensor e = Tensor::zeros({0, 4});
  CHECK(e.numel() == 0);
  e.fill_(3);
  CHECK(e.t().contiguous().shape() == (Shape{4, 0}));
  CHECK(math::sum(Tensor::ones({4, 0})).item() == 0.0);
  CHECK(math::add(e, 1.0).shape() == (Shape{0, 4}));
}

TEST_CASE("all_finite: NaN and +-inf anywhere, any dtype and layout") {
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor t = Tensor::zeros({3, 5}, dt);
    CHECK(math::all_finite(t));
    CHECK(math::all_finite(Tensor::zeros({0}, dt)));
    for (double bad : {std::nan(""), double(INFINITY), -double(INFINITY)}) {
      for (int64_t i : {0, 7, 14}) {
        Tensor u = Tensor::zeros({3, 5}, dt);
        auto v = u.to_vector();
        v[size_t(i)] = bad;
        u = Tensor::from_vector(v, {3, 5}).to(dt);
        CHECK_FALSE(math::all_finite(u));
        CHECK_FALSE(math::all_finite(u.permute({1, 0})));  // a strided view
      }
    }
    CHECK(math::all_finite(Tensor::full({4}, 3.0e38, dt)));  // large but finite
    // Several parallel chunks of 64 K values: a bad value at either end of a chunk, or the last one.
    const int64_t n = 3 * 65536 + 17;
    CHECK(math::all_finite(Tensor::full({n}, 1.5, dt)));
    for (int64_t i : {int64_t(0), int64_t(65535), int64_t(65536), 2 * int64_t(65536) + 5, n - 1}) {
      std::vector<double> v(size_t(n), -2.0);
      v[size_t(i)] = i % 2 ? double(INFINITY) : std::nan("");
      CHECK_FALSE(math::all_finite(Tensor::from_vector(v, {n}).to(dt)));
    }
    CHECK(math::all_finite(Tensor::full({n}, dt == DType::f32 ? 3.4e38 : 1.7e308, dt)));  // the largest finite
  }
  CHECK(math::all_finite(Tensor::from_vector(std::vector<int32_t>{1, 2}, {2})));  // integers are finite
}

// math::max_abs / max_abs_grad (one pass, no |a| tensor; the op max_abs and gradient-l1's range
// scaling) against their _ref twins, amax(abs(a)) and its composed gradient: activation and weight
// shapes of ResNet-20 and VGG-11, an odd size over several parallel chunks, strided and channels-last
// layouts, ties (ReLU6 saturation, +m and -m), NaN, empty.
TEST_CASE("max_abs: one pass equals amax(abs(a)), its gradient the composed one (shapes, layouts, ties, NaN)") {
  Generator gen(17);
  for (DType dt : {DType::f32, DType::f64}) {
    std::vector<std::pair<std::string, Tensor>> cases;
    for (const Shape& s : {Shape{32, 16, 32, 32}, Shape{16, 64, 16, 16}, Shape{512, 256, 3, 3}, Shape{10, 512},
                           Shape{3 * 65536 + 17}, Shape{1}, Shape{5, 7, 3, 11}})
      cases.emplace_back("randn " + shape_str(s), Tensor::randn(s, gen, dt));
    const Tensor act = Tensor::randn({8, 12, 9, 9}, gen, dt);
    cases.emplace_back("channels-last", act.contiguous(MemoryFormat::channels_last));
    cases.emplace_back("permuted view", act.permute({1, 0, 3, 2}));
    cases.emplace_back("ReLU6 ties", math::clamp(math::mul(act, 4.0), 0.0, 6.0));
    std::vector<double> pm(101, 0.25);
    pm[3] = 2.0, pm[77] = -2.0;  // a tie of opposite signs
    cases.emplace_back("+m and -m", Tensor::from_vector(pm, {101}).to(dt));
    for (const auto& [name, a] : cases) {
      CAPTURE(name);
      CAPTURE(dtype_name(dt));
      const double m = math::max_abs(a);
      CHECK(m == math::max_abs_ref(a));
      for (double scale : {1.0, -2.5}) {
        const Tensor g = math::max_abs_grad(a, m, scale), r = math::max_abs_grad_ref(a, m, scale);
        REQUIRE(g.shape() == a.shape());
        CHECK(math::amax(math::abs(math::sub(g, r))).item() <= 1e-6 * std::abs(scale));
        CHECK(math::sum(math::abs(g)).item() == doctest::Approx(std::abs(scale)).epsilon(1e-5));  // shares sum to 1
      }
    }
    std::vector<double> v(70000, 1.0);
    v[65536] = std::nan("");
    CHECK(std::isnan(math::max_abs(Tensor::from_vector(v, {70000}).to(dt))));
    CHECK(math::max_abs(Tensor::zeros({0, 3}, dt)) == 0.0);
  }
}

TEST_CASE("split_stream: stream 0 unchanged; other streams new seeds, the offset kept, uncorrelated draws") {
  Generator a(1234);
  a.advance(17);
  Generator b = a, c = a, d = a;
  split_stream(b, 0);
  CHECK(b.seed() == a.seed());
  split_stream(c, 1), split_stream(d, 2);
  CHECK(c.seed() != a.seed());
  CHECK(d.seed() != c.seed());
  CHECK(c.offset() == 17);
  // The streams' next 1,000 uniforms: a correlation near 0, not 1.
  double sa = 0, sc = 0, sac = 0, saa = 0, scc = 0;
  for (int i = 0; i < 1000; ++i) {
    const double x = a.uniform() - 0.5, y = c.uniform() - 0.5;
    sa += x, sc += y, sac += x * y, saa += x * x, scc += y * y;
  }
  const double corr = (sac - sa * sc / 1000) / std::sqrt((saa - sa * sa / 1000) * (scc - sc * sc / 1000));
  CHECK(std::abs(corr) < 0.15);
}
