// 2-D convolution (cross-correlation, as PyTorch), NHWC activations, OHWI weights:
//   x  [n, h, w, c_in]            y [n, out_h, out_w, c_out]
//   w  [c_out, kh, kw, c_in / groups]   (PyTorch's OIHW with the channel axis moved last)
// Any kernel size, stride, zero padding, dilation and groups (depthwise: groups == c_in).
// Activation gradients are written (=), weight gradients accumulated (+=).
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

struct Conv2dShape {
  int64_t n = 1, h = 1, w = 1, c_in = 1;
  int64_t c_out = 1, kh = 1, kw = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;

  KD_HD int64_t out_h() const { return (h + 2 * pad_h - dilation_h * (kh - 1) - 1) / stride_h + 1; }
  KD_HD int64_t out_w() const { return (w + 2 * pad_w - dilation_w * (kw - 1) - 1) / stride_w + 1; }
  KD_HD int64_t c_in_per_group() const { return c_in / groups; }
  KD_HD int64_t c_out_per_group() const { return c_out / groups; }
  KD_HD int64_t x_numel() const { return n * h * w * c_in; }
  KD_HD int64_t y_numel() const { return n * out_h() * out_w() * c_out; }
  KD_HD int64_t w_numel() const { return c_out * kh * kw * c_in_per_group(); }
  // multiply-adds of the forward pass
  int64_t macs() const { return y_numel() * kh * kw * c_in_per_group(); }
  std::string describe() const;  // "conv 3x3/2 pad 1 g1 [8,32,32,64]->[8,16,16,128]"
  // Every number that defines the convolution: the plan caches' key (CUDA and oneDNN).
  std::array<int64_t, 14> key() const {
    return {n, h, w, c_in, c_out, kh, kw, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups};
  }
};

// Throws kd::Error naming the problem (non-divisible groups, empty output, ...).
void validate(const Conv2dShape& s);
// A 1x1, stride-1, unpadded convolution of one group: x is its own column matrix (a plain GEMM).
bool conv_is_pointwise(const Conv2dShape& s);
// Images per chunk of an im2col pass so that the column matrix holds at most max_elements (at
// least one image).
int64_t conv_images_per_chunk(const Conv2dShape& s, int64_t max_elements);

// Source pixel of output pixel (oy, ox) under kernel tap (ky, kx); may fall outside the image
// (then it reads zero). Shared by im2col and the CUDA kernels' index math.
KD_HD int64_t conv_src_y(const Conv2dShape& s, int64_t oy, int64_t ky) { return oy * s.stride_h - s.pad_h + ky * s.dilation_h; }
KD_HD int64_t conv_src_x(const Conv2dShape& s, int64_t ox, int64_t kx) { return ox * s.stride_w - s.pad_w + kx * s.dilation_w; }

template <typename T>
void conv2d_forward_cpu(const Conv2dShape& s, const T* x, const T* w, T* y);
template <typename T>
void conv2d_backward_data_cpu(const Conv2dShape& s, const T* dy, const T* w, T* dx);
template <typename T>
void conv2d_backward_filter_cpu(const Conv2dShape& s, const T* x, const T* dy, T* dw);

// cuDNN (graph API): bf16 tensors, fp32 accumulation. Plans are built once per shape and cached.
// The weight gradient is accumulated in fp32: dw += conv_wgrad(x, dy).
void conv2d_forward_cuda(const CudaHandles& h, const Conv2dShape& s, const bf16* x, const bf16* w, bf16* y);
void conv2d_backward_data_cuda(const CudaHandles& h, const Conv2dShape& s, const bf16* dy, const bf16* w, bf16* dx);
void conv2d_backward_filter_cuda(const CudaHandles& h, const Conv2dShape& s, const bf16* x, const bf16* dy, float* dw);

// How the weight gradient reaches fp32 dw. The first path cuDNN has an engine for is used:
// fp32 result accumulated by cuDNN (beta = 1), else an fp32 or bf16 result in the workspace that
// a small kernel adds into dw.
enum class ConvWgradPath { fp32_accumulate = 0, fp32_scratch_add = 1, bf16_scratch_add = 2 };
const char* conv_wgrad_path_name(ConvWgradPath p);
// Tests: restrict weight gradients to one path (plans are cached per choice); -1 restores the
// automatic choice.
void conv2d_cuda_force_wgrad_path(int path);
// One line per cached cuDNN plan: op, shape, engine, workspace (and the weight-gradient path).
std::string conv2d_cuda_plan_report();

}  // namespace kd
