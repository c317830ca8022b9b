// Channel scale on the CPU: the forward pass and dx are one parallel sweep with channel.h's index
// math (what the CUDA kernels compute per element); the gate gradient sums each image's pixels
// with sum_rows_cpu (blocks of rows in parallel, in double, added in a fixed order).
#include "kernels/channel.h"

#include <vector>

#include "kernels/check.h"
#include "kernels/reduce_cpu.h"

namespace kd {

namespace {
constexpr int64_t kParallelMin = 1 << 15;  // below this a parallel region costs more than it saves
}  // namespace

void validate(const ChannelScaleShape& s, const char* op) {
  KD_CHECK(s.n > 0 && s.hw > 0 && s.c > 0, op, ": sizes must be positive, got n ", s.n, ", hw ", s.hw, ", c ", s.c);
}

template <typename T>
void channel_scale_forward_cpu(const ChannelScaleShape& s, const T* x, const T* scale, T* y) {
  validate(s, "channel_scale_forward");
  const int64_t numel = s.numel();
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
  for (int64_t i = 0; i < numel; ++i) y[i] = x[i] * scale[channel_scale_index(i, s.hw, s.c)];
}

template <typename T>
void channel_scale_backward_cpu(const ChannelScaleShape& s, const T* x, const T* scale, const T* dy, T* dx, T* dscale) {
  validate(s, "channel_scale_backward");
  const int64_t numel = s.numel(), c = s.c;
  // The gate gradient first: dx may alias dy.
  std::vector<double> sums(static_cast<size_t>(c));
  for (int64_t img = 0; img < s.n; ++img) {
    const T* xi = x + img * s.hw * c;
    const T* gi = dy + img * s.hw * c;
    sum_rows_cpu(
        s.hw, c,
        [&](int64_t p, double* acc) {
          for (int64_t ch = 0; ch < c; ++ch) acc[ch] += double(gi[p * c + ch]) * double(xi[p * c + ch]);
        },
        sums.data());
    for (int64_t ch = 0; ch < c; ++ch) dscale[img * c + ch] = T(sums[size_t(ch)]);
  }
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
  for (int64_t i = 0; i < numel; ++i) dx[i] = dy[i] * scale[channel_scale_index(i, s.hw, s.c)];
}

#define KD_INSTANTIATE_CHANNEL(T)                                                               \
  template void channel_scale_forward_cpu<T>(const ChannelScaleShape&, const T*, const T*, T*); \
  template void channel_scale_backward_cpu<T>(const ChannelScaleShape&, const T*, const T*, const T*, T*, T*);
KD_INSTANTIATE_CHANNEL(float)
KD_INSTANTIATE_CHANNEL(double)

}  // namespace kd
