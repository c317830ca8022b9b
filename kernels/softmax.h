// Row-wise softmax family over logits [rows, classes], numerically stable (max subtracted),
// accumulation in the wider of T and float. And cross-entropy with integer labels.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

// ---- per-element rules shared with the CUDA kernels ----

// The one ranking rule of kd: class j is ranked above class `ref` when its logit is strictly
// larger, or equal at a lower index. Top-k correctness and the distillation agreement
// statistics both count the classes ranked above a reference class.
template <typename T>
KD_HD bool ranks_above(T x_j, int64_t j, T x_ref, int64_t ref) {
  return x_j > x_ref || (x_j == x_ref && j < ref);
}

// Label-smoothed cross-entropy target (PyTorch's label_smoothing): eps spread evenly over all
// classes, the rest on the label. eps = 0 gives the one-hot target.
template <typename A>
KD_HD A smoothed_target(bool is_label, int64_t classes, A eps) {
  return (is_label ? A(1) - eps : A(0)) + eps / A(classes);
}

template <typename T>
void softmax_cpu(int64_t rows, int64_t classes, const T* x, T* y);
template <typename T>
void log_softmax_cpu(int64_t rows, int64_t classes, const T* x, T* y);

// loss_rows[r] = -log softmax(logits[r])[labels[r]] (optionally with label smoothing eps:
// target (1 - eps) on the label, eps/classes everywhere). dlogits (may be null) =
// grad_scale * (softmax - target): with grad_scale = 1/rows it is the gradient of the mean.
// loss_rows may be null too (gradient only).
// Labels outside [0, classes) throw kd::Error naming the row and the label.
template <typename T>
void cross_entropy_cpu(int64_t rows, int64_t classes, const T* logits, const int32_t* labels, T label_smoothing,
                       T grad_scale, T* loss_rows, T* dlogits);

// top-k correctness per row: correct[r] = 1 when labels[r] is among the k largest logits
// (ties broken toward the lower class index).
template <typename T>
void topk_correct_cpu(int64_t rows, int64_t classes, const T* logits, const int32_t* labels, int k, int32_t* correct);

// argmax per row, lowest index among ties
template <typename T>
void argmax_rows_cpu(int64_t rows, int64_t classes, const T* x, int32_t* out);

// CUDA: fp32 logits; as cross_entropy_cpu (labels are checked on the host by the caller).
void cross_entropy_cuda(const CudaHandles& h, int64_t rows, int64_t classes, const float* logits,
                        const int32_t* labels, float label_smoothing, float grad_scale, float* loss_rows,
                        float* dlogits);

}  // namespace kd
