#include "core/storage.h"

#include <bit>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

namespace lowbit {

namespace {

size_t default_limit() {
  if (const char* env = std::getenv("LOWBIT_STORAGE_CACHE_MB")) {
    char* end = nullptr;
    const unsigned long long mb = std::strtoull(env, &end, 10);
    if (end != env && *end == '\0') return static_cast<size_t>(mb) << 20;
  }
  return size_t(2048) << 20;
}

class StorageCache {
 public:
  static StorageCache& instance() {
    static StorageCache* cache = new StorageCache();  // leaked: tensors may outlive static destructors
    return *cache;
  }

  void* allocate(size_t cls) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(cls);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= cls;
        ++hits_;
        return p;
      }
      ++misses_;
    }
    return std::aligned_alloc(Storage::kAlignment, cls);
  }

  void release(void* p, size_t cls) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + cls <= limit_) {
        free_[cls].push_back(p);
        cached_ += cls;
        return;
      }
    }
    std::free(p);
  }

  void set_limit(size_t bytes) {
    std::vector<void*> drop;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      limit_ = bytes;
      // Trim the largest classes first: they are the ones a cap is meant to bound.
      while (cached_ > limit_) {
        auto big = free_.end();
        for (auto it = free_.begin(); it != free_.end(); ++it)
          if (!it->second.empty() && (big == free_.end() || it->first > big->first)) big = it;
        if (big == free_.end()) break;
        drop.push_back(big->second.back());
        big->second.pop_back();
        cached_ -= big->first;
      }
    }
    for (void* p : drop) std::free(p);
  }

  StorageCacheStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {cached_, limit_, hits_, misses_};
  }

  size_t limit() {
    std::lock_guard<std::mutex> lock(mutex_);
    return limit_;
  }

 private:
  StorageCache() : limit_(default_limit()) {}
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // size class -> released buffers
  size_t cached_ = 0, limit_ = 0, hits_ = 0, misses_ = 0;
};

}  // namespace

size_t storage_size_class(size_t nbytes) {
  // 8 classes per power of two: round up to a multiple of 2^(floor(log2 n) - 3).
  const int top = std::bit_width(nbytes) - 1;
  const size_t step = size_t(1) << (top - 3);
  return (nbytes + step - 1) / step * step;
}

Storage::Storage(size_t nbytes) : nbytes_(nbytes) {
  if (nbytes >= kCacheMinBytes) {
    data_ = StorageCache::instance().allocate(storage_size_class(nbytes));
  } else {
    const size_t rounded = (nbytes + kAlignment - 1) / kAlignment * kAlignment;
    data_ = std::aligned_alloc(kAlignment, rounded == 0 ? kAlignment : rounded);
  }
  if (!data_) throw std::bad_alloc();
}

Storage::~Storage() {
  if (nbytes_ >= kCacheMinBytes)
    StorageCache::instance().release(data_, storage_size_class(nbytes_));
  else
    std::free(data_);
}

StorageCacheStats storage_cache_stats() { return StorageCache::instance().stats(); }

void storage_cache_release() {
  StorageCache& c = StorageCache::instance();
  const size_t limit = c.limit();
  c.set_limit(0);
  c.set_limit(limit);
}

void set_storage_cache_limit(size_t bytes) { StorageCache::instance().set_limit(bytes); }

}  // namespace lowbit
