// Storage: one 64-byte-aligned, zero-initialised or uninitialised heap buffer, shared by tensors
// (views) through std::shared_ptr.
#pragma once

#include <cstddef>
#include <memory>

namespace lowbit {

class Storage {
 public:
  static constexpr size_t kAlignment = 64;
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

}  // namespace lowbit
