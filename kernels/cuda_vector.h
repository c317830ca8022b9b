// Small helpers for the pointwise CUDA kernels of elementwise.cu, pool.cu, linear.cu and optim.cu:
// aligned vectors of N elements (16-byte loads and stores), the alignment test that picks a vector
// path, and the block count of a grid-stride loop. Plain C++: no CUDA headers needed.
#pragma once
#include <algorithm>
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd::gpu {

// N elements of T loaded and stored as one unit: a 16-byte vector (or two, for 32 bytes) when the
// address is aligned as declared. Callers check the alignment with aligned_to() first.
template <typename T, int N>
struct alignas(sizeof(T) * N < 16 ? sizeof(T) * N : 16) Vec {
  T v[N];
};

inline bool aligned_to(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over `work` items of one thread each: enough to fill the device a
// few times over (8 resident blocks of 256 threads per SM, two waves), never more than needed.
inline unsigned grid_for(const CudaHandles& h, int64_t work) {
  const int64_t cap = int64_t(std::max(h.sm_count, 1)) * 16;
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(ceil_div(work, kThreads), cap)));
}

}  // namespace kd::gpu
