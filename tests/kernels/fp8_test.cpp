// FP8 E4M3 conversions and scaling (kernels/fp8.h) against a brute-force reference: every one of
// the 256 codes decodes to the value the format defines and encodes back to itself, and random
// floats over the whole range (and beyond it) encode to the nearest code, ties to the even code,
// saturating at 448.
#include "kernels/fp8.h"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <random>

#include "kernels/check.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

// The format's definition, in double: (-1)^s 2^(e-7) (1 + m/8), subnormals 2^-6 m/8.
double defined_value(int code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  if (e == 15 && m == 7) return NAN;
  const double v = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -v : v;
}

// Nearest finite code by exhaustive search, ties to the even code; beyond 448: 448.
uint8_t brute_force_encode(float f) {
  if (std::isnan(f)) return kE4M3NaN;
  const int sign = std::signbit(f) ? 0x80 : 0;
  const double a = std::min(std::fabs(double(f)), 448.0);
  int best = 0;
  double best_d = INFINITY;
  for (int c = 0; c < 0x7F; ++c) {  // non-negative finite codes
    const double d = std::fabs(defined_value(c) - a);
    if (d < best_d || (d == best_d && (c & 1) == 0)) best = c, best_d = d;
  }
  return uint8_t(sign | best);
}

TEST(Fp8, EveryCodeDecodesToItsDefinedValueAndEncodesBack) {
  for (int c = 0; c < 256; ++c) {
    const float v = e4m3_to_float(uint8_t(c));
    const double want = defined_value(c);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(v)) << c;
      EXPECT_EQ(float_to_e4m3(v) & 0x7F, kE4M3NaN) << c;
      continue;
    }
    EXPECT_EQ(double(v), want) << "code " << c;
    EXPECT_EQ(int(float_to_e4m3(v)), c) << "code " << c << " value " << v;
  }
  EXPECT_EQ(e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_float(0x38), 1.0f);
  EXPECT_EQ(e4m3_to_float(0x08), 1.0f / 64);
  EXPECT_EQ(e4m3_to_float(0x01), 1.0f / 512);
  EXPECT_TRUE(std::signbit(e4m3_to_float(0x80)));
}

TEST(Fp8, RandomFloatsEncodeToTheNearestCodeTiesToEven) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> log2_mag(-14.0, 11.0);  // below the subnormals to above 448
  for (int i = 0; i < 200000; ++i) {
    const float f = float((rng() & 1 ? -1 : 1) * std::exp2(log2_mag(rng)));
    ASSERT_EQ(int(float_to_e4m3(f)), int(brute_force_encode(f))) << f;
  }
  // Midpoints: between 1 (0x38) and 1.125 (0x39) to 0x38; between 1.125 and 1.25 to 0x3A;
  // between the subnormals 2^-9 and 2 * 2^-9 to 2^-9 * 2 (code 2); half the smallest to 0.
  EXPECT_EQ(float_to_e4m3(1.0625f), 0x38);
  EXPECT_EQ(float_to_e4m3(1.1875f), 0x3A);
  EXPECT_EQ(float_to_e4m3(1.5f / 512), 0x02);
  EXPECT_EQ(float_to_e4m3(0.5f / 512), 0x00);
  EXPECT_EQ(float_to_e4m3(15.5f / 1024), 0x08) << "rounds up into the normals";
  // Saturation and specials.
  EXPECT_EQ(float_to_e4m3(460.0f), 0x7E);
  EXPECT_EQ(float_to_e4m3(1e30f), 0x7E);
  EXPECT_EQ(float_to_e4m3(-INFINITY), 0xFE);
  EXPECT_EQ(float_to_e4m3(NAN) & 0x7F, kE4M3NaN);
  EXPECT_EQ(float_to_e4m3(-0.0f), 0x80);
}

TEST(Fp8, ScaledRoundTripKeepsThreeMantissaBits) {
  const std::vector<float> x = test::random_vector<float>(4096, 3, -7.5, 7.5);
  const float amax = amax_cpu(int64_t(x.size()), x.data());
  AmaxCalibrator cal(2);
  cal.observe(amax, "x");
  cal.observe(amax * 0.5f, "x");
  cal.observe(1e6f, "x");  // after the calibration batches: ignored
  EXPECT_TRUE(cal.done());
  EXPECT_EQ(cal.amax(), amax);
  EXPECT_EQ(cal.scale(), 448.0f / amax);
  std::vector<uint8_t> q(x.size());
  std::vector<float> y(x.size());
  fp8_quantize_cpu(int64_t(x.size()), x.data(), cal.scale(), q.data());
  fp8_dequantize_cpu(int64_t(x.size()), q.data(), cal.scale(), y.data());
  for (size_t i = 0; i < x.size(); ++i) {
    // Normals: half a unit in the last of 3 mantissa bits, 2^-4 relative; below 2^-6 / scale the
    // subnormals' absolute step 2^-9 / scale (halved) bounds it.
    const double bound = std::max(std::fabs(double(x[i])) / 16, 0.5 / 512 / cal.scale()) * (1 + 1e-6);
    ASSERT_LE(std::fabs(double(y[i]) - x[i]), bound) << i << ": " << x[i] << " -> " << y[i];
  }
  EXPECT_EQ(e4m3_scale_for_amax(0.0f, 0), 1.0f) << "an all-zero tensor";
  EXPECT_EQ(e4m3_scale_for_amax(448.0f, 2), 0.25f) << "two bits of headroom";
  // a denormal-sized amax: a finite scale, and a descale of two such scales still a normal float
  for (float tiny : {1e-37f, 1e-41f, 1e-20f}) {
    const float scale = e4m3_scale_for_amax(tiny, 0);
    EXPECT_TRUE(std::isfinite(scale)) << tiny;
    EXPECT_EQ(scale, std::ldexp(1.0f, 60)) << tiny;
    EXPECT_GE(1.0f / (scale * scale), FLT_MIN) << tiny;
  }
  EXPECT_EQ(e4m3_scale_for_amax(1e-3f, 0), 448.0f / 1e-3f) << "ordinary amax: not capped";
}

TEST(Fp8, NonFiniteCalibrationAndScalesAreErrors) {
  AmaxCalibrator cal;
  const std::string msg = test::error_of([&] { cal.observe(NAN, "stages.2.blocks.0.conv1 input"); });
  EXPECT_NE(msg.find("stages.2.blocks.0.conv1 input"), std::string::npos) << msg;
  std::vector<float> x{1.0f, NAN};
  EXPECT_TRUE(std::isnan(amax_cpu(2, x.data())));
  uint8_t q[2];
  EXPECT_THROW(fp8_quantize_cpu(2, x.data(), 0.0f, q), Error);
  EXPECT_THROW(fp8_quantize_cpu(2, x.data(), INFINITY, q), Error);
}

}  // namespace
}  // namespace kd
