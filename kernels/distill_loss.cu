// distill_loss_cuda: one block per row, fp32, a few passes over the row's classes.
//
//   pass 1  student, then each teacher: running softmax statistics (max + argmax, sums of exp at
//           T and/or at 1, softmax.h's SoftmaxStats) in one read of each row; euclidean also sums
//           (s - t_k)^2 here. One CUB reduction per row read.
//   pass 2  (top-1 of an ensemble) argmax over c of sum_k softmax(t_k)_c, lowest index on ties;
//           a single teacher's top-1 is the argmax of its logits, already known from pass 1.
//   pass 3  (logsoftmax_euclidean) per teacher, sum of diff^2 and of diff.
//   pass 4  per class: loss term, gradient (written), and the student rank of the top-1 class.
// Rows are read from global memory once, with 16-byte loads (kernels/logit_rows.h): pass 1
// copies them into shared memory when the student row and all teacher rows fit (the plan, with
// the device's opt-in limit), and the later passes read that copy. Otherwise the later passes
// re-read global memory, where the rows just read are still in L2 (explicit fallback, same code:
// only the row pointers differ). The gradient is written with 16-byte stores.
#include <algorithm>

#include "kernels/block_reduce.cuh"
#include "kernels/cuda_check.h"
#include "kernels/distill_loss.h"
#include "kernels/logit_rows.cuh"

namespace kd {
namespace {

struct DistillArgs {
  const float* teacher;
  const float* student;
  float* loss_rows;
  float* dstudent;
  int32_t* teacher_top1;
  int32_t* student_rank;
  int64_t rows;
  int32_t classes, teachers;
  DistillDistance distance;
  float temperature, inv_temperature, grad_scale, label_smoothing, epsilon;
  bool cache;          // rows staged in shared memory (LogitRowsPlan::cache_rows)
  int64_t row_stride;  // floats between staged rows (LogitRowsPlan::row_stride)
};

// What the passes learn about one teacher of the row; in shared memory, written by thread 0.
struct TeacherRow {
  float max, log_sum_t, log_sum_1;
  float offset;  // lse(student) - lse(teacher) at T = 1: log p_s - log p_t = (s - t) - offset
  float dist;    // euclidean distances: sqrt(sum_c diff_c^2 + eps)
  float sum_u;   // logsoftmax_euclidean: sum_c diff_c / dist
  int32_t argmax;
  int32_t shift;  // where the teacher's row starts in its staging region (0 unstaged): logit_rows.h
};
static_assert(sizeof(TeacherRow) == kDistillTeacherStatBytes, "the plan's shared-memory layout");

// At T = 1 the two sums of SoftmaxStats are the same sum: keep sum_1 only and read it for both.
__device__ __forceinline__ SoftmaxStatsSpec stats_spec(float inv_t, bool want_t, bool want_1) {
  SoftmaxStatsSpec spec;
  spec.inv_temperature = inv_t;
  spec.sum_t = want_t && inv_t != 1.0f;
  spec.sum_1 = want_1 || (want_t && inv_t == 1.0f);
  return spec;
}
__device__ __forceinline__ float log_sum_t(const SoftmaxStats& s, const SoftmaxStatsSpec& spec) {
  return logf(spec.sum_t ? s.sum_t : s.sum_1);
}

// Per-row constants of pass 4.
struct RowContext {
  const float* t0;  // teacher 0's row; teacher k's at t0 + k * t_stride + teacher[k].shift
  int64_t t_stride;
  const TeacherRow* teacher;
  int32_t teachers;
  float inv_teachers;
  float s_max, s_log_sum_t, s_log_sum_1;
  int32_t top1;
  float on, off, log_on, log_off;  // hard: the targets and their logs
};

__device__ __forceinline__ float teacher_logit(const RowContext& x, int32_t k, int32_t c) {
  return x.t0[k * x.t_stride + x.teacher[k].shift + c];
}

// Loss term of class c (before the row's final factor) and d loss_r / d s_c (before grad_scale):
// distill_loss.cpp's loss_and_grad, one class at a time, in fp32.
__device__ __forceinline__ void class_loss_and_grad(const DistillArgs& a, const RowContext& x, int32_t c, float s,
                                                    float* loss, float* grad) {
  const int32_t K = x.teachers;
  float l = 0.0f, g = 0.0f;
  switch (a.distance) {
    case DistillDistance::kl: {
      const float inv_t = a.inv_temperature;
      const float log_ps = log_softmax_from_stats(s, x.s_max, inv_t, x.s_log_sum_t);
      float pt, log_pt;
      if (K == 1) {
        log_pt = log_softmax_from_stats(teacher_logit(x, 0, c), x.teacher[0].max, inv_t, x.teacher[0].log_sum_t);
        pt = expf(log_pt);
      } else {
        pt = 0.0f;
        for (int32_t k = 0; k < K; ++k)
          pt += expf(log_softmax_from_stats(teacher_logit(x, k, c), x.teacher[k].max, inv_t, x.teacher[k].log_sum_t));
        pt *= x.inv_teachers;
        log_pt = logf(pt);
      }
      l = kl_element(pt, log_pt, log_ps);
      g = kl_grad_element(a.temperature, expf(log_ps), pt);
      break;
    }
    case DistillDistance::hard: {
      const float log_ps = log_softmax_from_stats(s, x.s_max, 1.0f, x.s_log_sum_1);
      const bool top = c == x.top1;
      l = kl_element(top ? x.on : x.off, top ? x.log_on : x.log_off, log_ps);
      g = expf(log_ps) - (top ? x.on : x.off);
      break;
    }
    case DistillDistance::l2:
      for (int32_t k = 0; k < K; ++k) {
        const float diff = s - teacher_logit(x, k, c);
        l += diff * diff;
        g += 2.0f * diff;
      }
      g *= x.inv_teachers;
      break;
    case DistillDistance::euclidean:
      for (int32_t k = 0; k < K; ++k) g += euclidean_grad_element(s - teacher_logit(x, k, c), x.teacher[k].dist);
      g *= x.inv_teachers;
      break;
    case DistillDistance::logsoftmax_euclidean: {
      const float ps = expf(log_softmax_from_stats(s, x.s_max, 1.0f, x.s_log_sum_1));
      for (int32_t k = 0; k < K; ++k) {
        const TeacherRow& t = x.teacher[k];
        const float u = euclidean_grad_element((s - teacher_logit(x, k, c)) - t.offset, t.dist);
        g += logsoftmax_euclidean_grad_element(u, ps, t.sum_u);
      }
      g *= x.inv_teachers;
      break;
    }
  }
  *loss = l;
  *grad = g;
}

// The row's loss from pass 4's sum of class terms and the per-teacher distances.
__device__ __forceinline__ float row_loss(const DistillArgs& a, const TeacherRow* teacher, float class_sum) {
  switch (a.distance) {
    case DistillDistance::kl: return a.temperature * a.temperature * class_sum;
    case DistillDistance::hard: return class_sum;
    case DistillDistance::l2: return class_sum / float(a.teachers);
    case DistillDistance::euclidean:
    case DistillDistance::logsoftmax_euclidean: {
      float sum = 0.0f;
      for (int32_t k = 0; k < a.teachers; ++k) sum += teacher[k].dist;
      return sum / float(a.teachers);
    }
  }
  return 0.0f;
}

template <int THREADS>
__global__ void __launch_bounds__(THREADS, 1024 / THREADS) distill_loss_kernel(DistillArgs a) {
  __shared__ union {
    gpu::AllReduceStorage<SoftmaxStats, THREADS> stats;
    gpu::AllReduceStorage<gpu::RowSums, THREADS> sums;
  } red;
  extern __shared__ float4 distill_smem[];
  TeacherRow* teacher = reinterpret_cast<TeacherRow*>(distill_smem);
  const int64_t header = int64_t(a.teachers) * kDistillTeacherStatBytes;

  const int64_t r = blockIdx.x;
  const int32_t C = a.classes, K = a.teachers, tid = int32_t(threadIdx.x);
  const DistillDistance d = a.distance;
  const float* s_global = a.student + r * C;
  const float* t_global = a.teacher + r * C;  // teacher k: + k * rows * C
  // Staged rows: the student in region 0 of the staging area, teacher k in region k + 1, each
  // shifted by its global row's misalignment (logit_rows.h; a teacher's shift is in TeacherRow).
  float* s_copy = a.cache ? gpu::staging_region(distill_smem, header, a.row_stride, 0) + float_misalignment(s_global)
                          : nullptr;
  float* t_staging = a.cache ? gpu::staging_region(distill_smem, header, a.row_stride, 1) : nullptr;
  const float* s_row = a.cache ? s_copy : s_global;
  const float* t_row = a.cache ? t_staging : t_global;
  const int64_t t_stride = a.cache ? a.row_stride : a.rows * C;

  const bool need_loss = a.loss_rows || a.dstudent, need_rank = a.student_rank != nullptr;
  const bool need_top1 = a.teacher_top1 || need_rank || (d == DistillDistance::hard && need_loss);
  const bool kl = need_loss && d == DistillDistance::kl;
  const bool lse_euclid = need_loss && d == DistillDistance::logsoftmax_euclidean;
  const bool euclid = need_loss && d == DistillDistance::euclidean;
  const float inv_t = a.inv_temperature;

  // ---- pass 1: student, then each teacher (copied into the staging area on the way) ----
  const SoftmaxStatsSpec s_spec =
      stats_spec(inv_t, kl, need_loss && (d == DistillDistance::hard || lse_euclid));
  SoftmaxStats student = softmax_stats_empty();
  if (need_loss || need_rank) {
    SoftmaxStats part = softmax_stats_empty();
    gpu::read_row<THREADS>(s_global, C, s_copy, [&](float x, int32_t c) { softmax_stats_push(part, s_spec, x, c); });
    student = gpu::block_all_reduce<THREADS>(part, gpu::SoftmaxStatsMerge{s_spec}, red.stats);
  }
  const float s_log_sum_1 = logf(student.sum_1);
  if (need_loss || need_top1) {
    const SoftmaxStatsSpec t_spec = stats_spec(inv_t, kl, (need_top1 && K > 1) || lse_euclid);
    for (int32_t k = 0; k < K; ++k) {
      const float* tg = t_global + k * a.rows * C;
      const int32_t shift = a.cache ? float_misalignment(tg) : 0;
      float* tc = a.cache ? t_staging + k * t_stride + shift : nullptr;
      SoftmaxStats part = softmax_stats_empty();
      // The student row was read before the all-reduce's barrier: any thread may read its copy.
      gpu::read_row<THREADS>(tg, C, tc, [&](float x, int32_t c) {
        softmax_stats_push(part, t_spec, x, c);
        if (euclid) {
          const float diff = s_row[c] - x;
          part.aux += diff * diff;
        }
      });
      const SoftmaxStats t = gpu::block_all_reduce<THREADS>(part, gpu::SoftmaxStatsMerge{t_spec}, red.stats);
      if (tid == 0) {
        TeacherRow& row = teacher[k];
        row.max = t.max;
        row.argmax = t.argmax;
        row.log_sum_t = log_sum_t(t, t_spec);
        row.log_sum_1 = logf(t.sum_1);
        row.offset = (student.max - t.max) + (s_log_sum_1 - row.log_sum_1);
        row.dist = sqrtf(t.aux + a.epsilon);
        row.sum_u = 0.0f;
        row.shift = shift;
      }
    }
    __syncthreads();
  }

  RowContext x;
  x.t0 = t_row;
  x.t_stride = t_stride;
  x.teacher = teacher;
  x.teachers = K;
  x.inv_teachers = 1.0f / float(K);

  // ---- pass 2: the teachers' top-1 class ----
  int32_t top1 = 0;
  if (need_top1) {
    if (K == 1) {
      top1 = teacher[0].argmax;
    } else {
      const SoftmaxStatsSpec none;  // max and argmax only
      SoftmaxStats part = softmax_stats_empty();
      for (int32_t c = tid; c < C; c += THREADS) {
        float p = 0.0f;  // K * the mean probability at temperature 1
        for (int32_t k = 0; k < K; ++k)
          p += expf(log_softmax_from_stats(teacher_logit(x, k, c), teacher[k].max, 1.0f, teacher[k].log_sum_1));
        softmax_stats_push(part, none, p, c);
      }
      top1 = gpu::block_all_reduce<THREADS>(part, gpu::SoftmaxStatsMerge{none}, red.stats).argmax;
    }
    if (top1 < 0 || top1 >= C) top1 = 0;  // a row of NaNs has no argmax; the CPU reference says 0
  }

  // ---- pass 3: logsoftmax_euclidean's per-teacher distance ----
  if (lse_euclid) {
    for (int32_t k = 0; k < K; ++k) {
      const float offset = teacher[k].offset;
      gpu::RowSums part{0.0f, 0.0f, 0};
      for (int32_t c = tid; c < C; c += THREADS) {
        const float diff = (s_row[c] - teacher_logit(x, k, c)) - offset;
        part.a += diff * diff;
        part.b += diff;
      }
      const gpu::RowSums sums = gpu::block_all_reduce<THREADS>(part, gpu::RowSumsAdd{}, red.sums);
      if (tid == 0) {
        teacher[k].dist = sqrtf(sums.a + a.epsilon);
        teacher[k].sum_u = euclidean_grad_element(sums.b, teacher[k].dist);  // = sum_c diff_c / dist
      }
    }
    __syncthreads();
  }

  // ---- pass 4: loss terms, gradient (16-byte stores), rank ----
  if (need_loss || need_rank) {
    x.s_max = student.max;
    x.s_log_sum_t = log_sum_t(student, s_spec);
    x.s_log_sum_1 = s_log_sum_1;
    x.top1 = top1;
    x.on = hard_target(true, C, a.label_smoothing);
    x.off = hard_target(false, C, a.label_smoothing);
    x.log_on = logf(x.on);
    x.log_off = logf(x.off);
    const float s_top1 = need_rank ? s_row[top1] : 0.0f;  // written in pass 1, before its barriers
    gpu::RowSums part{0.0f, 0.0f, 0};
    // Class c's gradient (scaled), adding its loss term and rank to this thread's sums.
    auto term = [&](int32_t c) {
      const float s = s_row[c];
      if (need_rank) part.count += ranks_above(s, c, s_top1, top1) ? 1 : 0;
      float loss = 0.0f, grad = 0.0f;
      if (need_loss) {
        class_loss_and_grad(a, x, c, s, &loss, &grad);
        part.a += loss;
      }
      return a.grad_scale * grad;
    };
    if (a.dstudent)
      gpu::write_row<THREADS>(a.dstudent + r * C, C, term);
    else
      for (int32_t c = tid; c < C; c += THREADS) term(c);
    const gpu::RowSums sums = gpu::block_all_reduce<THREADS>(part, gpu::RowSumsAdd{}, red.sums);
    if (tid == 0) {
      if (a.loss_rows) a.loss_rows[r] = row_loss(a, teacher, sums.a);
      if (need_rank) a.student_rank[r] = sums.count;
    }
  }
  if (tid == 0 && a.teacher_top1) a.teacher_top1[r] = top1;
}

// The kernel family's shared-memory facts, asked of the driver once per device.
gpu::RowKernelLimits& limits() {
  static gpu::RowKernelLimits family(&distill_loss_kernel<128>, &distill_loss_kernel<256>, &distill_loss_kernel<512>,
                                     &distill_loss_kernel<1024>);
  return family;
}

template <int THREADS>
void launch(const CudaHandles& h, const DistillArgs& a, int64_t smem_bytes) {
  limits().allow_dynamic_shared(h.device, reinterpret_cast<const void*>(&distill_loss_kernel<THREADS>), smem_bytes);
  distill_loss_kernel<THREADS><<<unsigned(a.rows), THREADS, size_t(smem_bytes), h.stream>>>(a);
  KD_CUDA_LAUNCH_CHECK("distill_loss_kernel");
}

}  // namespace

void distill_loss_cuda(const CudaHandles& h, const DistillLossShape& s, const DistillLossOptions& o,
                       const float* teacher_logits, const float* student_logits, float* loss_rows, float* dstudent,
                       int32_t* teacher_top1, int32_t* student_rank) {
  check_distill_loss_args(s, o);
  KD_CHECK(s.rows < (int64_t(1) << 31) && s.classes < (int64_t(1) << 31),
           "distill_loss_cuda: rows and classes must be < 2^31, got ", s.rows, " x ", s.classes);
  if (s.rows == 0 || !(loss_rows || dstudent || teacher_top1 || student_rank)) return;
  const int64_t budget = limits().shared_budget(h.device);
  const LogitRowsPlan plan = distill_loss_cuda_plan(s, budget);
  // Only a huge ensemble (thousands of teachers) would outgrow a block's shared memory.
  KD_CHECK(plan.shared_bytes <= budget, "distill_loss_cuda: ", s.teachers,
           " teachers need more shared memory than a block gets (", budget, " bytes)");
  DistillArgs a;
  a.teacher = teacher_logits;
  a.student = student_logits;
  a.loss_rows = loss_rows;
  a.dstudent = dstudent;
  a.teacher_top1 = teacher_top1;
  a.student_rank = student_rank;
  a.rows = s.rows;
  a.classes = int32_t(s.classes);
  a.teachers = int32_t(s.teachers);
  a.distance = o.distance;
  a.temperature = o.temperature;
  a.inv_temperature = 1.0f / o.temperature;
  a.grad_scale = o.grad_scale;
  a.label_smoothing = o.label_smoothing;
  a.epsilon = o.epsilon;
  a.cache = plan.cache_rows;
  a.row_stride = plan.row_stride;
  switch (plan.threads) {
    case 128: launch<128>(h, a, plan.shared_bytes); break;
    case 256: launch<256>(h, a, plan.shared_bytes); break;
    case 512: launch<512>(h, a, plan.shared_bytes); break;
    default: launch<1024>(h, a, plan.shared_bytes); break;
  }
}

}  // namespace kd
