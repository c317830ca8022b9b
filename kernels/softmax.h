// Row-wise softmax family over logits [rows, classes], numerically stable (max subtracted),
// accumulation in the wider of T and float. And cross-entropy with integer labels.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

template <typename T>
void softmax_cpu(int64_t rows, int64_t classes, const T* x, T* y);
template <typename T>
void log_softmax_cpu(int64_t rows, int64_t classes, const T* x, T* y);

// loss_rows[r] = -log softmax(logits[r])[labels[r]] (optionally with label smoothing eps:
// target (1 - eps) on the label, eps/classes everywhere). dlogits (may be null) =
// grad_scale * (softmax - target): with grad_scale = 1/rows it is the gradient of the mean.
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

}  // namespace kd
