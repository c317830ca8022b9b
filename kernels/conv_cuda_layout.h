// How kd's convolution tensors look to cuDNN's graph API, as plain numbers. cuDNN always names
// the axes N,C,H,W (activations) and K,C,R,S (filters); the strides say where each axis lives in
// memory, which for kd is NHWC activations and OHWI (= KRSC) filters. Groups are implicit: cuDNN
// infers them from x's C over w's C. Kept free of CUDA headers so the CPU tests check the very
// numbers conv.cu hands to cuDNN.
#pragma once
#include <cstdint>
#include <string>

#include "kernels/conv.h"

namespace kd {

// dims and strides in cuDNN's axis order: [N, C, H, W] or [K, C, R, S].
struct CudnnTensorLayout {
  int64_t dims[4];
  int64_t strides[4];
  int64_t numel() const { return dims[0] * dims[1] * dims[2] * dims[3]; }
  // Element offset of index (i0, i1, i2, i3) given in cuDNN's axis order.
  int64_t offset(int64_t i0, int64_t i1, int64_t i2, int64_t i3) const {
    return i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * strides[3];
  }
};

// An NHWC tensor [n, h, w, c] described as N,C,H,W.
inline CudnnTensorLayout cudnn_nhwc_layout(int64_t n, int64_t c, int64_t h, int64_t w) {
  return {{n, c, h, w}, {h * w * c, 1, w * c, c}};
}

// x (or dx): [n, h, w, c_in]
inline CudnnTensorLayout conv_x_layout(const Conv2dShape& s) { return cudnn_nhwc_layout(s.n, s.c_in, s.h, s.w); }
// y (or dy): [n, out_h, out_w, c_out]
inline CudnnTensorLayout conv_y_layout(const Conv2dShape& s) {
  return cudnn_nhwc_layout(s.n, s.c_out, s.out_h(), s.out_w());
}
// w (or dw): OHWI [c_out, kh, kw, c_in / groups] described as K, C/groups, R, S.
inline CudnnTensorLayout conv_w_layout(const Conv2dShape& s) {
  return cudnn_nhwc_layout(s.c_out, s.c_in_per_group(), s.kh, s.kw);
}

// The convolution descriptor's per-axis numbers (H then W). kd pads symmetrically.
struct CudnnConvParams {
  int64_t pre_padding[2];
  int64_t post_padding[2];
  int64_t filter_strides[2];
  int64_t dilations[2];
};

inline CudnnConvParams conv_cudnn_params(const Conv2dShape& s) {
  return {{s.pad_h, s.pad_w}, {s.pad_h, s.pad_w}, {s.stride_h, s.stride_w}, {s.dilation_h, s.dilation_w}};
}

// The output extent cuDNN derives for one spatial axis from the descriptor's numbers.
inline int64_t cudnn_conv_out_dim(int64_t in, int64_t pre, int64_t post, int64_t stride, int64_t dilation,
                                  int64_t filter) {
  return (in + pre + post - dilation * (filter - 1) - 1) / stride + 1;
}

// The largest power of two (up to cap_bytes) that divides the address: what a tensor descriptor
// may promise as its byte alignment.
inline int64_t pointer_alignment_bytes(const void* p, int64_t cap_bytes) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (a == 0) return cap_bytes;
  int64_t align = 1;
  while (align < cap_bytes && (a & uintptr_t(align)) == 0) align *= 2;
  return align;
}

// The autotuning key of one convolution plan (kernels/cuda_handles.h TuningStore): everything the
// fastest engine depends on, one line without tabs, e.g.
//   "conv2d_forward_cuda | NVIDIA H100 80GB HBM3 sm_90 | cuDNN 9.19.0 | [128, 56, 56, 256] -> 64,
//    k 1x1, stride 1x1, pad 0x0, dilation 1x1, groups 1 | align 16 16 16 | path 0 | 8 candidates"
inline std::string conv_tuning_key(const std::string& device, const std::string& library, const std::string& op,
                                   const Conv2dShape& s, const int64_t align[3], int wgrad_path,
                                   int64_t candidates) {
  auto n = [](int64_t v) { return std::to_string(v); };
  std::string key = op + " | " + device + " | " + library + " | [" + n(s.n) + ", " + n(s.h) + ", " + n(s.w) + ", " +
                    n(s.c_in) + "] -> " + n(s.c_out) + ", k " + n(s.kh) + "x" + n(s.kw) + ", stride " +
                    n(s.stride_h) + "x" + n(s.stride_w) + ", pad " + n(s.pad_h) + "x" + n(s.pad_w) + ", dilation " +
                    n(s.dilation_h) + "x" + n(s.dilation_w) + ", groups " + n(s.groups) + " | align " + n(align[0]) +
                    " " + n(align[1]) + " " + n(align[2]) + " | path " + n(wgrad_path) + " | " + n(candidates) +
                    " candidates";
  for (char& c : key)
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  return key;
}

}  // namespace kd
