// Host-side resizing for evaluation: constant images stay constant under every filter, taps sum
// to one and stay inside the image, and the eval geometry is timm's (short side to
// floor(res / crop_fraction), the long side scaled and truncated, the centre crop's offsets
// rounded half to even as Python's round()). PyTorch parity: tests/parity/resize_parity_test.cpp.
#include "data/resize.h"

#include <gtest/gtest.h>

#include <cmath>

namespace kd {
namespace {

Image constant_image(int h, int w, uint8_t v) {
  Image im;
  im.height = h, im.width = w;
  im.pixels.assign(size_t(h * w * 3), v);
  return im;
}

TEST(Resize, TapsSumToOneInsideTheImageAndConstantsStay) {
  for (ResizeFilter f : {ResizeFilter::bilinear, ResizeFilter::bicubic, ResizeFilter::area})
    for (auto [in, out] : {std::pair<int64_t, int64_t>{37, 20}, {20, 37}, {5, 5}, {1, 4}, {300, 7}}) {
      const ResizeTaps t = resize_taps(in, out, f);
      for (int64_t i = 0; i < out; ++i) {
        double sum = 0;
        for (int32_t k = 0; k < t.count[size_t(i)]; ++k) sum += t.weights[size_t(t.offset[size_t(i)] + k)];
        EXPECT_NEAR(sum, 1.0, 1e-6) << int(f) << " " << in << "->" << out << " at " << i;
        EXPECT_GE(t.first[size_t(i)], 0);
        EXPECT_LE(t.first[size_t(i)] + t.count[size_t(i)], in);
      }
      const Image r = resize_image(constant_image(int(in), 9, 200), out, 4, f);
      for (uint8_t p : r.pixels) ASSERT_EQ(p, 200) << int(f);
    }
  EXPECT_THROW(parse_resize_filter("lanczos"), Error);
}

TEST(Resize, EvalGeometryIsTimms) {
  // 300 x 500 at 224 / 0.875: short side 256, long side floor(256 * 500 / 300) = 426.
  EvalResize r = resize_for_eval(constant_image(300, 500, 7), 224, 0.875, ResizeFilter::bicubic);
  EXPECT_EQ(r.image.height, 256);
  EXPECT_EQ(r.image.width, 426);
  EXPECT_EQ(r.top, 16);
  EXPECT_EQ(r.left, 101);  // (426 - 224) / 2 = 101
  // A tall image; offsets of x.5 round to even: (257 - 224) / 2 = 16.5 -> 16.
  r = resize_for_eval(constant_image(515, 257, 7), 224, 224.0 / 257.0, ResizeFilter::area);
  EXPECT_EQ(r.image.width, 257);
  EXPECT_EQ(r.image.height, 515);
  EXPECT_EQ(r.left, 16);
  EXPECT_EQ(r.top, 146);  // (515 - 224) / 2 = 145.5 -> 146
}

}  // namespace
}  // namespace kd
