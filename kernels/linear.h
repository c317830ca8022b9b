// Fully connected layer: y[rows, out] = x[rows, in] * W^T + b, W [out, in] (PyTorch's layout;
// timm's 1x1-conv classifier head [out, in, 1, 1] is the same memory).
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

struct LinearShape {
  int64_t rows = 1, in = 1, out = 1;
};

// bias may be null
template <typename T>
void linear_forward_cpu(const LinearShape& s, const T* x, const T* w, const T* bias, T* y);
// dx = dy * W (dx may be null: not needed); dw += dy^T x; dbias += sum_rows dy (may be null)
template <typename T>
void linear_backward_cpu(const LinearShape& s, const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias);

// dbias on the GPU is a segmented sum over a column-major walk of dy [rows, cols]: step j visits
// dy[j % rows][j / rows], so segment c, steps [c * rows, (c + 1) * rows), is column c.
KD_HD int64_t column_walk_index(int64_t j, int64_t rows, int64_t cols) { return j % rows * cols + j / rows; }

// CUDA (cuBLASLt): bf16 features and weights, fp32 logits, bias and gradients. dx (bf16) and
// dbias may be null. Backward: dy is rounded to bf16 (in the workspace) for the two products;
// dbias sums the fp32 dy.
void linear_forward_cuda(const CudaHandles& h, const LinearShape& s, const bf16* x, const bf16* w, const float* bias,
                         float* y);
void linear_backward_cuda(const CudaHandles& h, const LinearShape& s, const bf16* x, const bf16* w, const float* dy,
                          bf16* dx, float* dw, float* dbias);

}  // namespace kd
