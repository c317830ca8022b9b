// Optimizer updates, gradient norm and scaling over flat fp32 buffers on the GPU. Each update is
// one pass: per element, g * grad_scale through optim.h's adam_update_element / sgd_update_element
// (the CPU loops' arithmetic), then optionally the bf16 compute copy of the new weight. Kernels
// sweep 4-float (16-byte) vectors when every pointer allows (the bf16 copy: 8 bytes), then the
// remaining elements one at a time. sum_squares: optim.h's fixed partition, a CUB block sum per
// chunk, CUB's device sum over the chunks in fp64.
#include <cub/block/block_reduce.cuh>
#include <cub/device/device_reduce.cuh>

#include "kernels/check.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_vector.h"
#include "kernels/optim.h"
#include "kernels/step_stats.h"

namespace kd {
namespace {

constexpr int kWidth = 4;  // floats per 16-byte vector
using F4 = gpu::Vec<float, kWidth>;
using Bf16x4 = gpu::Vec<bf16, kWidth>;

struct AdamOp {
  static constexpr int kStates = 2;  // m, v
  AdamHyper hp;
  float bias1, bias2, weight_decay;
  __device__ void operator()(float& w, float g, float* st) const {
    adam_update_element(hp, bias1, bias2, weight_decay, w, g, st[0], st[1]);
  }
  __device__ void read_schedule(const StepScalars& s) { hp.lr = float(s.lr), bias1 = s.bias1, bias2 = s.bias2; }
};

struct SgdOp {
  static constexpr int kStates = 1;  // momentum buffer
  SgdHyper hp;
  float weight_decay;
  __device__ void operator()(float& w, float g, float* st) const { sgd_update_element(hp, weight_decay, w, g, st[0]); }
  __device__ void read_schedule(const StepScalars& s) { hp.lr = float(s.lr), hp.step = s.step; }
};

// w, states updated in place; wc (may be null) = bf16(w) after the update.
template <typename Op>
__global__ void update_kernel(Op op, int64_t n, int64_t vectors, float grad_scale, const double* step_stats, float* w,
                              const float* g, float* s0, float* s1, bf16* wc) {
  if (step_stats) {
    if (step_stats[kStatApplied] == 0.0) return;  // a skipped step: weights and state stay
    grad_scale = float(step_stats[kStatGradScale]);
    op.read_schedule(load_step_scalars(step_stats + kStatLr));
  }
  float* states[2] = {s0, s1};
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = first; i < vectors; i += stride) {
    F4 wv = reinterpret_cast<const F4*>(w)[i];
    const F4 gv = reinterpret_cast<const F4*>(g)[i];
    F4 sv[Op::kStates];
#pragma unroll
    for (int k = 0; k < Op::kStates; ++k) sv[k] = reinterpret_cast<const F4*>(states[k])[i];
#pragma unroll
    for (int lane = 0; lane < kWidth; ++lane) {
      float st[Op::kStates];
#pragma unroll
      for (int k = 0; k < Op::kStates; ++k) st[k] = sv[k].v[lane];
      op(wv.v[lane], grad_scale * gv.v[lane], st);
#pragma unroll
      for (int k = 0; k < Op::kStates; ++k) sv[k].v[lane] = st[k];
    }
    reinterpret_cast<F4*>(w)[i] = wv;
#pragma unroll
    for (int k = 0; k < Op::kStates; ++k) reinterpret_cast<F4*>(states[k])[i] = sv[k];
    if (wc) {
      Bf16x4 cv;
#pragma unroll
      for (int lane = 0; lane < kWidth; ++lane) cv.v[lane] = float_to_bf16(wv.v[lane]);
      reinterpret_cast<Bf16x4*>(wc)[i] = cv;
    }
  }
  for (int64_t i = vectors * kWidth + first; i < n; i += stride) {
    float st[Op::kStates];
#pragma unroll
    for (int k = 0; k < Op::kStates; ++k) st[k] = states[k][i];
    float wi = w[i];
    op(wi, grad_scale * g[i], st);
    w[i] = wi;
#pragma unroll
    for (int k = 0; k < Op::kStates; ++k) states[k][i] = st[k];
    if (wc) wc[i] = float_to_bf16(wi);
  }
}

__global__ void scale_kernel(int64_t n, int64_t vectors, float s, float* x) {
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = first; i < vectors; i += stride) {
    F4 v = reinterpret_cast<const F4*>(x)[i];
#pragma unroll
    for (int lane = 0; lane < kWidth; ++lane) v.v[lane] *= s;
    reinterpret_cast<F4*>(x)[i] = v;
  }
  for (int64_t i = vectors * kWidth + first; i < n; i += stride) x[i] *= s;
}

// dst += src; the vector path needs both pointers 16-byte aligned.
__global__ void accumulate_kernel(int64_t n, int64_t vectors, const float* src, float* dst) {
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = first; i < vectors; i += stride) {
    const F4 a = reinterpret_cast<const F4*>(src)[i];
    F4 b = reinterpret_cast<const F4*>(dst)[i];
#pragma unroll
    for (int lane = 0; lane < kWidth; ++lane) b.v[lane] += a.v[lane];
    reinterpret_cast<F4*>(dst)[i] = b;
  }
  for (int64_t i = vectors * kWidth + first; i < n; i += stride) dst[i] += src[i];
}

__device__ __forceinline__ void add_square(float& acc, float v) { acc += v * v; }

// partials[chunk] = the chunk's sum of squares (optim.h's partition). Both paths visit the
// elements in the same order, so the sum does not depend on the alignment of x.
__global__ void __launch_bounds__(kSumSquaresThreads)
    sum_squares_chunks_kernel(int64_t n, bool vectorised, const float* x, double* partials) {
  using BlockReduce = cub::BlockReduce<float, kSumSquaresThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  const int64_t chunk = blockIdx.x;
  const int t = int(threadIdx.x);
  float acc = 0.0f;
  if (vectorised && (chunk + 1) * kSumSquaresChunk <= n) {
#pragma unroll
    for (int v = 0; v < kSumSquaresVectors; ++v) {
      const F4 q = reinterpret_cast<const F4*>(x)[sum_squares_element(chunk, t, v, 0) / kWidth];
#pragma unroll
      for (int lane = 0; lane < kWidth; ++lane) add_square(acc, q.v[lane]);
    }
  } else {
    for (int v = 0; v < kSumSquaresVectors; ++v)
      for (int lane = 0; lane < kWidth; ++lane) {
        const int64_t e = sum_squares_element(chunk, t, v, lane);
        if (e < n) add_square(acc, x[e]);
      }
  }
  const float block_sum = BlockReduce(temp).Sum(acc);
  if (t == 0) partials[chunk] = double(block_sum);
}

// Whole 16-byte vectors when w-like pointers are 16-byte aligned and the bf16 copy 8-byte aligned.
int64_t vector_count(int64_t n, std::initializer_list<const void*> f32, const bf16* wc) {
  for (const void* p : f32)
    if (p && !gpu::aligned_to(p, sizeof(F4))) return 0;
  if (wc && !gpu::aligned_to(wc, sizeof(Bf16x4))) return 0;
  return n / kWidth;
}

template <typename Op>
void launch_update(const CudaHandles& h, const char* name, const Op& op, int64_t n, float grad_scale,
                   const double* step_stats, float* w, const float* g, float* s0, float* s1, bf16* wc) {
  const int64_t vectors = vector_count(n, {w, g, s0, s1}, wc);
  update_kernel<<<gpu::grid_for(h, vectors + (n - vectors * kWidth)), gpu::kThreads, 0, h.stream>>>(
      op, n, vectors, grad_scale, step_stats, w, g, s0, s1, wc);
  KD_CUDA_LAUNCH_CHECK(name);
}

}  // namespace

void adam_update_cuda(const CudaHandles& h, int64_t n, const AdamHyper& hp, float weight_decay, float grad_scale,
                      float* w, const float* g, float* m, float* v, bf16* w_compute, const double* step_stats) {
  KD_CHECK(n >= 0, "adam_update_cuda: negative size ", n);
  KD_CHECK(hp.step >= 1, "adam_update_cuda: step is 1-based, got ", hp.step);
  if (n == 0) return;
  // Bias corrections once per call on the host, as adam_update_cpu.
  const AdamOp op{hp, adam_bias_correction(hp.beta1, hp.step), adam_bias_correction(hp.beta2, hp.step), weight_decay};
  launch_update(h, "update_kernel (adam)", op, n, grad_scale, step_stats, w, g, m, v, w_compute);
}

void sgd_update_cuda(const CudaHandles& h, int64_t n, const SgdHyper& hp, float weight_decay, float grad_scale,
                     float* w, const float* g, float* buf, bf16* w_compute, const double* step_stats) {
  KD_CHECK(n >= 0, "sgd_update_cuda: negative size ", n);
  KD_CHECK(hp.step >= 1, "sgd_update_cuda: step is 1-based, got ", hp.step);
  if (n == 0) return;
  launch_update(h, "update_kernel (sgd)", SgdOp{hp, weight_decay}, n, grad_scale, step_stats, w, g, buf, nullptr,
                w_compute);
}

void sum_squares_cuda(const CudaHandles& h, int64_t n, const float* x, double* result) {
  KD_CHECK(n >= 0, "sum_squares_cuda: negative size ", n);
  if (n == 0) {
    KD_CUDA_CHECK(cudaMemsetAsync(result, 0, sizeof(double), h.stream));
    return;
  }
  KD_CHECK(h.workspace, "sum_squares_cuda: CudaHandles without a workspace");
  const int64_t chunks = ceil_div(n, kSumSquaresChunk);
  KD_CHECK(chunks <= int64_t(0x7fffffff), "sum_squares_cuda: ", n, " elements are too many for one grid");
  size_t temp_bytes = 0;
  KD_CUDA_CHECK(cub::DeviceReduce::Sum(nullptr, temp_bytes, static_cast<const double*>(nullptr), result, chunks,
                                       h.stream));
  const size_t partial_bytes = (size_t(chunks) * sizeof(double) + 255) / 256 * 256;
  char* ws = static_cast<char*>(h.workspace->get(partial_bytes + temp_bytes));
  double* partials = reinterpret_cast<double*>(ws);
  sum_squares_chunks_kernel<<<unsigned(chunks), kSumSquaresThreads, 0, h.stream>>>(
      n, gpu::aligned_to(x, sizeof(F4)), x, partials);
  KD_CUDA_LAUNCH_CHECK("sum_squares_chunks_kernel");
  KD_CUDA_CHECK(cub::DeviceReduce::Sum(ws + partial_bytes, temp_bytes, static_cast<const double*>(partials), result,
                                       chunks, h.stream));
}

void scale_cuda(const CudaHandles& h, int64_t n, float s, float* x) {
  KD_CHECK(n >= 0, "scale_cuda: negative size ", n);
  if (n == 0) return;
  const int64_t vectors = gpu::aligned_to(x, sizeof(F4)) ? n / kWidth : 0;
  scale_kernel<<<gpu::grid_for(h, vectors + (n - vectors * kWidth)), gpu::kThreads, 0, h.stream>>>(n, vectors, s, x);
  KD_CUDA_LAUNCH_CHECK("scale_kernel");
}

void accumulate_cuda(const CudaHandles& h, int64_t n, const float* src, float* dst) {
  KD_CHECK(n >= 0, "accumulate_cuda: negative size ", n);
  if (n == 0) return;
  const bool aligned = gpu::aligned_to(src, sizeof(F4)) && gpu::aligned_to(dst, sizeof(F4));
  const int64_t vectors = aligned ? n / kWidth : 0;
  accumulate_kernel<<<gpu::grid_for(h, vectors + (n - vectors * kWidth)), gpu::kThreads, 0, h.stream>>>(n, vectors,
                                                                                                      src, dst);
  KD_CUDA_LAUNCH_CHECK("accumulate_kernel");
}

}  // namespace kd
