// Counter-based random numbers (Philox-4x32-10, Salmon et al. 2011).
// The value drawn for element i of a request depends only on (seed, offset + i): results are the
// same for any thread count and any split of the work. Each request advances the offset.
#pragma once

#include <array>
#include <cstdint>

namespace lowbit {

std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo);

class Generator {
 public:
  explicit Generator(uint64_t seed = 0x5eed) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed, offset_ = offset; }
  // Reserves n counters and returns the first one.
  uint64_t advance(uint64_t n) {
    const uint64_t first = offset_;
    offset_ += n;
    return first;
  }
  // Uniform float in [0, 1) / standard normal for counter c (stateless).
  double uniform_at(uint64_t counter) const;
  double normal_at(uint64_t counter) const;
  // Convenience draws that advance the state by one.
  double uniform() { return uniform_at(advance(1)); }
  double normal() { return normal_at(advance(1)); }
  uint64_t next_u64();  // advances by one

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// An independent stream of `g` for `stream` > 0 (a data-parallel rank): the seed mixed with the stream
// by splitmix64, the offset kept; stream 0 leaves g as it is.
void split_stream(Generator& g, uint64_t stream);

Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace lowbit
