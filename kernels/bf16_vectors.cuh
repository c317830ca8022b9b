// Loads and stores of bf16 vectors for the normalisation kernels (norm_cuda.cu,
// groupnorm_one_pass.cu). Include only from .cu files.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/common.h"

namespace kd::gpu {

// ---- bf16 vectors --------------------------------------------------------------------------
// VEC consecutive bf16 values to float. bf16 -> float is exact (the top half of the float);
// float -> bf16 is the hardware's round-to-nearest-even, the rounding of common.h's
// float_to_bf16 (only a NaN's payload may differ).
template <int VEC, bool STREAMING>
__device__ __forceinline__ void load_bf16(const bf16* p, float (&v)[VEC]) {
  if constexpr (VEC == 8) {
    const uint4* q = reinterpret_cast<const uint4*>(p);
    uint4 u;
    if constexpr (STREAMING) u = __ldcs(q);  // last read of these bytes: evict first
    else u = *q;
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = __uint_as_float(w[i] << 16);
      v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  } else {
    static_assert(VEC == 1, "vectors of 8 or 1 bf16");
    v[0] = bf16_to_float(*p);
  }
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  // .x (lo) in the low 16 bits; through the 16-bit views, not a memcpy of the vector type (see
  // store_bf16).
  return uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
         (uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
}

template <int VEC>
__device__ __forceinline__ void store_bf16(bf16* p, const float (&v)[VEC]) {
  if constexpr (VEC == 8) {
    const uint4 u = make_uint4(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]), pack_bf16x2(v[4], v[5]),
                               pack_bf16x2(v[6], v[7]));
    __stcs(reinterpret_cast<uint4*>(p), u);  // written once, read by a later op: don't keep in L2
  } else {
    // One 16-bit store of the bits. A memcpy of the __nv_bfloat16 here compiled (CUDA 13.0, sm_90)
    // to two byte stores whose low byte came out 0x00/0x01: every scalar-path output was wrong
    // in its low 8 bits (found on the first H100 run by the channels_not_multiple_of_8 tests).
    p->bits = __bfloat16_as_ushort(__float2bfloat16_rn(v[0]));
  }
}

}  // namespace kd::gpu
