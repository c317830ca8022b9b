#include "kernels/fp8.h"

#include <algorithm>
#include <cmath>

#include "kernels/check.h"

namespace kd {

void AmaxCalibrator::observe(float amax, const char* what) {
  KD_CHECK(std::isfinite(amax) && amax >= 0.0f, "fp8 calibration of ", what, ": the batch's largest magnitude is ",
           amax, " (non-finite values cannot be scaled into FP8)");
  if (done()) return;
  amax_ = std::max(amax_, amax);
  ++seen_;
}

float amax_cpu(int64_t n, const float* x) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(x[i])) return NAN;
    m = std::max(m, std::fabs(x[i]));
  }
  return m;
}

void fp8_quantize_cpu(int64_t n, const float* x, float scale, uint8_t* q) {
  KD_CHECK(std::isfinite(scale) && scale > 0.0f, "fp8_quantize: scale must be positive and finite, got ", scale);
  for (int64_t i = 0; i < n; ++i) q[i] = float_to_e4m3(x[i] * scale);
}

void fp8_dequantize_cpu(int64_t n, const uint8_t* q, float scale, float* y) {
  KD_CHECK(std::isfinite(scale) && scale > 0.0f, "fp8_dequantize: scale must be positive and finite, got ", scale);
  const float inv = 1.0f / scale;
  for (int64_t i = 0; i < n; ++i) y[i] = e4m3_to_float(q[i]) * inv;
}

}  // namespace kd
