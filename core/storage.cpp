#include "core/storage.h"

#include <cstdlib>
#include <new>

namespace lowbit {

Storage::Storage(size_t nbytes) : nbytes_(nbytes) {
  const size_t rounded = (nbytes + kAlignment - 1) / kAlignment * kAlignment;
  data_ = std::aligned_alloc(kAlignment, rounded == 0 ? kAlignment : rounded);
  if (!data_) throw std::bad_alloc();
}

Storage::~Storage() { std::free(data_); }

}  // namespace lowbit
