#include "kernels/cast.h"

namespace kd {

void cast_f32_to_bf16_cpu(int64_t n, const float* in, bf16* out) {
#pragma omp parallel for schedule(static) if (n > (int64_t(1) << 16))
  for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16(in[i]);
}

void cast_bf16_to_f32_cpu(int64_t n, const bf16* in, float* out) {
#pragma omp parallel for schedule(static) if (n > (int64_t(1) << 16))
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(in[i]);
}

}  // namespace kd
