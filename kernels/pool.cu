// Pooling over NHWC bf16 tensors. Each thread owns a group of V consecutive channels of one
// pixel (V = 8, one 16-byte vector, when the channel count and every pointer allow it; else
// V = 1), found from its flat index with pool.h's nhwc_position. The window, tap and gather steps
// are pool.h's KD_HD functions, which the CPU reference runs too, on fp32 values of the bf16
// inputs; every output is rounded to bf16 once.
//
// Max-pool forward: a max is a selection, so y and argmax equal the CPU's bit for bit.
// Max-pool backward: a gather. Each input position sums, in fp32 and in (oy, ox) order, the
// outputs whose windows cover it (maxpool_cover_*) and whose argmax points at it: no atomics with
// overlapping windows, deterministic, and the same sum as the CPU's.
// Global average pool: one thread per (image, channel group) adds the hw pixels in order.
#include "kernels/check.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_vector.h"
#include "kernels/pool.h"

namespace kd {
namespace {

constexpr int kGroup = 8;  // channels per 16-byte vector of bf16

template <int V>
__device__ void load_bf16(const bf16* p, float* out) {
  const gpu::Vec<bf16, V> v = *reinterpret_cast<const gpu::Vec<bf16, V>*>(p);
#pragma unroll
  for (int j = 0; j < V; ++j) out[j] = bf16_to_float(v.v[j]);
}

template <int V>
__device__ void store_bf16(const float* in, bf16* p) {
  gpu::Vec<bf16, V> v;
#pragma unroll
  for (int j = 0; j < V; ++j) v.v[j] = float_to_bf16(in[j]);
  *reinterpret_cast<gpu::Vec<bf16, V>*>(p) = v;
}

__device__ int64_t first_item() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ int64_t item_stride() { return int64_t(gridDim.x) * blockDim.x; }

// One thread per V channels of one output pixel; items = n * out_h * out_w * c / V.
template <int V>
__global__ void maxpool_forward_kernel(MaxPoolShape s, int64_t items, const bf16* x, bf16* y, int32_t* argmax) {
  const int64_t oh = s.out_h(), ow = s.out_w();
  for (int64_t t = first_item(); t < items; t += item_stride()) {
    const int64_t o = t * V;
    const NhwcPosition p = nhwc_position(o, oh, ow, s.c);
    const bf16* xi = x + p.img * s.h * s.w * s.c + p.ch;
    const int64_t y0 = maxpool_window_start(s, p.y), x0 = maxpool_window_start(s, p.x);
    float best[V];
    int32_t arg[V];
    bool first = true;
    for (int64_t iy = y0; iy < y0 + s.k; ++iy)
      for (int64_t ix = x0; ix < x0 + s.k; ++ix) {
        const bool inside = maxpool_tap_inside(s, iy, ix);
        if (!inside && !s.pad_with_zero) continue;
        if (inside) {
          float v[V];
          load_bf16<V>(xi + (iy * s.w + ix) * s.c, v);
          maxpool_fold_tap(first, v, maxpool_index(s, iy, ix, p.ch), V, best, arg);
        } else {
          maxpool_fold_tap<float>(first, nullptr, -1, V, best, arg);
        }
        first = false;
      }
    store_bf16<V>(best, y + o);
    if (argmax) {
      gpu::Vec<int32_t, V> a;
#pragma unroll
      for (int j = 0; j < V; ++j) a.v[j] = arg[j];
      *reinterpret_cast<gpu::Vec<int32_t, V>*>(argmax + o) = a;
    }
  }
}

// One thread per V channels of one input pixel; items = n * h * w * c / V.
template <int V>
__global__ void maxpool_backward_kernel(MaxPoolShape s, int64_t items, const int32_t* argmax, const bf16* dy,
                                        bf16* dx) {
  const int64_t oh = s.out_h(), ow = s.out_w();
  for (int64_t t = first_item(); t < items; t += item_stride()) {
    const int64_t i = t * V;
    const NhwcPosition p = nhwc_position(i, s.h, s.w, s.c);
    const MaxPoolCover rows = maxpool_cover_rows(s, p.y), cols = maxpool_cover_cols(s, p.x);
    const int32_t index = maxpool_index(s, p.y, p.x, p.ch);
    float acc[V];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = 0.0f;
    for (int64_t oy = rows.first; oy <= rows.last; ++oy)
      for (int64_t ox = cols.first; ox <= cols.last; ++ox) {
        const int64_t o = ((p.img * oh + oy) * ow + ox) * s.c + p.ch;
        const gpu::Vec<int32_t, V> a = *reinterpret_cast<const gpu::Vec<int32_t, V>*>(argmax + o);
        float g[V];
        load_bf16<V>(dy + o, g);
        maxpool_gather_output(a.v, g, index, V, acc);
      }
    store_bf16<V>(acc, dx + i);
  }
}

// One thread per V channels of one image; items = n * c / V. y[img, ch] = sum over hw / hw.
template <int V>
__global__ void global_avgpool_forward_kernel(int64_t items, int64_t hw, int64_t c, const bf16* x, bf16* y) {
  for (int64_t t = first_item(); t < items; t += item_stride()) {
    const NhwcPosition p = nhwc_position(t * V, 1, 1, c);
    const bf16* xi = x + p.img * hw * c + p.ch;
    float sum[V];
#pragma unroll
    for (int j = 0; j < V; ++j) sum[j] = 0.0f;
#pragma unroll 4
    for (int64_t q = 0; q < hw; ++q) {
      float v[V];
      load_bf16<V>(xi + q * c, v);
#pragma unroll
      for (int j = 0; j < V; ++j) sum[j] += v[j];
    }
#pragma unroll
    for (int j = 0; j < V; ++j) sum[j] /= float(hw);
    store_bf16<V>(sum, y + t * V);
  }
}

// One thread per V elements of dx; items = n * hw * c / V (V divides c, so a group shares its image).
template <int V>
__global__ void global_avgpool_backward_kernel(int64_t items, int64_t hw, int64_t c, const bf16* dy, bf16* dx) {
  for (int64_t t = first_item(); t < items; t += item_stride()) {
    const int64_t i = t * V;
    float g[V];
    load_bf16<V>(dy + global_avgpool_dy_index(i, hw, c), g);
#pragma unroll
    for (int j = 0; j < V; ++j) g[j] /= float(hw);  // as the CPU: dy / hw
    store_bf16<V>(g, dx + i);
  }
}

// The 16-byte channel group when c allows it and every pointer is aligned for it.
bool use_groups(int64_t c, std::initializer_list<const void*> pointers) {
  if (c % kGroup != 0) return false;
  for (const void* p : pointers)
    if (p && !gpu::aligned_to(p, 16)) return false;
  return true;
}

}  // namespace

void maxpool_forward_cuda(const CudaHandles& h, const MaxPoolShape& s, const bf16* x, bf16* y, int32_t* argmax) {
  validate(s);
  const int64_t numel = s.y_numel();
  if (use_groups(s.c, {x, y, argmax})) {
    maxpool_forward_kernel<kGroup>
        <<<gpu::grid_for(h, numel / kGroup), gpu::kThreads, 0, h.stream>>>(s, numel / kGroup, x, y, argmax);
  } else {
    maxpool_forward_kernel<1><<<gpu::grid_for(h, numel), gpu::kThreads, 0, h.stream>>>(s, numel, x, y, argmax);
  }
  KD_CUDA_LAUNCH_CHECK("maxpool_forward_kernel");
}

void maxpool_backward_cuda(const CudaHandles& h, const MaxPoolShape& s, const int32_t* argmax, const bf16* dy,
                           bf16* dx) {
  validate(s);
  const int64_t numel = s.n * s.h * s.w * s.c;
  if (use_groups(s.c, {argmax, dy, dx})) {
    maxpool_backward_kernel<kGroup>
        <<<gpu::grid_for(h, numel / kGroup), gpu::kThreads, 0, h.stream>>>(s, numel / kGroup, argmax, dy, dx);
  } else {
    maxpool_backward_kernel<1><<<gpu::grid_for(h, numel), gpu::kThreads, 0, h.stream>>>(s, numel, argmax, dy, dx);
  }
  KD_CUDA_LAUNCH_CHECK("maxpool_backward_kernel");
}

void global_avgpool_forward_cuda(const CudaHandles& h, int64_t n, int64_t hw, int64_t c, const bf16* x, bf16* y) {
  KD_CHECK(n > 0 && hw > 0 && c > 0, "global_avgpool_forward_cuda: sizes must be positive, got [", n, ", ", hw,
           ", ", c, "]");
  if (use_groups(c, {x, y})) {
    const int64_t items = n * c / kGroup;
    global_avgpool_forward_kernel<kGroup>
        <<<gpu::grid_for(h, items), gpu::kThreads, 0, h.stream>>>(items, hw, c, x, y);
  } else {
    global_avgpool_forward_kernel<1><<<gpu::grid_for(h, n * c), gpu::kThreads, 0, h.stream>>>(n * c, hw, c, x, y);
  }
  KD_CUDA_LAUNCH_CHECK("global_avgpool_forward_kernel");
}

void global_avgpool_backward_cuda(const CudaHandles& h, int64_t n, int64_t hw, int64_t c, const bf16* dy,
                                  bf16* dx) {
  KD_CHECK(n > 0 && hw > 0 && c > 0, "global_avgpool_backward_cuda: sizes must be positive, got [", n, ", ", hw,
           ", ", c, "]");
  const int64_t numel = n * hw * c;
  if (use_groups(c, {dy, dx})) {
    global_avgpool_backward_kernel<kGroup>
        <<<gpu::grid_for(h, numel / kGroup), gpu::kThreads, 0, h.stream>>>(numel / kGroup, hw, c, dy, dx);
  } else {
    global_avgpool_backward_kernel<1><<<gpu::grid_for(h, numel), gpu::kThreads, 0, h.stream>>>(numel, hw, c, dy, dx);
  }
  KD_CUDA_LAUNCH_CHECK("global_avgpool_backward_kernel");
}

}  // namespace kd
