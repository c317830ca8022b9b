#include "kernels/step_stats.h"

namespace kd {

template <typename T>
void add_loss_rows_cpu(int64_t rows, const T* loss, const int32_t* rank, double* stats) {
  // Row by row into the running sum, as the host added the rows it read back (the same bits).
  for (int64_t i = 0; i < rows; ++i) {
    stats[kStatLossSum] += double(float(loss[i]));
    if (rank && rank[i] == 0) stats[kStatAgree] += 1;
  }
}
template void add_loss_rows_cpu<float>(int64_t, const float*, const int32_t*, double*);
template void add_loss_rows_cpu<double>(int64_t, const double*, const int32_t*, double*);

template <typename T>
void flag_nonfinite_cpu(int64_t n, const T* x, double* flag) {
  for (int64_t i = 0; i < n; ++i)
    if (!finite_f64(double(x[i]))) {
      *flag = 1.0;
      return;
    }
}
template void flag_nonfinite_cpu<float>(int64_t, const float*, double*);
template void flag_nonfinite_cpu<double>(int64_t, const double*, double*);

void step_gate_cpu(double clip_norm, double* stats) { step_gate(clip_norm, stats); }

}  // namespace kd
