// FP8 E4M3 (the "fn" variant Hopper's tensor cores and cuDNN use: 1 sign, 4 exponent bits with
// bias 7, 3 mantissa bits, no infinities, NaN = S.1111.111) for an FP8 teacher: the conversions
// and the per-tensor scaling math, shared by the CPU reference and the CUDA kernels.
//   value(code) = (-1)^s * 2^(e - 7) * (1 + m / 8)   for e = 1..15 (but e = 15, m = 7: NaN)
//               = (-1)^s * 2^-6 * (m / 8)             for e = 0 (subnormals, step 2^-9)
// Largest finite 448, smallest normal 2^-6, smallest subnormal 2^-9.
// A tensor x is stored as q = e4m3(x * scale) and read back as q / scale; scale maps the
// tensor's largest magnitude (amax, calibrated on the first batches) onto 448.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

constexpr float kE4M3Max = 448.0f;
constexpr uint8_t kE4M3NaN = 0x7F;

KD_HD float e4m3_to_float(uint8_t code) {
  const uint32_t sign = uint32_t(code & 0x80u) << 24;
  const uint32_t e = (code >> 3) & 0xFu, m = code & 0x7u;
  uint32_t u;
  if (e == 0xFu && m == 0x7u) {
    u = sign | 0x7FC00000u;  // quiet NaN
  } else if (e == 0) {
    // m * 2^-9 exactly: m in 0..7 is an integer, so build it as a float and scale by the exponent.
    float f = float(m) * (1.0f / 512.0f);
    memcpy(&u, &f, sizeof u);
    u |= sign;
  } else {
    u = sign | ((e - 7u + 127u) << 23) | (m << 20);
  }
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest, ties to even, saturating: a magnitude above 448 (infinity included) becomes
// 448, as the GPU's cvt.rn.satfinite does; NaN stays NaN; the sign of zero is kept.
KD_HD uint8_t float_to_e4m3(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  const uint8_t sign = uint8_t((u >> 24) & 0x80u);
  const uint32_t abs_bits = u & 0x7FFFFFFFu;
  if (abs_bits > 0x7F800000u) return uint8_t(sign | kE4M3NaN);
  float a;
  memcpy(&a, &abs_bits, sizeof a);
  if (a > kE4M3Max) return uint8_t(sign | 0x7Eu);
  if (a < 1.0f / 64.0f) {  // subnormal range: a multiple of 2^-9 after rounding (8 * 2^-9 is the smallest normal)
    const float q = a * 512.0f;  // exact: a power-of-two scale
    uint32_t m = uint32_t(q);
    const float rest = q - float(m);
    if (rest > 0.5f || (rest == 0.5f && (m & 1u))) ++m;
    return uint8_t(sign | m);  // m == 8 is code 0x08, the smallest normal
  }
  int32_t e = int32_t(abs_bits >> 23) - 127;  // -6..8
  const uint32_t mant = abs_bits & 0x7FFFFFu;
  uint32_t m = (mant + 0x7FFFFu + ((mant >> 20) & 1u)) >> 20;  // 23 -> 3 bits, ties to even
  if (m == 8) m = 0, ++e;
  if (e > 8 || (e == 8 && m == 7)) return uint8_t(sign | 0x7Eu);  // would be 480 / the NaN code
  return uint8_t(sign | (uint32_t(e + 7) << 3) | m);
}

// The scale that maps amax onto 448 / 2^margin (margin: headroom in powers of two for values
// above the calibrated amax). amax 0 (an all-zero tensor) gives scale 1. At most 2^60: a tiny
// amax (below ~4e-16) would otherwise give an infinite scale, and the convolution's descale
// 1 / (x scale * w scale) would underflow to 0; values that small are 0 to an E4M3 code anyway.
constexpr float kE4M3MaxScale = 1152921504606846976.0f;  // 2^60
KD_HD float e4m3_scale_for_amax(float amax, int margin) {
  if (!(amax > 0.0f)) return 1.0f;
  float s = kE4M3Max / amax;
  for (int i = 0; i < margin; ++i) s *= 0.5f;
  return s < kE4M3MaxScale ? s : kE4M3MaxScale;
}

// Largest |x| of the first `batches` calibration batches of one tensor, then its scale.
class AmaxCalibrator {
 public:
  explicit AmaxCalibrator(int64_t batches = 8, int margin = 0) : batches_(batches), margin_(margin) {}
  // A batch's amax; a non-finite one is an error naming `what`.
  void observe(float amax, const char* what);
  bool done() const { return seen_ >= batches_; }
  int64_t seen() const { return seen_; }
  float amax() const { return amax_; }
  float scale() const { return e4m3_scale_for_amax(amax_, margin_); }

 private:
  int64_t batches_, seen_ = 0;
  int margin_;
  float amax_ = 0.0f;
};

// CPU reference of the FP8 path's data movement. amax: largest |x| (NaN if any x is NaN).
float amax_cpu(int64_t n, const float* x);
// q[i] = e4m3(x[i] * scale); y[i] = e4m3_to_float(q[i]) * (1 / scale).
void fp8_quantize_cpu(int64_t n, const float* x, float scale, uint8_t* q);
void fp8_dequantize_cpu(int64_t n, const uint8_t* q, float scale, float* y);

// CUDA: amax [1] (device) = largest |x| (NaN if any x is NaN: the max runs over the bit patterns
// of |x|, where every NaN is above infinity); quantize from fp32 (weights) or bf16 (activations).
void amax_cuda(const CudaHandles& h, int64_t n, const bf16* x, float* amax);
void fp8_quantize_cuda(const CudaHandles& h, int64_t n, const float* x, float scale, uint8_t* q);
void fp8_quantize_cuda(const CudaHandles& h, int64_t n, const bf16* x, float scale, uint8_t* q);
void fp8_dequantize_cuda(const CudaHandles& h, int64_t n, const uint8_t* q, float scale, float* y);
// The GPU's own conversion (cuda_fp8.h, cvt.rn.satfinite on Hopper), for tests that hold
// float_to_e4m3 to it.
void fp8_hardware_encode_cuda(const CudaHandles& h, int64_t n, const float* x, uint8_t* q);

}  // namespace kd
