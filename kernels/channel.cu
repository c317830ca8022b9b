// Channel scale and convolution bias on bf16 NHWC activations (see channel.h).
//
// Pointwise kernels (y = x * s, dx = dy * s, y += bias): a thread owns 8 consecutive channels of
// one pixel (one 16-byte vector) when c is a multiple of 8 and every pointer is 16-byte aligned,
// else one element. Per element: channel.h's index math, one fp32 multiply or add, rounded once
// to bf16 with common.h's float_to_bf16 (the CPU reference's arithmetic on the same values).
//
// Column sums (the gate gradient, the bias gradient) of a term over a [segments, rows, c] matrix
// (gate: segments = images, rows = pixels; bias: one segment of n*h*w rows), two-level and in a
// fixed order:
//   pass 1, column_partials_kernel: a block of 32 x 8 threads covers 32 channels of one chunk of
//     rows of one segment; thread (tx, ty) adds, in fp32, rows ty, ty + 8, ... of the chunk for
//     channel tile * 32 + tx (a warp reads 32 consecutive channels of one row: coalesced); the
//     block then adds its 8 row-lanes per channel in shared memory, in order, and writes one
//     partial per (segment, channel, chunk);
//   pass 2, column_finish_kernel: one warp per (segment, channel) adds that item's chunks in
//     double with a CUB warp reduction and hands the total to an epilogue (store or accumulate).
// No atomics: results depend only on the sizes and the device's SM count (the chunking).
#include <algorithm>
#include <cub/warp/warp_reduce.cuh>
#include <initializer_list>

#include "kernels/channel.h"
#include "kernels/check.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_vector.h"

namespace kd {
namespace {

constexpr int kVec = 8;  // bf16 per 16-byte vector

// ---- pointwise ----------------------------------------------------------------------------------
__device__ int64_t first_item() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ int64_t item_stride() { return int64_t(gridDim.x) * blockDim.x; }

// y = a * s[image, channel] over V elements per thread (a = x forward, dy backward). y may alias a.
template <int V>
__global__ void channel_scale_kernel(int64_t items, int64_t hw, int64_t c, const bf16* a,
                                     const bf16* __restrict__ scale, bf16* y) {
  for (int64_t t = first_item(); t < items; t += item_stride()) {
    const int64_t i = t * V;
    const gpu::Vec<bf16, V> av = *reinterpret_cast<const gpu::Vec<bf16, V>*>(a + i);
    const gpu::Vec<bf16, V> sv = *reinterpret_cast<const gpu::Vec<bf16, V>*>(scale + channel_scale_index(i, hw, c));
    gpu::Vec<bf16, V> yv;
#pragma unroll
    for (int j = 0; j < V; ++j) yv.v[j] = float_to_bf16(bf16_to_float(av.v[j]) * bf16_to_float(sv.v[j]));
    *reinterpret_cast<gpu::Vec<bf16, V>*>(y + i) = yv;
  }
}

// y[r, ch] += bias[ch] in place, V elements per thread.
template <int V>
__global__ void bias_add_kernel(int64_t items, int64_t c, const float* __restrict__ bias, bf16* __restrict__ y) {
  for (int64_t t = first_item(); t < items; t += item_stride()) {
    const int64_t i = t * V, ch = channel_of(i, c);
    gpu::Vec<bf16, V> yv = *reinterpret_cast<const gpu::Vec<bf16, V>*>(y + i);
#pragma unroll
    for (int j = 0; j < V; ++j) yv.v[j] = float_to_bf16(bf16_to_float(yv.v[j]) + bias[ch + j]);
    *reinterpret_cast<gpu::Vec<bf16, V>*>(y + i) = yv;
  }
}

// 16-byte vectors when c allows them and every pointer is aligned for them.
bool use_vectors(int64_t c, std::initializer_list<const void*> pointers) {
  if (c % kVec != 0) return false;
  for (const void* p : pointers)
    if (!gpu::aligned_to(p, 16)) return false;
  return true;
}

void launch_scale(const CudaHandles& h, const ChannelScaleShape& s, const bf16* a, const bf16* scale, bf16* y,
                  const char* name) {
  const int64_t numel = s.numel();
  if (use_vectors(s.c, {a, scale, y}))
    channel_scale_kernel<kVec>
        <<<gpu::grid_for(h, numel / kVec), gpu::kThreads, 0, h.stream>>>(numel / kVec, s.hw, s.c, a, scale, y);
  else
    channel_scale_kernel<1><<<gpu::grid_for(h, numel), gpu::kThreads, 0, h.stream>>>(numel, s.hw, s.c, a, scale, y);
  KD_CUDA_LAUNCH_CHECK(name);
}

// ---- column sums ---------------------------------------------------------------------------------
constexpr int kTileChannels = 32, kRowLanes = 8;
constexpr int kWarpThreads = 32, kFinishThreads = 256, kFinishWarps = kFinishThreads / kWarpThreads;

struct ColumnTiling {
  int64_t segments = 1, rows = 1, c = 1;
  int64_t tiles = 1, chunks = 1, rows_per_chunk = 1;
  int64_t blocks() const { return segments * chunks * tiles; }
};

// Enough blocks to fill every SM several times, but at least 4 rows per row-lane in a chunk.
ColumnTiling make_tiling(const CudaHandles& h, int64_t segments, int64_t rows, int64_t c) {
  ColumnTiling t;
  t.segments = segments, t.rows = rows, t.c = c, t.tiles = ceil_div(c, kTileChannels);
  const int64_t target = int64_t(h.sm_count > 0 ? h.sm_count : 132) * 8;
  const int64_t wanted = ceil_div(target, segments * t.tiles);
  const int64_t most = std::max<int64_t>(1, rows / (4 * kRowLanes));
  t.rows_per_chunk = ceil_div(rows, std::max<int64_t>(1, std::min(wanted, most)));
  t.chunks = ceil_div(rows, t.rows_per_chunk);
  return t;
}

// The summed terms, in fp32: dy * x (a bf16 product is exact in fp32) or dy.
struct ProductTerm {
  const bf16* dy;
  const bf16* x;
  __device__ float operator()(int64_t i) const { return bf16_to_float(dy[i]) * bf16_to_float(x[i]); }
};
struct ValueTerm {
  const bf16* dy;
  __device__ float operator()(int64_t i) const { return bf16_to_float(dy[i]); }
};

// What the finishing warp does with item (segment * c + channel)'s total.
struct StoreBf16 {
  bf16* out;
  __device__ void operator()(int64_t item, double total) const { out[item] = float_to_bf16(float(total)); }
};
struct AccumulateF32 {
  float* out;
  __device__ void operator()(int64_t item, double total) const { out[item] += float(total); }
};

// partials [segments, c, chunks].
template <typename Term>
__global__ void __launch_bounds__(kTileChannels* kRowLanes)
    column_partials_kernel(ColumnTiling t, Term term, float* __restrict__ partials) {
  __shared__ float lanes[kRowLanes][kTileChannels];
  const int64_t b = blockIdx.x, tile = b % t.tiles, chunk = b / t.tiles % t.chunks, segment = b / t.tiles / t.chunks;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t ch = tile * kTileChannels + tx;
  const int64_t row_begin = chunk * t.rows_per_chunk;
  const int64_t row_end = row_begin + t.rows_per_chunk < t.rows ? row_begin + t.rows_per_chunk : t.rows;
  float sum = 0.0f;
  if (ch < t.c)
    for (int64_t r = row_begin + ty; r < row_end; r += kRowLanes) sum += term((segment * t.rows + r) * t.c + ch);
  lanes[ty][tx] = sum;
  __syncthreads();
  if (ty != 0 || ch >= t.c) return;
  float total = 0.0f;
#pragma unroll
  for (int y = 0; y < kRowLanes; ++y) total += lanes[y][tx];
  partials[(segment * t.c + ch) * t.chunks + chunk] = total;
}

template <typename Epilogue>
__global__ void __launch_bounds__(kFinishThreads)
    column_finish_kernel(int64_t items, int64_t chunks, const float* __restrict__ partials, Epilogue epilogue) {
  using WarpReduce = cub::WarpReduce<double>;
  __shared__ typename WarpReduce::TempStorage storage[kFinishWarps];
  const int warp = threadIdx.x / kWarpThreads, lane = threadIdx.x % kWarpThreads;
  const int64_t item = int64_t(blockIdx.x) * kFinishWarps + warp;
  if (item >= items) return;  // the whole warp leaves together
  double sum = 0.0;
  for (int64_t k = lane; k < chunks; k += kWarpThreads) sum += double(partials[item * chunks + k]);
  sum = WarpReduce(storage[warp]).Sum(sum);
  if (lane == 0) epilogue(item, sum);
}

template <typename Term, typename Epilogue>
void column_sums(const CudaHandles& h, const char* op, int64_t segments, int64_t rows, int64_t c, Term term,
                 Epilogue epilogue) {
  KD_CHECK(h.workspace, op, ": CudaHandles without a workspace");
  const ColumnTiling t = make_tiling(h, segments, rows, c);
  KD_CHECK(t.blocks() < (int64_t(1) << 31), op, ": ", t.blocks(), " blocks do not fit one grid");
  const int64_t items = segments * c;
  auto* partials = static_cast<float*>(h.workspace->get(size_t(items * t.chunks) * sizeof(float)));
  column_partials_kernel<<<unsigned(t.blocks()), dim3(kTileChannels, kRowLanes), 0, h.stream>>>(t, term, partials);
  KD_CUDA_LAUNCH_CHECK("column_partials_kernel");
  column_finish_kernel<<<unsigned(ceil_div(items, kFinishWarps)), kFinishThreads, 0, h.stream>>>(items, t.chunks,
                                                                                                 partials, epilogue);
  KD_CUDA_LAUNCH_CHECK("column_finish_kernel");
}

}  // namespace

void channel_scale_forward_cuda(const CudaHandles& h, const ChannelScaleShape& s, const bf16* x, const bf16* scale,
                                bf16* y) {
  validate(s, "channel_scale_forward_cuda");
  launch_scale(h, s, x, scale, y, "channel_scale_kernel (forward)");
}

void channel_scale_backward_cuda(const CudaHandles& h, const ChannelScaleShape& s, const bf16* x, const bf16* scale,
                                 const bf16* dy, bf16* dx, bf16* dscale) {
  validate(s, "channel_scale_backward_cuda");
  // The gate gradient reads dy before dx is written (stream order), so dx may alias dy.
  column_sums(h, "channel_scale_backward_cuda", s.n, s.hw, s.c, ProductTerm{dy, x}, StoreBf16{dscale});
  launch_scale(h, s, dy, scale, dx, "channel_scale_kernel (backward)");
}

void bias_add_cuda(const CudaHandles& h, int64_t rows, int64_t c, const float* bias, bf16* y) {
  KD_CHECK(rows > 0 && c > 0, "bias_add_cuda: sizes must be positive, got rows ", rows, ", c ", c);
  const int64_t numel = rows * c;
  if (use_vectors(c, {y}))
    bias_add_kernel<kVec><<<gpu::grid_for(h, numel / kVec), gpu::kThreads, 0, h.stream>>>(numel / kVec, c, bias, y);
  else
    bias_add_kernel<1><<<gpu::grid_for(h, numel), gpu::kThreads, 0, h.stream>>>(numel, c, bias, y);
  KD_CUDA_LAUNCH_CHECK("bias_add_kernel");
}

void bias_backward_cuda(const CudaHandles& h, int64_t rows, int64_t c, const bf16* dy, float* dbias) {
  KD_CHECK(rows > 0 && c > 0, "bias_backward_cuda: sizes must be positive, got rows ", rows, ", c ", c);
  column_sums(h, "bias_backward_cuda", 1, rows, c, ValueTerm{dy}, AccumulateF32{dbias});
}

}  // namespace kd
