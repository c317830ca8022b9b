// cross_entropy_cuda: one block per row, fp32.
//   pass 1  running softmax statistics of the row (softmax.h's SoftmaxStats: max, sum of
//           exp(x - max)) in one read with 16-byte loads (kernels/logit_rows.h), one CUB
//           reduction; the row is copied into shared memory on the way when it fits the device's
//           opt-in limit (21,843 classes do), else pass 2 re-reads global memory (L2-resident).
//   pass 2  (gradient, or the smoothing term of the loss) per class: dlogits = grad_scale *
//           (softmax - smoothed_target) and sum_c -log softmax_c, as cross_entropy_cpu.
// A label outside [0, classes) gives a NaN loss and NaN gradient for its row (the CPU twin
// throws; here the labels are on the device and the caller checks them).
#include "kernels/block_reduce.cuh"
#include "kernels/cuda_check.h"
#include "kernels/logit_rows.cuh"
#include "kernels/softmax.h"

namespace kd {
namespace {

struct CrossEntropyArgs {
  const float* logits;
  const int32_t* labels;
  float* loss_rows;
  float* dlogits;
  int32_t classes;
  float label_smoothing, grad_scale;
  bool cache;  // the row is staged in shared memory (LogitRowsPlan::cache_rows)
};

template <int THREADS>
__global__ void __launch_bounds__(THREADS, 1024 / THREADS) cross_entropy_kernel(CrossEntropyArgs a) {
  __shared__ union {
    gpu::AllReduceStorage<SoftmaxStats, THREADS> stats;
    gpu::AllReduceStorage<gpu::RowSums, THREADS> sums;
  } red;
  extern __shared__ float4 cross_entropy_smem[];

  const int64_t r = blockIdx.x;
  const int32_t C = a.classes, tid = int32_t(threadIdx.x);
  const float* x_global = a.logits + r * C;
  float* copy = a.cache ? gpu::staging_region(cross_entropy_smem, 0, 0, 0) + float_misalignment(x_global) : nullptr;
  const float* x_row = a.cache ? copy : x_global;
  const float eps = a.label_smoothing;

  // ---- pass 1 ----
  SoftmaxStatsSpec spec;
  spec.sum_1 = true;
  SoftmaxStats part = softmax_stats_empty();
  gpu::read_row<THREADS>(x_global, C, copy, [&](float x, int32_t c) { softmax_stats_push(part, spec, x, c); });
  const SoftmaxStats st = gpu::block_all_reduce<THREADS>(part, gpu::SoftmaxStatsMerge{spec}, red.stats);
  const float log_sum = logf(st.sum_1);
  const int32_t label = a.labels[r];
  const bool valid = label >= 0 && label < C;
  const float nan = __int_as_float(0x7fffffff);

  // ---- pass 2 ----
  float sum_neg_log_p = 0.0f;
  if (a.dlogits || (a.loss_rows && eps != 0.0f)) {
    gpu::RowSums sums{0.0f, 0.0f, 0};
    // Class c's gradient, adding -log softmax_c to this thread's sum.
    auto term = [&](int32_t c) {
      const float log_p = log_softmax_from_stats(x_row[c], st.max, 1.0f, log_sum);
      sums.a -= log_p;
      return valid ? a.grad_scale * (expf(log_p) - smoothed_target(c == label, C, eps)) : nan;
    };
    if (a.dlogits)
      gpu::write_row<THREADS>(a.dlogits + r * C, C, term);
    else
      for (int32_t c = tid; c < C; c += THREADS) term(c);
    if (a.loss_rows && eps != 0.0f) sum_neg_log_p = gpu::block_all_reduce<THREADS>(sums, gpu::RowSumsAdd{}, red.sums).a;
  }
  if (tid == 0 && a.loss_rows) {
    float loss = nan;
    if (valid) {
      loss = (1.0f - eps) * -log_softmax_from_stats(x_row[label], st.max, 1.0f, log_sum);
      if (eps != 0.0f) loss += eps / float(C) * sum_neg_log_p;
    }
    a.loss_rows[r] = loss;
  }
}

// The kernel family's shared-memory facts, asked of the driver once per device.
gpu::RowKernelLimits& limits() {
  static gpu::RowKernelLimits family(&cross_entropy_kernel<128>, &cross_entropy_kernel<256>, &cross_entropy_kernel<512>,
                                     &cross_entropy_kernel<1024>);
  return family;
}

template <int THREADS>
void launch(const CudaHandles& h, int64_t rows, const CrossEntropyArgs& a, int64_t smem_bytes) {
  limits().allow_dynamic_shared(h.device, reinterpret_cast<const void*>(&cross_entropy_kernel<THREADS>), smem_bytes);
  cross_entropy_kernel<THREADS><<<unsigned(rows), THREADS, size_t(smem_bytes), h.stream>>>(a);
  KD_CUDA_LAUNCH_CHECK("cross_entropy_kernel");
}

}  // namespace

void cross_entropy_cuda(const CudaHandles& h, int64_t rows, int64_t classes, const float* logits,
                        const int32_t* labels, float label_smoothing, float grad_scale, float* loss_rows,
                        float* dlogits) {
  KD_CHECK(rows >= 0 && classes >= 1 && rows < (int64_t(1) << 31) && classes < (int64_t(1) << 31),
           "cross_entropy_cuda: need 0 <= rows < 2^31 and 1 <= classes < 2^31, got rows ", rows, " classes ",
           classes);
  KD_CHECK(label_smoothing >= 0 && label_smoothing <= 1, "cross_entropy_cuda: label smoothing ", label_smoothing,
           " outside [0, 1]");
  if (rows == 0 || !(loss_rows || dlogits)) return;
  CrossEntropyArgs a;
  a.logits = logits;
  a.labels = labels;
  a.loss_rows = loss_rows;
  a.dlogits = dlogits;
  a.classes = int32_t(classes);
  a.label_smoothing = label_smoothing;
  a.grad_scale = grad_scale;
  // A row is read twice only with the gradient or smoothing; stage it then, when it fits.
  const bool second_pass = dlogits || (loss_rows && label_smoothing != 0.0f);
  const int64_t budget = second_pass ? limits().shared_budget(h.device) : 0;
  const LogitRowsPlan plan = logit_rows_plan(classes, 1, 0, budget);
  a.cache = plan.cache_rows;
  switch (plan.threads) {
    case 128: launch<128>(h, rows, a, plan.shared_bytes); break;
    case 256: launch<256>(h, rows, a, plan.shared_bytes); break;
    case 512: launch<512>(h, rows, a, plan.shared_bytes); break;
    default: launch<1024>(h, rows, a, plan.shared_bytes); break;
  }
}

}  // namespace kd
