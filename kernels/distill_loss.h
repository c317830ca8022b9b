// The distillation loss in one pass over the logits, and the agreement statistics.
//
//   teacher logits t [teachers, rows, classes], student logits s [rows, classes]
//   kl (default):  loss_r = T^2 * KL(p_t || p_s),  p_t = mean_k softmax(t_k / T),  p_s = softmax(s / T)
//                  d loss_r / d s = T * (p_s - p_t)
//   hard:          cross-entropy of s against the one-hot argmax of mean_k softmax(t_k)
//                  (optionally label-smoothed: 1 - ls on it, ls / (classes - 1) elsewhere)
//   l2:            mean_k sum_c (s - t_k)^2
//   euclidean:     mean_k sqrt(sum_c (s - t_k)^2 + eps)
//   logsoftmax_euclidean: mean_k sqrt(sum_c (log_softmax(s) - log_softmax(t_k))^2 + eps)
// These are big_vision's distances (evaluators/proj/distill/distance.py). With several teachers
// the official code sums per-teacher KLs, whose student gradient is n times the gradient of the
// KL to the mean distribution used here.
//
// dstudent = grad_scale * d loss_r / d s (grad_scale = 1 / global batch gives the mean's
// gradient), written (=), or skipped when null. Per row, also:
//   teacher_top1[r]  = argmax of mean_k softmax(t_k) (temperature 1; lowest index on ties)
//   student_rank[r]  = number of classes the student ranks above teacher_top1[r]
//                      (strictly larger logit, or equal logit at a lower index), so top-1
//                      agreement is rank == 0 and top-5 agreement is rank < 5.
#pragma once
#include <cstdint>
#include <string>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

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

template <typename T>
void distill_loss_cpu(const DistillLossShape& s, const DistillLossOptions& o, const T* teacher_logits,
                      const T* student_logits, T* loss_rows, T* dstudent, int32_t* teacher_top1,
                      int32_t* student_rank);

}  // namespace kd
