// Channel padding and slicing on the CPU (see channel_pad.h): the reference, elementwise.
#include "kernels/channel_pad.h"

#include "kernels/check.h"

namespace kd {

void validate_channel_pad(int64_t rows, int64_t c, int64_t c_pad, const char* op) {
  KD_CHECK(rows >= 0 && c >= 1 && c_pad >= c, op, ": rows ", rows, ", c ", c, ", c_pad ", c_pad,
           " (need rows >= 0 and 1 <= c <= c_pad)");
}

template <typename T>
void pad_channels_cpu(int64_t rows, int64_t c, int64_t c_pad, const T* x, T* y) {
  validate_channel_pad(rows, c, c_pad, "pad_channels");
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows * c_pad; ++i) {
    const int64_t from = channel_pad_source(i, c, c_pad);
    y[i] = from >= 0 ? x[from] : T(0);
  }
}

template <typename T>
void slice_channels_cpu(int64_t rows, int64_t c, int64_t c_pad, const T* x, T* y) {
  validate_channel_pad(rows, c, c_pad, "slice_channels");
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows * c; ++i) y[i] = x[channel_slice_source(i, c, c_pad)];
}

template void pad_channels_cpu<float>(int64_t, int64_t, int64_t, const float*, float*);
template void pad_channels_cpu<double>(int64_t, int64_t, int64_t, const double*, double*);
template void slice_channels_cpu<float>(int64_t, int64_t, int64_t, const float*, float*);
template void slice_channels_cpu<double>(int64_t, int64_t, int64_t, const double*, double*);

}  // namespace kd
