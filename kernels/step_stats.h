// A training step's statistics as they are kept on the device, so the step never waits for the
// host (issue 16): each step owns kStatWidth doubles,
//   [kStatLossSum]    sum of the per-row losses (this rank's, then summed over ranks)
//   [kStatAgree]      rows whose student top-1 is the teacher's (distillation)
//   [kStatGradSumSq]  sum of squares of the summed gradients (the global norm squared)
//   [kStatGradScale]  what the update multiplies the gradients by (clipping), and
//   [kStatApplied]    1 when the update was applied, 0 when the step was skipped because the
//                     loss or the gradient norm was not finite
//   [kStatTeacherNonfinite], [kStatStudentNonfinite]  1 when this rank's teacher (student)
//                     logits held a NaN or an infinity: the phase a non-finite step is named by.
//   [kStatLr], [kStatBias1], [kStatBias2], [kStatStep]  what the update needs of the schedule,
//                     written by the host before the step (Optimizer::begin_deferred): the
//                     learning rate and Adam's bias corrections (each an fp32 value, held
//                     exactly), and the 1-based step. The update kernels read them here, so a
//                     step's kernels take the same arguments every step (a CUDA graph replays
//                     them).
// The loss kernels' rows are added with add_loss_rows_*, the gradients' square sum is written by
// sum_squares_*, and step_gate_* decides scale and applied; the update kernels read both from
// there (kernels/optim.h). The host reads the block back every run.log_every steps.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

enum StepStat : int {
  kStatLossSum,
  kStatAgree,
  kStatGradSumSq,
  kStatGradScale,
  kStatApplied,
  kStatTeacherNonfinite,
  kStatStudentNonfinite,
  kStatLr,
  kStatBias1,
  kStatBias2,
  kStatStep,
  kStatWidth = 12  // (16-byte rows)
};

// Not NaN and not infinite, from the bits (the same on both devices, whatever the math flags).
KD_HD bool finite_f64(double x) {
  uint64_t u;
  memcpy(&u, &x, sizeof u);
  return ((u >> 52) & 0x7ff) != 0x7ff;
}

// The clipping and skipping decision of one step, the same arithmetic on both devices: the norm
// is sqrt(sum of squares); an update is applied only when it and the loss are finite; it uses the
// gradients times clip_norm / norm when the norm exceeds clip_norm > 0, else as they are.
KD_HD void step_gate(double clip_norm, double* stats) {
  const double norm = sqrt(stats[kStatGradSumSq]);
  const bool finite = finite_f64(norm) && finite_f64(stats[kStatLossSum]);
  stats[kStatApplied] = finite ? 1.0 : 0.0;
  stats[kStatGradScale] = finite && clip_norm > 0 && norm > clip_norm ? clip_norm / norm : 1.0;
}

// stats[kStatLossSum] += the rows' losses (each rounded to fp32, then added in fp64: on the CPU
// one by one in row order, on a GPU as a block sum); stats[kStatAgree] += rows whose rank is 0
// (rank may be null).
template <typename T>
void add_loss_rows_cpu(int64_t rows, const T* loss, const int32_t* rank, double* stats);
void add_loss_rows_cuda(const CudaHandles& h, int64_t rows, const float* loss, const int32_t* rank, double* stats);

// *flag = 1 when any of x's n values is NaN or infinite (else *flag stays as it was).
template <typename T>
void flag_nonfinite_cpu(int64_t n, const T* x, double* flag);
void flag_nonfinite_cuda(const CudaHandles& h, int64_t n, const float* x, double* flag);

void step_gate_cpu(double clip_norm, double* stats);
void step_gate_cuda(const CudaHandles& h, double clip_norm, double* stats);

}  // namespace kd
