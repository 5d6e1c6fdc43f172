// Storage: one 64-byte-aligned, uninitialised heap buffer, shared by tensors (views) through
// std::shared_ptr.
//
// Large buffers (>= kCacheMinBytes) come from a process-wide caching allocator: sizes round up to
// a size class (8 classes per power of two, so at most 12.5% slack) and a released buffer is kept
// on its class's free list for the next request of that class instead of going back to the OS.
// A training step allocates the same sizes every iteration, so after the first step its
// activations and gradients reuse warm pages instead of page-faulting fresh mmap'd memory. The
// cache is thread-safe (one mutex) and capped: a buffer released while the free lists already
// hold the cap goes back to the OS. Cap: env LOWBIT_STORAGE_CACHE_MB (default 2048; 0 disables the
// cache), or set_storage_cache_limit(). Smaller buffers use aligned_alloc/free directly.
#pragma once

#include <cstddef>
#include <memory>

namespace lowbit {

class Storage {
 public:
  static constexpr size_t kAlignment = 64;
  static constexpr size_t kCacheMinBytes = size_t(1) << 16;  // 64 KiB
  explicit Storage(size_t nbytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
};

struct StorageCacheStats {
  size_t cached_bytes = 0;  // held on the free lists now
  size_t limit_bytes = 0;   // the cap
  size_t hits = 0;          // requests served from the free lists
  size_t misses = 0;        // cacheable requests that went to the OS
};

// Size class a cacheable request of `nbytes` rounds up to (exposed for tests).
size_t storage_size_class(size_t nbytes);
StorageCacheStats storage_cache_stats();
// Returns every cached buffer to the OS.
void storage_cache_release();
// Sets the cap on cached bytes (0 disables caching); trims the free lists to it.
void set_storage_cache_limit(size_t bytes);

}  // namespace lowbit
