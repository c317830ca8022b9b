// Forward convolution in FP8 for an FP8 teacher (engine/fp8_teacher.h): input and weights as
// E4M3 codes (kernels/fp8.h) of x * x_scale and w[o] * w_scale[o], products summed in fp32, the
// sum of output channel o times descale[o] = 1 / (x_scale * w_scale[o]), written as bf16:
//   y[n, p, q, o] = descale[o] * sum_{ky, kx, c} e4m3(qx[n, src(p, ky), src(q, kx), c]) * e4m3(qw[o, ky, kx, c])
// Layouts as kernels/conv.h (NHWC, OHWI); one group. The CPU reference decodes the codes and runs
// conv2d_forward_cpu<float>; every FP8 product is exact in fp32, so the two differ by the
// summation order and the bf16 store only.
#pragma once
#include <cstdint>

#include "kernels/conv.h"

namespace kd {

void conv2d_fp8_forward_cpu(const Conv2dShape& s, const uint8_t* x, const uint8_t* w, const float* descale, float* y);

// cuDNN graph: convolution of FP8_E4M3 x and w (fp32 compute) into a virtual fp32 tensor, a
// pointwise multiply by descale [1, c_out, 1, 1], bf16 y. Hopper (sm_90) or newer; cached plans as
// conv2d_forward_cuda. Throws naming the shape and cuDNN's reason when no engine takes it
// (callers fall back to the bf16 path).
void conv2d_fp8_forward_cuda(const CudaHandles& h, const Conv2dShape& s, const uint8_t* x, const uint8_t* w,
                             const float* descale, bf16* y);
// Whether the device has FP8 tensor cores (compute capability 8.9 or newer).
bool cuda_device_has_fp8(int device);

}  // namespace kd
