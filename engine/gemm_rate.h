// The dense matrix-product rate that kd's floors and MFU are measured against: one definition for
// `kd bench`, `bench_kernels` (its floor.gemm row) and tools/torch_step.py. (Issue 16: the notes
// mixed 695-740, 800-818 and 896 TFLOP/s from probes that differed in their operands and warm-up:
// A A^T against A B^T, zeros against random values, 16 ms against 0.25 s of work.)
//
//   GPU: C = A B^T in bf16 with fp32 accumulation, n = 8192 (quick: 2048); CPU: fp32, n = 1024
//   (quick: 512). A and B distinct, values uniform in [-1, 1) (gemm_rate_operand).
//   Two warm-up runs; three runs estimate the time of one; then as many runs as fill ~0.25 s
//   (10 to 200), each timed alone (CUDA events on the GPU, a steady clock on the CPU); the rate is
//   2 n^3 over the median run. The series is long enough that the clocks settle at what a
//   training step sees.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/context.h"

namespace kd {

struct GemmRate {
  double flops_per_s = 0;
  double median_s = 0;
  int64_t n = 0;
  int reps = 0;
  std::string what;  // e.g. "bf16 8192^3"
};

// n of the n^3 product: 8192 (quick: 2048) on a GPU, 1024 (quick: 512) on the CPU.
int64_t gemm_rate_size(bool cuda, bool quick);

// Value i (row-major) of operand 0 (A) or 1 (B).
float gemm_rate_operand(int which, int64_t i);

// The number of timed runs for a series of ~target_s given one run's estimated time.
int gemm_rate_reps(double estimate_s, double target_s, bool quick);

GemmRate measure_gemm_rate(Context& ctx, bool quick = false);
// The median of a series of timings (the mean of the middle two for an even count; 0 if empty):
// the GEMM rate's and bench_kernels' statistic.
double median_of(std::vector<double> v);

}  // namespace kd
