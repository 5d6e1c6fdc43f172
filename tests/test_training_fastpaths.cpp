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
