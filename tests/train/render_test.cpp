// Packing a batch for the augment op: host-decoded images back to back first, images the GPU
// decodes (data.jpeg_decoder=nvjpeg) after them, each at an offset that leaves room for its
// pixels; and on a CPU run such images are a clear error, not a crash.
#include "train/render.h"

#include <gtest/gtest.h>

#include "tests/support/testing.h"

namespace kd {
namespace {

Image host_image(int h, int w, uint8_t value) {
  Image im;
  im.height = h, im.width = w;
  im.pixels.assign(size_t(h) * w * 3, value);
  return im;
}

Image device_image(int h, int w) {
  Image im;
  im.height = h, im.width = w;
  im.encoded = {0xFF, 0xD8, 0xFF, 0x01};
  im.origin = "x.jpg";
  return im;
}

TEST(Render, HostPixelsComeFirstAndGpuDecodesGetTheirPlaceAfter) {
  const std::vector<Image> images = {device_image(5, 7), host_image(2, 3, 9), device_image(1, 1), host_image(4, 1, 7)};
  const PackedImages p = pack_images(images);
  ASSERT_EQ(p.sources.size(), 4u);
  EXPECT_EQ(p.pixels.size(), size_t(2 * 3 * 3 + 4 * 1 * 3));
  EXPECT_EQ(p.sources[1].offset, 0);
  EXPECT_EQ(p.sources[3].offset, 18);
  EXPECT_EQ(p.pixels[0], 9);
  EXPECT_EQ(p.pixels[18], 7);
  ASSERT_EQ(p.device_jpegs.size(), 2u);
  EXPECT_EQ(p.sources[0].offset, 30);
  EXPECT_EQ(p.device_jpegs[0].offset, 30);
  EXPECT_EQ(p.sources[2].offset, 30 + 5 * 7 * 3);
  EXPECT_EQ(p.device_jpegs[1].offset, p.sources[2].offset);
  EXPECT_EQ(p.device_bytes, size_t(30 + 5 * 7 * 3 + 3));
  EXPECT_EQ(p.device_jpegs[0].encoded, images[0].encoded);
  const PackedImages host_only = pack_images(std::vector<Image>{host_image(2, 2, 1)});
  EXPECT_TRUE(host_only.device_jpegs.empty());
  EXPECT_EQ(host_only.device_bytes, host_only.pixels.size());
}

TEST(Render, GpuDecodedImagesOnACpuRunAreAClearError) {
  auto ctx = Context::cpu();
  const PackedImages p = pack_images(std::vector<Image>{device_image(4, 4)});
  std::vector<ViewRecipe> recipes(1);
  recipes[0].a.box = CropBox{0, 0, 4, 4};
  const std::string e = test::error_of([&] { render_views(*ctx, p, recipes, Normalization(), 4); });
  EXPECT_NE(e.find("data.jpeg_decoder=nvjpeg decodes JPEGs on the GPU"), std::string::npos) << e;
}

}  // namespace
}  // namespace kd
