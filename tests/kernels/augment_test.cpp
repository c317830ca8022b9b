// The fused augmentation on the CPU: the launch partition of the CUDA kernel (every output pixel
// of both views exactly once), and the per-pixel geometry shared with it (crop box, flip, mixup,
// clamping, normalisation) against the closed form on linear images.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/augment.h"
#include "tests/kernels/augment_fixtures.h"

namespace kd {
namespace {

using test::ImageHW;

struct PartitionCase {
  int64_t n, h1, w1, h2, w2, tile_px;
};

TEST(AugmentPartition, CoversEveryOutputPixelOfBothViewsExactlyOnce) {
  const PartitionCase cases[] = {{1, 1, 1, 0, 0, 1024},      {3, 224, 224, 160, 160, 1024}, {5, 17, 9, 33, 47, 1024},
                                 {4, 32, 32, 0, 0, 1024},    {2, 7, 13, 5, 3, 7},           {6, 31, 1, 1, 29, 16},
                                 {1, 1024, 1, 1, 1025, 1024}};
  for (const PartitionCase& pc : cases) {
    const AugmentPartition p = augment_partition(pc.n, pc.h1, pc.w1, pc.h2, pc.w2, pc.tile_px);
    const int64_t px[2] = {pc.h1 * pc.w1, pc.h2 * pc.w2};
    std::vector<int> hits[2] = {std::vector<int>(size_t(pc.n * px[0]), 0), std::vector<int>(size_t(pc.n * px[1]), 0)};
    int64_t last_image = 0;
    for (int64_t block = 0; block < augment_blocks(p); ++block) {
      const AugmentTile t = augment_tile(p, block);
      ASSERT_TRUE(t.view == 0 || t.view == 1);
      ASSERT_GE(t.image, last_image) << "blocks go image by image";
      ASSERT_LT(t.image, pc.n);
      ASSERT_LT(t.begin, t.end);
      ASSERT_LE(t.end - t.begin, pc.tile_px);
      ASSERT_LE(t.end, px[t.view]);
      last_image = t.image;
      for (int64_t q = t.begin; q < t.end; ++q) ++hits[t.view][size_t(t.image * px[t.view] + q)];
    }
    for (int v = 0; v < 2; ++v)
      for (size_t q = 0; q < hits[v].size(); ++q)
        ASSERT_EQ(hits[v][q], 1) << "view " << v << " pixel " << q << " of case n=" << pc.n << " " << pc.h1 << "x"
                                 << pc.w1 << " / " << pc.h2 << "x" << pc.w2 << " tile " << pc.tile_px;
  }
}

TEST(AugmentPartition, OneViewHasNoSecondViewTiles) {
  const AugmentPartition p = augment_partition(8, 10, 10, 0, 0, 64);
  EXPECT_EQ(augment_blocks(p), 8 * 2);
  for (int64_t block = 0; block < augment_blocks(p); ++block) EXPECT_EQ(augment_tile(p, block).view, 0);
}

TEST(AugmentPartition, TilesOfBothViewsOfAnImageAreAdjacent) {
  const AugmentPartition p = augment_partition(3, 40, 40, 20, 20, 256);  // 7 + 2 tiles per image
  const int64_t per_image = 9;
  ASSERT_EQ(augment_blocks(p), 3 * per_image);
  for (int64_t block = 0; block < augment_blocks(p); ++block) {
    const AugmentTile t = augment_tile(p, block);
    EXPECT_EQ(t.image, block / per_image);
    EXPECT_EQ(t.view, block % per_image < 7 ? 0 : 1);
  }
}

// Every view of a batch of gradient images, in pixel units (identity normalisation).
void expect_linear_resampling(const test::SourceBatch& b, const std::vector<ViewRecipe>& recipes, int64_t out_h,
                              int64_t out_w) {
  Normalization identity;
  for (int c = 0; c < 3; ++c) identity.scale[c] = 1.0f, identity.shift[c] = 0.0f;
  const int64_t n = int64_t(recipes.size());
  std::vector<float> out(size_t(n * out_h * out_w * 3), NAN);
  augment_cpu(b.pixels.data(), b.sources.data(), recipes.data(), n, identity, out_h, out_w, out.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t oy = 0; oy < out_h; ++oy)
      for (int64_t ox = 0; ox < out_w; ++ox)
        for (int c = 0; c < 3; ++c) {
          const double want = test::expected_gradient_channel(b, recipes[size_t(i)], out_h, out_w, oy, ox, c);
          const float got = out[size_t(((i * out_h + oy) * out_w + ox) * 3 + c)];
          ASSERT_NEAR(got, want, 2e-3) << "image " << i << " at " << oy << "," << ox << " channel " << c << " of "
                                       << out_h << "x" << out_w;
        }
}

TEST(AugmentCpu, ResamplesLinearImagesExactlyWithCropFlipMixupAndClamping) {
  const std::vector<ImageHW> sizes = {{37, 53}, {64, 64}, {120, 81}, {13, 200}, {256, 190}, {31, 17}};
  const test::SourceBatch b = test::gradient_sources(sizes);
  const std::vector<ViewRecipe> recipes = test::random_recipes(sizes, 0.7f, 1);
  expect_linear_resampling(b, recipes, 24, 40);  // teacher-like view
  expect_linear_resampling(b, recipes, 17, 9);   // a smaller student-like view of the same recipes
  expect_linear_resampling(b, recipes, 300, 7);  // upsampling in y
}

// The CPU op hoists the per-axis taps out of the pixel loop; every pixel must still be
// render_pixel's, bit for bit (random images and recipes, mixed and unmixed, flips, 1-pixel
// sources and views, up- and downsampling).
TEST(AugmentCpu, EveryPixelIsRenderPixelsBitForBit) {
  const std::vector<ImageHW> sizes = {{37, 53}, {1, 1}, {120, 81}, {13, 200}, {1, 40}, {31, 17}};
  const test::SourceBatch b = test::random_sources(sizes, 4);
  Normalization norm;
  norm.scale[1] = 0.013f, norm.shift[2] = 0.25f;
  for (float lambda : {1.0f, 0.6f})
    for (auto [out_h, out_w] : {std::pair<int64_t, int64_t>{24, 40}, {1, 1}, {300, 7}}) {
      const std::vector<ViewRecipe> recipes = test::random_recipes(sizes, lambda, 9);
      const int64_t n = int64_t(recipes.size());
      std::vector<float> out(size_t(n * out_h * out_w * 3), NAN);
      augment_cpu(b.pixels.data(), b.sources.data(), recipes.data(), n, norm, out_h, out_w, out.data());
      int64_t differ = 0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t oy = 0; oy < out_h; ++oy)
          for (int64_t ox = 0; ox < out_w; ++ox) {
            float px[3];
            render_pixel(b.pixels.data(), b.sources.data(), recipes[size_t(i)], norm, out_h, out_w, oy, ox, px);
            differ += std::memcmp(px, &out[size_t(((i * out_h + oy) * out_w + ox) * 3)], sizeof(px)) != 0;
          }
      EXPECT_EQ(differ, 0) << "lambda " << lambda << ", " << out_h << "x" << out_w;
    }
}

TEST(AugmentCpu, FlipMirrorsTheRowAndMixupBlendsTheTwoSources) {
  const std::vector<ImageHW> sizes = {{16, 16}, {16, 16}};
  const test::SourceBatch b = test::gradient_sources(sizes);
  ViewRecipe r;
  r.a.image = 0;
  r.a.box = CropBox{0, 0, 16, 16};
  r.b = r.a;
  r.b.image = 1;
  r.b.flip = 1;
  r.lambda = 0.25f;
  Normalization identity;
  for (int c = 0; c < 3; ++c) identity.scale[c] = 1.0f, identity.shift[c] = 0.0f;
  float px[3];
  render_pixel(b.pixels.data(), b.sources.data(), r, identity, 16, 16, 3, 5, px);  // same size: no resampling
  EXPECT_FLOAT_EQ(px[0], 0.25f * 5 + 0.75f * (15 - 5));                            // red = x, flipped in b
  EXPECT_FLOAT_EQ(px[1], 3.0f);                                                    // green = y in both
  EXPECT_FLOAT_EQ(px[2], 0.25f * 5 + 0.75f * 25);                                  // blue names the image
}

TEST(AugmentCpu, NormalisationFoldsMeanAndStd) {
  const float mean[3] = {0.485f, 0.456f, 0.406f}, std_dev[3] = {0.229f, 0.224f, 0.225f};
  const Normalization n = Normalization::from_mean_std(mean, std_dev);
  for (int c = 0; c < 3; ++c)
    for (int v : {0, 17, 128, 255})
      EXPECT_NEAR(float(v) * n.scale[c] + n.shift[c], (float(v) / 255.0f - mean[c]) / std_dev[c], 1e-5);
  const Normalization bit;  // BiT: [-1, 1]
  EXPECT_FLOAT_EQ(0.0f * bit.scale[0] + bit.shift[0], -1.0f);
  EXPECT_FLOAT_EQ(255.0f * bit.scale[1] + bit.shift[1], 1.0f);
}

}  // namespace
}  // namespace kd
