// Device side of kernels/logit_rows.h: reading a row of logits with float4 loads (staging it in
// shared memory on the way), and the dynamic shared memory a row kernel may ask for.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/logit_rows.h"

namespace kd {
namespace gpu {

// Reads row[0, n) (global memory) once with 16-byte loads where aligned, calling f(x, c) for
// every element this thread reads; with a non-null `copy` (the row's staging place, whose
// 16-byte phase matches row's: logit_rows.h), also stores each element to copy[c].
template <int THREADS, typename F>
__device__ __forceinline__ void read_row(const float* __restrict__ row, int32_t n, float* copy, F&& f) {
  const RowQuads q = row_quads(n, float_misalignment(row));
  const int32_t tid = int32_t(threadIdx.x);
  visit_row<THREADS>(
      q, tid,
      [&](int32_t c) {
        const float x = __ldg(row + c);
        if (copy) copy[c] = x;
        f(x, c);
      },
      [&](int32_t c) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(row + c));
        if (copy) *reinterpret_cast<float4*>(copy + c) = v;
        f(v.x, c), f(v.y, c + 1), f(v.z, c + 2), f(v.w, c + 3);
      });
}

// Writes out[c] = g(c) for c in [0, n) with 16-byte stores where aligned.
template <int THREADS, typename G>
__device__ __forceinline__ void write_row(float* __restrict__ out, int32_t n, G&& g) {
  const RowQuads q = row_quads(n, float_misalignment(out));
  visit_row<THREADS>(
      q, int32_t(threadIdx.x), [&](int32_t c) { out[c] = g(c); },
      [&](int32_t c) {
        float4 v;
        v.x = g(c), v.y = g(c + 1), v.z = g(c + 2), v.w = g(c + 3);
        *reinterpret_cast<float4*>(out + c) = v;
      });
}

// Where region k of a block's staging area starts, after the header; a row staged in it starts
// float_misalignment(its global row) floats further (logit_rows.h).
__device__ __forceinline__ float* staging_region(void* smem, int64_t header_bytes, int64_t stride, int32_t k) {
  return reinterpret_cast<float*>(static_cast<char*>(smem) + header_bytes) + k * stride;
}

// The dynamic shared memory a block of any of `kernels` may use on `device` (the current one):
// the opt-in limit less the largest static shared memory among them.
inline int64_t shared_budget_of(int device, const std::vector<const void*>& kernels) {
  int optin = 0;
  KD_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  size_t static_bytes = 0;
  for (const void* k : kernels) {
    cudaFuncAttributes attr{};
    KD_CUDA_CHECK(cudaFuncGetAttributes(&attr, k));
    static_bytes = std::max(static_bytes, attr.sharedSizeBytes);
  }
  return int64_t(optin) - int64_t(static_bytes);
}

// The launch-side facts of one row kernel family (its 128..1024-thread instances), asked of the
// driver once per device rather than on every call: the dynamic shared-memory budget, and the
// largest dynamic size each instance has been allowed so far (the attribute only needs raising).
// A call site keeps one in a function-local static; thread-safe.
class RowKernelLimits {
 public:
  template <typename... Kernels>
  explicit RowKernelLimits(Kernels... kernels) : kernels_{reinterpret_cast<const void*>(kernels)...} {}

  int64_t shared_budget(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = budget_.find(device);
    if (it == budget_.end()) it = budget_.emplace(device, shared_budget_of(device, kernels_)).first;
    return it->second;
  }

  // Lets `kernel` (one of the family) launch with `bytes` of dynamic shared memory: beyond the
  // default 48 KiB less static, a block needs the opt-in, a host-side attribute (no stream work).
  void allow_dynamic_shared(int device, const void* kernel, int64_t bytes) {
    if (bytes <= 0) return;
    std::lock_guard<std::mutex> lock(mu_);
    int64_t& allowed = allowed_[{device, kernel}];
    if (bytes <= allowed) return;
    KD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    allowed = bytes;
  }

 private:
  std::mutex mu_;
  const std::vector<const void*> kernels_;
  std::map<int, int64_t> budget_;
  std::map<std::pair<int, const void*>, int64_t> allowed_;
};

}  // namespace gpu
}  // namespace kd
