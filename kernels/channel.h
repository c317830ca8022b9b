// Per-channel ops on NHWC activations: squeeze-excite's channel scale and a convolution's bias.
//
// Channel scale (timm's SqueezeExcite: x * gate): x [n, hw, c] times a gate s [n, c],
//   y[n, p, c] = x[n, p, c] * s[n, c];   dx = dy * s;   ds[n, c] = sum over p of dy * x.
// The gate is an activation (the output of the hard-sigmoid that precedes it), so it lives in the
// activation dtype: bf16 on a GPU, which rounds it to 8 significant bits (relative 2^-9, the
// rounding every activation already gets); products and sums are fp32 there, fp64 sums on the CPU,
// and each output is rounded once.
//
// Bias: y[r, c] += b[c] over the rows r of an activation [rows, c] (rows = n*h*w), and
// db[c] += sum over rows of dy[r, c]. The CPU reference is elementwise.h's bias_add_cpu /
// bias_backward_cpu (shared with Linear, whose activations are the param dtype); the CUDA
// versions here take bf16 activations and an fp32 bias.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

struct ChannelScaleShape {
  int64_t n = 1, hw = 1, c = 1;  // images, pixels per image, channels
  KD_HD int64_t numel() const { return n * hw * c; }
};

// Throws kd::Error naming the op when a size is not positive.
void validate(const ChannelScaleShape& s, const char* op);

// The gate element that scales element i of x [n, hw, c]: s[image, channel].
KD_HD int64_t channel_scale_index(int64_t i, int64_t hw, int64_t c) { return i / (hw * c) * c + i % c; }
// The channel of element i of an activation [rows, c] (which bias element it gets).
KD_HD int64_t channel_of(int64_t i, int64_t c) { return i % c; }

// y = x * s (y may alias x)
template <typename T>
void channel_scale_forward_cpu(const ChannelScaleShape& s, const T* x, const T* scale, T* y);
// dx = dy * s (=); dscale[n, c] = sum over hw of dy * x (=, summed in double)
template <typename T>
void channel_scale_backward_cpu(const ChannelScaleShape& s, const T* x, const T* scale, const T* dy, T* dx, T* dscale);

// CUDA: every tensor bf16. The sums of dscale run in a fixed order (no atomics): deterministic.
void channel_scale_forward_cuda(const CudaHandles& h, const ChannelScaleShape& s, const bf16* x, const bf16* scale,
                                bf16* y);
void channel_scale_backward_cuda(const CudaHandles& h, const ChannelScaleShape& s, const bf16* x, const bf16* scale,
                                 const bf16* dy, bf16* dx, bf16* dscale);

// CUDA bias of bf16 activations [rows, c] with an fp32 bias: y += bias in place (fp32 add, rounded
// once); dbias += column sums of dy (fp32 partial sums added in double, in a fixed order).
void bias_add_cuda(const CudaHandles& h, int64_t rows, int64_t c, const float* bias, bf16* y);
void bias_backward_cuda(const CudaHandles& h, int64_t rows, int64_t c, const bf16* dy, float* dbias);

}  // namespace kd
