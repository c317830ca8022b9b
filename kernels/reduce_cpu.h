// Deterministic parallel sums over the rows of a matrix, for the CPU kernels (per-channel
// statistics of BatchNorm, bias and normalisation gradients). Sums are kept in double.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/common.h"

namespace kd {

// out[0, width) = the sum over rows r in [0, rows) of what add_row(r, acc) adds into acc[0, width).
// The rows are cut into at most 256 blocks whose size depends only on `rows`; blocks run in
// parallel, each into its own slot, and the slots are added in block order, so the result is the
// same for any number of threads.
template <typename AddRow>
void sum_rows_cpu(int64_t rows, int64_t width, const AddRow& add_row, double* out) {
  const int64_t block = std::max<int64_t>(64, ceil_div(rows, 256));
  const int64_t blocks = ceil_div(rows, block);
  std::vector<double> partial(size_t(blocks * width), 0.0);
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    double* acc = partial.data() + b * width;
    const int64_t end = std::min(rows, (b + 1) * block);
    for (int64_t r = b * block; r < end; ++r) add_row(r, acc);
  }
  std::fill(out, out + width, 0.0);
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t j = 0; j < width; ++j) out[j] += partial[size_t(b * width + j)];
}

}  // namespace kd
