// Row-wise softmax family over logits [rows, classes], numerically stable (max subtracted),
// accumulation in the wider of T and float. And cross-entropy with integer labels.
#pragma once
#include <math.h>

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

// ---- running softmax statistics (online softmax), gathered by the CUDA row kernels ----
//
// Statistics of a set of logits that grow one logit at a time and merge in any order
// (Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"): the largest logit
// with its index (the lowest among ties, ranks_above's rule), the sums of exp((x - max) / T) and
// of exp(x - max) (each only when its spec asks for it: one exp per logit per sum), and `aux`, a
// plain sum carried along in the same reduction. Then log softmax(x / T)_c =
// (x_c - max) / T - log(sum_t). A NaN logit makes the sums NaN; it never becomes the max. A -inf
// logit (a masked class) adds nothing, in whatever order it comes.
struct SoftmaxStats {
  float max;
  int32_t argmax;  // INT32_MAX while empty, so that an empty set loses every tie
  float sum_t, sum_1, aux;
};

struct SoftmaxStatsSpec {
  float inv_temperature = 1.0f;
  bool sum_t = false, sum_1 = false;  // which sums to keep (sum_t at the temperature, sum_1 at 1)
};

KD_HD SoftmaxStats softmax_stats_empty() { return SoftmaxStats{-INFINITY, INT32_MAX, 0.0f, 0.0f, 0.0f}; }

// sum_c exp((x_c - from) * k) re-expressed relative to the larger max `to`; an empty sum stays 0
// (and no exp of -inf - -inf when both maxima are still -inf).
KD_HD float softmax_rescale(float sum, float from_max, float to_max, float k) {
  return sum == 0.0f ? 0.0f : sum * expf((from_max - to_max) * k);
}

KD_HD void softmax_stats_push(SoftmaxStats& s, const SoftmaxStatsSpec& spec, float x, int32_t index) {
  if (x > s.max) {
    if (spec.sum_t) s.sum_t = softmax_rescale(s.sum_t, s.max, x, spec.inv_temperature) + 1.0f;
    if (spec.sum_1) s.sum_1 = softmax_rescale(s.sum_1, s.max, x, 1.0f) + 1.0f;
    s.max = x;
    s.argmax = index;
  } else {
    // A -inf logit (a masked class) adds exp(-inf) = 0; skipping it also avoids exp(-inf - -inf)
    // = NaN while the max is still -inf. NaN is not -inf: it still reaches the sums.
    if (x != -INFINITY) {
      if (spec.sum_t) s.sum_t += expf((x - s.max) * spec.inv_temperature);
      if (spec.sum_1) s.sum_1 += expf(x - s.max);
    }
    if (x == s.max && index < s.argmax) s.argmax = index;
  }
}

KD_HD SoftmaxStats softmax_stats_merge(const SoftmaxStats& a, const SoftmaxStats& b, const SoftmaxStatsSpec& spec) {
  const SoftmaxStats& top = ranks_above(b.max, b.argmax, a.max, a.argmax) ? b : a;
  SoftmaxStats m = softmax_stats_empty();
  m.max = top.max;
  m.argmax = top.argmax;
  if (spec.sum_t)
    m.sum_t = softmax_rescale(a.sum_t, a.max, m.max, spec.inv_temperature) +
              softmax_rescale(b.sum_t, b.max, m.max, spec.inv_temperature);
  if (spec.sum_1) m.sum_1 = softmax_rescale(a.sum_1, a.max, m.max, 1.0f) + softmax_rescale(b.sum_1, b.max, m.max, 1.0f);
  m.aux = a.aux + b.aux;
  return m;
}

// log softmax(x / T) of one logit from its row's max and log of the matching sum.
KD_HD float log_softmax_from_stats(float x, float max, float inv_temperature, float log_sum) {
  return (x - max) * inv_temperature - log_sum;
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

// CUDA: fp32 logits; as cross_entropy_cpu (labels are checked on the host by the caller; a label
// out of range gives NaN loss and gradient in its row). One block per row. Bytes that must move:
// 4 * rows * classes read + 4 * rows read (labels), 4 * rows * classes (dlogits) + 4 * rows written.
void cross_entropy_cuda(const CudaHandles& h, int64_t rows, int64_t classes, const float* logits,
                        const int32_t* labels, float label_smoothing, float grad_scale, float* loss_rows,
                        float* dlogits);

}  // namespace kd
