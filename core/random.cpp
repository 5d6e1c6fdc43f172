#include "core/random.h"

#include <cmath>

namespace lowbit {

std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(kM0) * c0, p1 = uint64_t(kM1) * c2;
    const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    const uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0, c1 = lo1, c2 = n2, c3 = lo0;
    k0 += kW0, k1 += kW1;
  }
  return {c0, c1, c2, c3};
}

namespace {
// 24 random bits -> float-exact uniform in [0, 1); 53 bits for the double draws below.
double to_unit(uint32_t hi, uint32_t lo) {
  const uint64_t bits = (uint64_t(hi) << 21) ^ (uint64_t(lo) >> 11);
  return double(bits & ((uint64_t(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}
}  // namespace

double Generator::uniform_at(uint64_t counter) const {
  const auto r = philox4x32(seed_, 0, counter);
  return to_unit(r[0], r[1]);
}

double Generator::normal_at(uint64_t counter) const {
  // Box-Muller on two uniforms of the same Philox block; u1 in (0, 1].
  const auto r = philox4x32(seed_, 1, counter);
  const double u1 = 1.0 - to_unit(r[0], r[1]);
  const double u2 = to_unit(r[2], r[3]);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

void split_stream(Generator& g, uint64_t stream) {
  if (stream == 0) return;
  uint64_t z = g.seed() + 0x9E3779B97F4A7C15ull * stream;  // splitmix64
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  g.set_state(z ^ (z >> 31), g.offset());
}

uint64_t Generator::next_u64() {
  const auto r = philox4x32(seed_, 2, advance(1));
  return (uint64_t(r[0]) << 32) | r[1];
}

Generator& default_generator() {
  static Generator gen(0x5eed);
  return gen;
}

void manual_seed(uint64_t seed) { default_generator().set_state(seed, 0); }

}  // namespace lowbit
