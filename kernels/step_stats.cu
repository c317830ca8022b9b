// The step statistics' device side: one block adds a micro-batch's loss rows (CUB block sums, a
// fixed order for a given row count, so reruns are bitwise equal), one thread decides the gate.
// Both are tiny; what matters is that the host does not read them inside the step.
#include <cub/block/block_reduce.cuh>

#include "kernels/check.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_vector.h"
#include "kernels/step_stats.h"

namespace kd {
namespace {

constexpr int kLossThreads = 256;

__global__ void __launch_bounds__(kLossThreads)
    add_loss_rows_kernel(int64_t rows, const float* loss, const int32_t* rank, double* stats) {
  using SumReduce = cub::BlockReduce<double, kLossThreads>;
  using CountReduce = cub::BlockReduce<long long, kLossThreads>;
  __shared__ typename SumReduce::TempStorage sum_temp;
  __shared__ typename CountReduce::TempStorage count_temp;
  double sum = 0;
  long long agree = 0;
  for (int64_t i = threadIdx.x; i < rows; i += kLossThreads) {
    sum += double(loss[i]);
    if (rank) agree += rank[i] == 0;
  }
  const double block_sum = SumReduce(sum_temp).Sum(sum);
  const long long block_agree = CountReduce(count_temp).Sum(agree);
  if (threadIdx.x == 0) {
    stats[kStatLossSum] += block_sum;
    stats[kStatAgree] += double(block_agree);
  }
}

__global__ void step_gate_kernel(double clip_norm, double* stats) { step_gate(clip_norm, stats); }

// Every thread that meets a non-finite value writes the same 1.0: a benign race.
__global__ void flag_nonfinite_kernel(int64_t n, const float* x, double* flag) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    if (!finite_f64(double(x[i]))) *flag = 1.0;
}

}  // namespace

void add_loss_rows_cuda(const CudaHandles& h, int64_t rows, const float* loss, const int32_t* rank, double* stats) {
  KD_CHECK(rows >= 0, "add_loss_rows_cuda: negative row count ", rows);
  if (rows == 0) return;
  add_loss_rows_kernel<<<1, kLossThreads, 0, h.stream>>>(rows, loss, rank, stats);
  KD_CUDA_LAUNCH_CHECK("add_loss_rows_kernel");
}

void flag_nonfinite_cuda(const CudaHandles& h, int64_t n, const float* x, double* flag) {
  KD_CHECK(n >= 0, "flag_nonfinite_cuda: negative size ", n);
  if (n == 0) return;
  flag_nonfinite_kernel<<<gpu::grid_for(h, n), gpu::kThreads, 0, h.stream>>>(n, x, flag);
  KD_CUDA_LAUNCH_CHECK("flag_nonfinite_kernel");
}

void step_gate_cuda(const CudaHandles& h, double clip_norm, double* stats) {
  step_gate_kernel<<<1, 1, 0, h.stream>>>(clip_norm, stats);
  KD_CUDA_LAUNCH_CHECK("step_gate_kernel");
}

}  // namespace kd
