// Fast paths of the training step: the storage caching allocator and the fused elementwise
// backward passes, each pinned to the reference computation it replaces.
#include <doctest/doctest.h>

#include <cstdint>

#include "core/storage.h"
#include "core/tensor.h"

using namespace lowbit;

TEST_CASE("storage size classes: at most 12.5% slack, aligned, monotone") {
  size_t prev = 0;
  for (size_t n = Storage::kCacheMinBytes; n < (size_t(1) << 30); n = n * 9 / 8 + 4093) {
    const size_t c = storage_size_class(n);
    CHECK(c >= n);
    CHECK(double(c) <= double(n) * 1.125);
    CHECK(c % Storage::kAlignment == 0);
    CHECK(c >= prev);
    CHECK(storage_size_class(c) == c);  // a class is its own class
    prev = c;
  }
  CHECK(storage_size_class(size_t(1) << 20) == size_t(1) << 20);
  CHECK(storage_size_class((size_t(1) << 20) + 1) == (size_t(1) << 20) + (size_t(1) << 17));
}

TEST_CASE("storage cache reuses a released buffer of the same class and honours its cap") {
  const size_t saved_limit = storage_cache_stats().limit_bytes;
  set_storage_cache_limit(size_t(64) << 20);
  storage_cache_release();
  const size_t n = (size_t(1) << 20) + 12345;
  void* first = nullptr;
  {
    Storage s(n);
    first = s.data();
    CHECK(reinterpret_cast<uintptr_t>(first) % Storage::kAlignment == 0);
    static_cast<unsigned char*>(s.data())[n - 1] = 7;  // the whole request is usable
  }
  CHECK(storage_cache_stats().cached_bytes == storage_size_class(n));
  {
    const size_t hits = storage_cache_stats().hits;
    Storage s(n - 1000);  // same class
    CHECK(s.data() == first);
    CHECK(storage_cache_stats().hits == hits + 1);
    CHECK(storage_cache_stats().cached_bytes == 0);
  }
  // Small buffers bypass the cache.
  { Storage small(Storage::kCacheMinBytes - 1); }
  CHECK(storage_cache_stats().cached_bytes == storage_size_class(n));
  // A cap below a buffer's class: released buffers go back to the OS, the lists are trimmed.
  set_storage_cache_limit(1 << 20);
  CHECK(storage_cache_stats().cached_bytes == 0);
  { Storage s(n); }
  CHECK(storage_cache_stats().cached_bytes == 0);
  set_storage_cache_limit(0);
  { Storage s(Storage::kCacheMinBytes); }
  CHECK(storage_cache_stats().cached_bytes == 0);
  set_storage_cache_limit(saved_limit);
}

TEST_CASE("tensors on recycled storage are filled as asked") {
  storage_cache_release();
  { Tensor a = Tensor::full({256, 1024}, 3.0); }  // 1 MiB released into the cache
  const Tensor z = Tensor::zeros({256, 1024});
  bool all_zero = true;
  for (double v : z.to_vector()) all_zero = all_zero && v == 0;
  CHECK(all_zero);
}

// ---- fused elementwise backward passes ----
#include <cmath>
#include <cstring>
#include <limits>

#include "autograd/ops.h"
#include "core/math.h"
#include "core/random.h"

namespace {

// Bit-exact equality of two float tensors of one shape, read in logical order (NaN == NaN).
bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  return std::memcmp(ac.data_ptr(), bc.data_ptr(), size_t(ac.numel()) * dtype_size(ac.dtype())) == 0;
}

// Values on both sides of and at the kink(s), plus special gradients.
Tensor kinked_input(const Shape& shape, Generator& gen, DType dtype) {
  Tensor x = Tensor::randn(shape, gen, dtype);
  std::vector<double> v = x.to_vector();
  for (size_t i = 0; i < v.size(); i += 7) v[i] = 0;
  for (size_t i = 3; i < v.size(); i += 11) v[i] = 6;
  return Tensor::from_vector(v, shape).to(dtype);
}
Tensor special_grad(const Shape& shape, Generator& gen, DType dtype) {
  std::vector<double> v = Tensor::randn(shape, gen, DType::f64).to_vector();
  v[1] = std::numeric_limits<double>::quiet_NaN();
  v[2] = std::numeric_limits<double>::infinity();
  v[4] = -0.0;
  v[5] = -std::numeric_limits<double>::infinity();
  return Tensor::from_vector(v, shape).to(dtype);
}

}  // namespace

TEST_CASE("relu / clamp backward fast path equals mul(g, mask) bit for bit, any layout") {
  Generator gen(7);
  const Shape shape{3, 5, 4, 6};
  for (DType dt : {DType::f32, DType::f64}) {
    for (int layout = 0; layout < 4; ++layout) {
      Tensor x = kinked_input(shape, gen, dt), g = special_grad(shape, gen, dt);
      if (layout & 1) x = x.contiguous(MemoryFormat::channels_last);
      if (layout & 2) g = g.contiguous(MemoryFormat::channels_last);
      CAPTURE(layout);
      Variable xv(x, true);
      // relu: gradient where x > 0.
      const Tensor relu_fast = grad({relu(xv)}, {xv}, {Variable(g)})[0].data();
      CHECK(same_bits(relu_fast, math::mul(g, math::gt(x, 0.0))));
      const Tensor relu_recorded = grad({relu(xv)}, {xv}, {Variable(g)}, false, true)[0].data();
      CHECK(same_bits(relu_fast, relu_recorded));
      // clamp (ReLU6, Hardtanh): gradient where lo <= x <= hi.
      const Tensor clamp_fast = grad({clamp(xv, 0.0, 6.0)}, {xv}, {Variable(g)})[0].data();
      CHECK(same_bits(clamp_fast, math::mul(g, math::mul(math::ge(x, 0.0), math::le(x, 6.0)))));
      const Tensor clamp_recorded = grad({clamp(xv, 0.0, 6.0)}, {xv}, {Variable(g)}, false, true)[0].data();
      CHECK(same_bits(clamp_fast, clamp_recorded));
    }
  }
}

#include "core/parallel.h"

TEST_CASE("sum / amax over a few long columns: chunked path matches the plain column loop, any thread count") {
  Generator gen(11);
  // Channels-last [N, C, H, W] reduced over N, H, W: O = 1, R = N*H*W = 9216, I = C.
  const Tensor x = Tensor::randn({16, 20, 24, 24}, gen).contiguous(MemoryFormat::channels_last);
  const std::vector<double> v = x.to_vector();  // logical NCHW order
  const int64_t C = 20, HW = 24 * 24;
  std::vector<double> ref_sum(C, 0.0), ref_max(C, -INFINITY);
  for (int64_t n = 0; n < 16; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t k = 0; k < HW; ++k) {
        ref_sum[c] += v[(n * C + c) * HW + k];
        ref_max[c] = std::max(ref_max[c], v[(n * C + c) * HW + k]);
      }
  const int saved = num_threads();
  std::vector<Tensor> sums, maxes;
  for (int t : {1, 2, 3}) {
    set_num_threads(t);
    sums.push_back(math::sum(x, {0, 2, 3}));
    maxes.push_back(math::amax(x, {0, 2, 3}));
  }
  set_num_threads(saved);
  for (size_t k = 1; k < sums.size(); ++k) {
    CHECK(same_bits(sums[k], sums[0]));
    CHECK(same_bits(maxes[k], maxes[0]));
  }
  const std::vector<double> s = sums[0].to_vector(), m = maxes[0].to_vector();
  for (int64_t c = 0; c < C; ++c) {
    CHECK(s[c] == doctest::Approx(ref_sum[c]).epsilon(1e-6));  // both accumulate in double
    CHECK(m[c] == ref_max[c]);
  }
}

TEST_CASE("elementwise ops on long dense rows (split into segments) match the element-by-element result") {
  Generator gen(13);
  const int64_t n = 3 * 32768 + 12345;  // > 2 segments, ragged last one
  const Tensor a = Tensor::randn({n}, gen), b = Tensor::randn({n}, gen), s = Tensor::randn({1}, gen);
  const std::vector<double> va = a.to_vector(), vb = b.to_vector();
  const float sv = static_cast<float>(s.item());
  const int saved = num_threads();
  for (int t : {1, 2, 3}) {
    set_num_threads(t);
    CAPTURE(t);
    const std::vector<double> sum = math::add(a, b).to_vector(), bc = math::mul(a, s).to_vector(),
                              r = math::relu(a).to_vector();
    Tensor filled = Tensor::empty({n});
    filled.fill_(2.5);
    const std::vector<double> f = filled.to_vector();
    bool ok = true;
    for (int64_t i = 0; i < n; ++i) {
      const float x = static_cast<float>(va[i]), y = static_cast<float>(vb[i]);
      ok = ok && sum[i] == double(x + y) && bc[i] == double(x * sv) && r[i] == double(x > 0 ? x : 0.0f) && f[i] == 2.5;
    }
    CHECK(ok);
  }
  set_num_threads(saved);
}
