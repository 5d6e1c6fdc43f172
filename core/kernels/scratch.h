// Float buffers for the kernels: owned aligned arrays and per-thread scratch.
//
//   aligned_floats(n)      n uninitialised floats, 64-byte aligned, owned by the caller (plus 16
//                          floats of slack, so a full vector load at the last element stays inside).
//   thread_scratch(s, n)   this thread's buffer for slot s, at least n floats, uninitialised; grown on
//                          demand, never shrunk, valid until this thread asks for slot s again. Slots
//                          keep apart the buffers one kernel call holds at the same time.
//   thread_zeros(n)        at least n zeros, this thread's, read-only.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>

namespace lowbit::kernels {

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using AlignedFloats = std::unique_ptr<float[], FreeDeleter>;

AlignedFloats aligned_floats(int64_t n);

enum class ScratchSlot {
  kConvStage,         // direct conv: staged input rows / dy rows of one task
  kWinogradV,         // Winograd: transformed input tiles of a block / chunk
  kWinogradM,         // Winograd: transform-domain products (forward) or dM (backward-weight)
  kWinogradU,         // Winograd: transformed weights (calling thread)
  kWinogradPartials,  // Winograd backward-weight: dU per batch chunk (calling thread)
  kIm2col,            // im2col: cols of a chunk of images (calling thread)
  kCount
};

float* thread_scratch(ScratchSlot slot, int64_t n);
const float* thread_zeros(int64_t n);

}  // namespace lowbit::kernels
