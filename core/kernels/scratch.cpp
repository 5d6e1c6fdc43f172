// Float buffers for the kernels (contract: core/kernels/scratch.h).
#include "core/kernels/scratch.h"

#include <cstring>

namespace lowbit::kernels {

AlignedFloats aligned_floats(int64_t n) {
  const int64_t bytes = ((n + 16) * int64_t(sizeof(float)) + 63) / 64 * 64;
  return AlignedFloats(static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(bytes))));
}

float* thread_scratch(ScratchSlot slot, int64_t n) {
  constexpr int kSlots = static_cast<int>(ScratchSlot::kCount);
  thread_local AlignedFloats buf[kSlots];
  thread_local int64_t capacity[kSlots] = {};
  const int s = static_cast<int>(slot);
  if (capacity[s] < n) buf[s] = aligned_floats(n), capacity[s] = n;
  return buf[s].get();
}

const float* thread_zeros(int64_t n) {
  thread_local AlignedFloats buf;
  thread_local int64_t capacity = 0;
  if (capacity < n) {
    buf = aligned_floats(n);
    std::memset(buf.get(), 0, sizeof(float) * static_cast<size_t>(n + 16));
    capacity = n;
  }
  return buf.get();
}

}  // namespace lowbit::kernels
