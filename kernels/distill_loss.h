// The distillation loss in one pass over the logits, and the agreement statistics.
//
//   teacher logits t [teachers, rows, classes], student logits s [rows, classes]
//   kl (default):  loss_r = T^2 * KL(p_t || p_s),  p_t = mean_k softmax(t_k / T),  p_s = softmax(s / T)
//                  d loss_r / d s = T * (p_s - p_t)
//   hard:          KL of softmax(s) from the one-hot argmax of mean_k softmax(t_k) (= teacher_top1),
//                  optionally label-smoothed: 1 - ls on it, ls / (classes - 1) elsewhere. Without
//                  smoothing this is the cross-entropy; with it, the cross-entropy minus the
//                  (constant) entropy of the target, as big_vision's softmax_xent(kl=True).
//                  d loss_r / d s = softmax(s) - target
//   l2:            mean_k sum_c (s - t_k)^2
//   euclidean:     mean_k sqrt(sum_c (s - t_k)^2 + eps)
//   logsoftmax_euclidean: mean_k sqrt(sum_c (log_softmax(s) - log_softmax(t_k))^2 + eps)
// These are big_vision's distances (evaluators/proj/distill/distance.py); as there, the
// temperature enters kl only, label smoothing hard only, eps the two euclidean ones. With several
// teachers the official code sums per-teacher KLs, whose student gradient is n times the gradient
// of the KL to the mean distribution used here. KL uses 0 log 0 = 0 (as PyTorch's kl_div);
// big_vision's log(max(p, 1e-8)) differs by at most 4e-9 per class with p < 1e-8, and not at all
// in the gradient.
//
// dstudent = grad_scale * d loss_r / d s (grad_scale = 1 / global batch gives the mean's
// gradient), written (=). Per row, also:
//   teacher_top1[r]  = argmax of mean_k softmax(t_k) (temperature 1; lowest index on ties)
//   student_rank[r]  = number of classes the student ranks above teacher_top1[r]
//                      (strictly larger logit, or equal logit at a lower index), so top-1
//                      agreement is rank == 0 and top-5 agreement is rank < 5.
// Every output pointer may be null: that output is skipped.
#pragma once
#include <cstdint>
#include <string>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"
#include "kernels/logit_rows.h"
#include "kernels/softmax.h"  // ranks_above

namespace kd {

enum class DistillDistance : uint8_t { kl, hard, l2, euclidean, logsoftmax_euclidean };
DistillDistance parse_distill_distance(const std::string& name);  // throws naming the valid ones
const char* distill_distance_name(DistillDistance d);

struct DistillLossShape {
  int64_t rows = 1, classes = 1, teachers = 1;
};

struct DistillLossOptions {
  DistillDistance distance = DistillDistance::kl;
  float temperature = 1.0f;
  float grad_scale = 1.0f;
  float label_smoothing = 0.0f;  // hard only
  float epsilon = 1e-12f;        // euclidean distances only
};

// ---- per-row math shared with the CUDA kernel (A: the accumulation type) ----

// p log(p / q) from log p and log q; 0 when p == 0, the limit of p log p (a teacher probability
// that underflowed, or a zero label-smoothing target, contributes nothing and never NaN).
template <typename A>
KD_HD A kl_element(A p, A log_p, A log_q) {
  return p > A(0) ? p * (log_p - log_q) : A(0);
}

// hard: the target of class c, given whether c is the teacher's top-1 (a single class is 1).
template <typename A>
KD_HD A hard_target(bool is_teacher_top1, int64_t classes, A label_smoothing) {
  if (classes == 1) return A(1);
  return is_teacher_top1 ? A(1) - label_smoothing : label_smoothing / A(classes - 1);
}

// kl: d (T^2 KL(p_t || softmax(s / T))) / d s_c = T (p_s,c - p_t,c)
template <typename A>
KD_HD A kl_grad_element(A temperature, A p_s, A p_t) {
  return temperature * (p_s - p_t);
}

// euclidean, per teacher: d sqrt(sum diff^2 + eps) / d s_c = diff_c / dist, taken as 0 where
// dist == 0 (eps = 0 and s == t, where the norm has no gradient).
template <typename A>
KD_HD A euclidean_grad_element(A diff, A dist) {
  return dist > A(0) ? diff / dist : A(0);
}

// logsoftmax_euclidean, per teacher: with u = (log p_s - log p_t) / dist and
// d log p_s,j / d s_c = [j == c] - p_s,c, the gradient is u_c - p_s,c * sum_j u_j.
template <typename A>
KD_HD A logsoftmax_euclidean_grad_element(A u_c, A p_s, A sum_u) {
  return u_c - p_s * sum_u;
}

// Throws kd::Error on a bad shape or option (both distill_loss_cpu and distill_loss_cuda call it).
void check_distill_loss_args(const DistillLossShape& s, const DistillLossOptions& o);

template <typename T>
void distill_loss_cpu(const DistillLossShape& s, const DistillLossOptions& o, const T* teacher_logits,
                      const T* student_logits, T* loss_rows, T* dstudent, int32_t* teacher_top1,
                      int32_t* student_rank);

// How distill_loss_cuda runs a shape: one block per row (kernels/logit_rows.h), the row's student
// and teacher logits staged in shared memory behind kDistillTeacherStatBytes of statistics per
// teacher when they fit `max_shared_bytes` (the device's opt-in limit on the GPU: one teacher at
// 21,843 classes fits Hopper's ~227 KiB), else re-read from L2 by the passes after the first.
constexpr int64_t kDistillTeacherStatBytes = 32;
LogitRowsPlan distill_loss_cuda_plan(const DistillLossShape& s,
                                     int64_t max_shared_bytes = LogitRowsPlan::kDefaultSharedBytes);

// CUDA: one block per row, 16-byte loads and stores, one pass over the classes per statistic,
// fp32 throughout; outputs as distill_loss_cpu (each may be null). Deterministic: the same inputs give the same bits.
// Bytes that must move: 4 * rows * classes * (teachers + 1) read, 4 * rows * classes written
// (dstudent), 12 * rows (the per-row outputs). An ensemble's top-1 is an argmax of fp32 sums of
// probabilities: it can differ from the CPU's double only where two classes tie to ~1e-6.
void distill_loss_cuda(const CudaHandles& h, const DistillLossShape& s, const DistillLossOptions& o,
                       const float* teacher_logits, const float* student_logits, float* loss_rows, float* dstudent,
                       int32_t* teacher_top1, int32_t* student_rank);

}  // namespace kd
