// Packing a batch for the augment op: host-decoded images back to back first, images the GPU
// decodes (data.jpeg_decoder=nvjpeg) after them, each at an offset that leaves room for its
// pixels; and on a CPU run such images are a clear error, not a crash.
#include "train/render.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops.h"

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

// The pixels a packed batch writes: its host images gathered at their offsets.
std::vector<uint8_t> written(const PackedImages& p) {
  std::vector<uint8_t> out(p.host_bytes, 0);
  p.write_host_pixels(out.data());
  return out;
}

TEST(Render, HostPixelsComeFirstAndGpuDecodesGetTheirPlaceAfter) {
  const std::vector<Image> images = {device_image(5, 7), host_image(2, 3, 9), device_image(1, 1), host_image(4, 1, 7)};
  const PackedImages p = pack_images(images);
  ASSERT_EQ(p.sources.size(), 4u);
  EXPECT_EQ(p.host_bytes, size_t(2 * 3 * 3 + 4 * 1 * 3));
  EXPECT_EQ(p.sources[1].offset, 0);
  EXPECT_EQ(p.sources[3].offset, 18);
  const std::vector<uint8_t> pixels = written(p);
  EXPECT_EQ(pixels[0], 9);
  EXPECT_EQ(pixels[17], 9);
  EXPECT_EQ(pixels[18], 7);
  EXPECT_EQ(pixels[29], 7);
  ASSERT_EQ(p.device_jpegs.size(), 2u);
  EXPECT_EQ(p.sources[0].offset, 30);
  EXPECT_EQ(p.device_jpegs[0].offset, 30);
  EXPECT_EQ(p.sources[2].offset, 30 + 5 * 7 * 3);
  EXPECT_EQ(p.device_jpegs[1].offset, p.sources[2].offset);
  EXPECT_EQ(p.device_bytes, size_t(30 + 5 * 7 * 3 + 3));
  EXPECT_EQ(p.device_jpegs[0].encoded, images[0].encoded);
  const std::vector<Image> one = {host_image(2, 2, 1)};
  const PackedImages host_only = pack_images(one);
  EXPECT_TRUE(host_only.device_jpegs.empty());
  EXPECT_EQ(host_only.device_bytes, host_only.host_bytes);
}

// The pack reads the images in place: random pixels of odd sizes come out where the sources say,
// byte for byte, and the views rendered from the packed batch are those rendered from the same
// bytes handed over as one buffer (ops::augment_views' two entries agree).
TEST(Render, PackedPixelsAreGatheredAtTheirOffsetsAndRenderAsOneBuffer) {
  std::vector<Image> images;
  uint64_t state = 12345;
  const int sizes[][2] = {{7, 5}, {1, 1}, {13, 9}, {3, 17}, {8, 8}};
  for (const auto& hw : sizes) {
    Image im;
    im.height = hw[0], im.width = hw[1];
    im.pixels.resize(size_t(hw[0]) * size_t(hw[1]) * 3);
    for (uint8_t& v : im.pixels) v = uint8_t((state = state * 6364136223846793005ull + 1442695040888963407ull) >> 56);
    images.push_back(std::move(im));
  }
  const PackedImages p = pack_images(images);
  const std::vector<uint8_t> pixels = written(p);
  std::vector<uint8_t> expected;
  for (const Image& im : images) expected.insert(expected.end(), im.pixels.begin(), im.pixels.end());
  ASSERT_EQ(pixels, expected);
  for (size_t i = 0; i < images.size(); ++i)
    EXPECT_EQ(std::vector<uint8_t>(pixels.begin() + p.sources[i].offset,
                                   pixels.begin() + p.sources[i].offset + std::ptrdiff_t(images[i].pixels.size())),
              images[i].pixels);

  auto ctx = Context::cpu();
  std::vector<ViewRecipe> recipes(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    recipes[i].a.image = int32_t(i);
    recipes[i].a.box = CropBox{0.5f, 0.25f, float(images[i].height) - 0.5f, float(images[i].width) - 0.25f};
    recipes[i].a.flip = i % 2 == 1;
  }
  const std::vector<Tensor> packed = render_views_at(*ctx, p, recipes, Normalization(), {6, 3});
  const std::vector<Tensor> whole =
      ops::augment_views(*ctx, expected.data(), expected.size(), p.sources, recipes, Normalization(), {6, 3});
  ASSERT_EQ(packed.size(), 2u);
  for (size_t v = 0; v < packed.size(); ++v) {
    ASSERT_EQ(packed[v].numel(), whole[v].numel());
    for (int64_t i = 0; i < packed[v].numel(); ++i)
      ASSERT_EQ(packed[v].data<float>()[i], whole[v].data<float>()[i]) << "view " << v << " element " << i;
  }
  double spread = 0;
  const float* first = packed[0].data<float>();
  for (int64_t i = 0; i < packed[0].numel(); ++i) spread += std::abs(first[i] - first[0]);
  EXPECT_GT(spread, 1.0) << "the random pixels rendered as a constant";
}

TEST(Render, AnImageWhosePixelsDoNotMatchItsSizeIsNamed) {
  std::vector<Image> images = {host_image(2, 3, 1)};
  images[0].pixels.pop_back();
  images[0].origin = "short.png";
  const std::string e = test::error_of([&] { pack_images(images); });
  EXPECT_NE(e.find("short.png has 17 bytes for 2x3 pixels"), std::string::npos) << e;
}

TEST(Render, GpuDecodedImagesOnACpuRunAreAClearError) {
  auto ctx = Context::cpu();
  const std::vector<Image> images = {device_image(4, 4)};
  const PackedImages p = pack_images(images);
  std::vector<ViewRecipe> recipes(1);
  recipes[0].a.box = CropBox{0, 0, 4, 4};
  const std::string e = test::error_of([&] { render_views(*ctx, p, recipes, Normalization(), 4); });
  EXPECT_NE(e.find("data.jpeg_decoder=nvjpeg decodes JPEGs on the GPU"), std::string::npos) << e;
}

}  // namespace
}  // namespace kd
