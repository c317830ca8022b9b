// augment_cuda: the whole batch, both views, in one launch.
//
// A block renders one tile (augment.h's AugmentPartition: kTilePx consecutive output pixels of
// one view of one image) with augment.h's render_resolved_pixel, the CPU reference's arithmetic:
// a thread per pixel, kPixelsPerThread pixels each, 3 channels rounded to bf16 into a shared
// memory copy of the tile. The tile is a contiguous run of bf16 in the NHWC output, so the block
// then writes it with 16-byte stores (a few 2-byte stores at either end when the run does not
// start or end on a 16-byte boundary). Source pixels are read with byte loads through L1: the
// bilinear taps of neighbouring output pixels overlap, so most of them hit in L1, and a source
// region is fetched from DRAM about once per view (both views of an image run back to back, so
// the second one finds it in L2).
#include <cstdint>

#include "kernels/augment.h"
#include "kernels/cuda_check.h"

namespace kd {
namespace {

constexpr int kThreads = 256;
constexpr int kPixelsPerThread = 4;
constexpr int kTilePx = kThreads * kPixelsPerThread;
constexpr int kVectorElems = 8;  // bf16 per 16-byte store

struct AugmentOutputs {
  bf16* out[2];
  int32_t h[2], w[2];
};

// Copies n bf16 from the staged tile (starting `lead` elements in, where lead = (dst % 16) / 2,
// so that both sides of every 16-byte chunk are aligned) to dst.
__device__ __forceinline__ void store_tile(const uint16_t* tile, int lead, int n, bf16* dst) {
  uint16_t* out = reinterpret_cast<uint16_t*>(dst);
  const int head = min((kVectorElems - lead) % kVectorElems, n);
  const int vectors = (n - head) / kVectorElems;
  for (int i = int(threadIdx.x); i < head; i += kThreads) out[i] = tile[lead + i];
  const uint4* src4 = reinterpret_cast<const uint4*>(tile + lead + head);
  uint4* dst4 = reinterpret_cast<uint4*>(out + head);
  for (int i = int(threadIdx.x); i < vectors; i += kThreads) dst4[i] = src4[i];
  for (int i = head + vectors * kVectorElems + int(threadIdx.x); i < n; i += kThreads) out[i] = tile[lead + i];
}

__global__ void __launch_bounds__(kThreads)
    augment_kernel(const uint8_t* __restrict__ pixels, const SourceImage* __restrict__ sources,
                   const ViewRecipe* __restrict__ recipes, Normalization norm, AugmentPartition part,
                   AugmentOutputs outs) {
  __shared__ __align__(16) uint16_t tile[kTilePx * 3 + kVectorElems];

  const AugmentTile t = augment_tile(part, blockIdx.x);
  const bool second = t.view == 1;  // selects rather than indexes: no copy of the arguments to local memory
  const int32_t h = second ? outs.h[1] : outs.h[0], w = second ? outs.w[1] : outs.w[0];
  const ViewRecipe r = recipes[t.image];
  const SourceView a = resolve_source(pixels, sources[r.a.image]);
  const SourceView b = r.lambda < 1.0f ? resolve_source(pixels, sources[r.b.image]) : a;
  bf16* dst = (second ? outs.out[1] : outs.out[0]) + (t.image * (second ? part.pixels[1] : part.pixels[0]) + t.begin) * 3;
  const int lead = int((reinterpret_cast<uintptr_t>(dst) % 16) / 2);
  const int count = int(t.end - t.begin);

  // This thread's pixels: tile pixels p, p + kThreads, ...; (oy, ox) advanced without dividing.
  int p = int(threadIdx.x);
  const int32_t first = int32_t(t.begin) + p;
  int32_t oy = first / w, ox = first - oy * w;
  const int32_t step_y = kThreads / w, step_x = kThreads - step_y * w;
#pragma unroll
  for (int i = 0; i < kPixelsPerThread; ++i, p += kThreads) {
    if (p < count) {
      float v[3];
      render_resolved_pixel(a, b, r, norm, h, w, oy, ox, v);
      uint16_t* o = tile + lead + p * 3;
      o[0] = float_to_bf16(v[0]).bits;
      o[1] = float_to_bf16(v[1]).bits;
      o[2] = float_to_bf16(v[2]).bits;
    }
    ox += step_x;
    oy += step_y;
    if (ox >= w) ox -= w, ++oy;
  }
  __syncthreads();
  store_tile(tile, lead, count * 3, dst);
}

}  // namespace

void augment_cuda(const CudaHandles& h, const uint8_t* pixels, const SourceImage* sources, const ViewRecipe* recipes,
                  int64_t n, const Normalization& norm, int64_t h1, int64_t w1, bf16* first, int64_t h2, int64_t w2,
                  bf16* second) {
  const int64_t limit = int64_t(1) << 31;
  KD_CHECK(n >= 0, "augment_cuda: negative batch ", n);
  KD_CHECK(h1 > 0 && w1 > 0 && h1 * w1 < limit, "augment_cuda: bad first view size ", h1, "x", w1);
  KD_CHECK(!second || (h2 > 0 && w2 > 0 && h2 * w2 < limit), "augment_cuda: bad second view size ", h2, "x", w2);
  if (n == 0) return;
  KD_CHECK(first && reinterpret_cast<uintptr_t>(first) % 2 == 0 &&
               (!second || reinterpret_cast<uintptr_t>(second) % 2 == 0),
           "augment_cuda: outputs must be non-null bf16 pointers");
  const AugmentPartition part = augment_partition(n, h1, w1, second ? h2 : 0, second ? w2 : 0, kTilePx);
  const int64_t blocks = augment_blocks(part);
  KD_CHECK(blocks < limit, "augment_cuda: ", blocks, " blocks exceed the grid limit");
  AugmentOutputs outs;
  outs.out[0] = first;
  outs.out[1] = second;
  outs.h[0] = int32_t(h1), outs.w[0] = int32_t(w1);
  outs.h[1] = second ? int32_t(h2) : 1, outs.w[1] = second ? int32_t(w2) : 1;
  augment_kernel<<<unsigned(blocks), kThreads, 0, h.stream>>>(pixels, sources, recipes, norm, part, outs);
  KD_CUDA_LAUNCH_CHECK("augment_kernel");
}

}  // namespace kd
