// Host-side resizing (data/resize.h) against PyTorch's F.interpolate (antialiased bilinear and
// bicubic, align_corners=False) and mode="area", down and up, non-square: within 2e-3 of the
// 0..255 range (float accumulation; the same taps and weights).
#include <gtest/gtest.h>

#include <cmath>

#include "data/resize.h"
#include "engine/safetensors.h"

namespace kd {
namespace {

TEST(Resize, MatchesPyTorchInterpolate) {
  const SafetensorsFile f = SafetensorsFile::open(std::string(KD_PARITY_DIR) + "/resize.safetensors");
  const Tensor image = f.tensor_as("image", {37, 53, 3}, DType::f32);
  int checked = 0;
  for (const std::string& name : f.names()) {
    if (name == "image") continue;
    const size_t us = name.find('_'), x = name.find('x');
    const std::string mode = name.substr(0, us);
    const int64_t h = std::stoll(name.substr(us + 1, x - us - 1)), w = std::stoll(name.substr(x + 1));
    const Tensor want = f.tensor_as(name, {h, w, 3}, DType::f32);
    const std::vector<float> got = resize_hwc(image.data<float>(), 37, 53, 3, h, w, parse_resize_filter(mode));
    double worst = 0;
    for (int64_t i = 0; i < want.numel(); ++i)
      worst = std::max(worst, double(std::fabs(got[size_t(i)] - want.data<float>()[i])));
    EXPECT_LT(worst, 2e-3) << name;
    std::printf("[ parity ] resize %s: largest difference %.2e (of 0..255)\n", name.c_str(), worst);
    ++checked;
  }
  EXPECT_EQ(checked, 15);
}

}  // namespace
}  // namespace kd
