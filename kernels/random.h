// Counter-based random numbers: every value is a pure function of (seed, stream, index), so any
// draw can be recomputed on any device, in any order, after any resume. SplitMix64's finaliser
// (Steele, Lea, Flood 2014) mixes the key; two rounds decorrelate nearby counters.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/common.h"

namespace kd {

KD_HD uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

KD_HD uint64_t random_bits(uint64_t seed, uint64_t stream, uint64_t index) {
  return mix64(mix64(seed ^ mix64(stream)) ^ index);
}

// Uniform in [0, 1) with 24 random bits (exactly representable as float).
KD_HD float random_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return float(random_bits(seed, stream, index) >> 40) * (1.0f / 16777216.0f);
}

// Uniform in [0, 1) with 53 random bits.
KD_HD double random_uniform_double(uint64_t seed, uint64_t stream, uint64_t index) {
  return double(random_bits(seed, stream, index) >> 11) * (1.0 / 9007199254740992.0);
}

// Standard normal by Box-Muller from two uniforms of the same counter.
KD_HD double random_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  const double u1 = random_uniform_double(seed, stream, 2 * index) + 1e-300;
  const double u2 = random_uniform_double(seed, stream, 2 * index + 1);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// FNV-1a of a string: turns a parameter name into a stream id, so initial values do not depend
// on the order in which parameters were declared.
inline uint64_t hash_string(const char* s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; ++s) h = (h ^ uint8_t(*s)) * 0x100000001b3ull;
  return h;
}

}  // namespace kd
