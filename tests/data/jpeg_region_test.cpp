// Decoding only what the views read (data/jpeg.h decode_jpeg_region): the region's pixels are
// the whole decode's pixels where the views sample (4:2:0 and 4:4:4, baseline and progressive,
// grey), views rendered from the region equal views rendered from the whole image at full
// scale (within float rounding of the moved box) and look like them at a reduced DCT scale,
// the recipe's extent covers every box the step draws, and the decoded range never misses a tap.
#include <gtest/gtest.h>

#include "data/recipe.h"

#if KD_HAVE_JPEG
#include <cmath>
#include <random>

#include "data/jpeg.h"
#include "kernels/augment.h"
#include "tests/data/jpeg_fixtures.h"

namespace kd {
namespace {

struct Encoded {
  std::vector<uint8_t> bytes;
  int w = 0, h = 0;
};

std::vector<Encoded> test_files() {
  std::vector<Encoded> files;
  uint64_t seed = 11;
  for (int channels : {3, 1})
    for (bool progressive : {false, true})
      for (bool c444 : {false, true}) {
        if (channels == 1 && c444) continue;
        const int w = 333 + int(seed % 7), h = 245 - int(seed % 5);  // not multiples of the 16-pixel iMCU
        files.push_back({encode(photo_like(w, h, channels, seed), w, h, channels, 90, progressive, c444), w, h});
        ++seed;
      }
  return files;
}

ViewNeed random_need(std::mt19937_64& rng, int w, int h, int out) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  ViewNeed n;
  n.w = float(1 + std::floor(u(rng) * w)), n.h = float(1 + std::floor(u(rng) * h));
  n.x0 = float(std::floor(u(rng) * (w - n.w + 1))), n.y0 = float(std::floor(u(rng) * (h - n.h + 1)));
  n.out_h = n.out_w = out;
  return n;
}

// A view of the need's box, flipped or not, rendered at out x out from `image` with the box
// moved into its decoded pixels.
std::vector<float> render(const Image& image, const ViewNeed& n, bool flip, int out) {
  ViewRecipe r;
  r.a.flip = flip;
  r.a.box = box_in_decoded(CropBox{n.y0, n.x0, n.h, n.w}, image.offset_y, image.offset_x, image.scale_num);
  const SourceImage src{0, int32_t(image.height), int32_t(image.width)};
  const Normalization norm;
  std::vector<float> px(size_t(out) * out * 3);
  for (int y = 0; y < out; ++y)
    for (int x = 0; x < out; ++x) render_pixel(image.pixels.data(), &src, r, norm, out, out, y, x, &px[(size_t(y) * out + x) * 3]);
  return px;
}

TEST(JpegRegion, AtFullScaleTheRegionHoldsTheWholeDecodesPixels) {
  std::mt19937_64 rng(1);
  for (const Encoded& f : test_files()) {
    const Image whole = decode_jpeg(f.bytes.data(), f.bytes.size(), "whole");
    for (int trial = 0; trial < 20; ++trial) {
      ViewNeed n = random_need(rng, f.w, f.h, 1);
      n.out_h = n.out_w = int(std::ceil(std::max(n.h, n.w)));  // no downscale: the DCT scale stays 8/8
      const Image region = decode_jpeg_region(f.bytes.data(), f.bytes.size(), "region", [&](int h, int w) {
        EXPECT_EQ(h, f.h);
        EXPECT_EQ(w, f.w);
        return n;
      });
      ASSERT_EQ(region.scale_num, 8);
      ASSERT_EQ(region.file_height(), f.h);
      ASSERT_EQ(region.file_width(), f.w);
      ASSERT_GE(region.offset_y, 0);
      ASSERT_LE(region.offset_y + region.height, f.h);
      ASSERT_LE(region.offset_x + region.width, f.w);
      // The box and the filter's reach lie inside the region...
      EXPECT_LE(region.offset_y, std::max(0.0f, n.y0 - 1));
      EXPECT_LE(region.offset_x, std::max(0.0f, n.x0 - 1));
      EXPECT_GE(region.offset_y + region.height, std::min(float(f.h), n.y0 + n.h + 1));
      EXPECT_GE(region.offset_x + region.width, std::min(float(f.w), n.x0 + n.w + 1));
      // ...and, but for the region's own left and right edges, its pixels are the whole decode's.
      int64_t differ = 0;
      for (int y = 0; y < region.height; ++y)
        for (int x = 0; x < region.width; ++x) {
          // The region's first and last columns are decoded as image edges (never read by a view).
          const bool edge = (x == region.width - 1 && region.offset_x + region.width < f.w) ||
                            (x == 0 && region.offset_x > 0);
          if (edge) continue;
          for (int c = 0; c < 3; ++c)
            differ += region.at(y, x)[c] != whole.at(y + region.offset_y, x + region.offset_x)[c];
        }
      EXPECT_EQ(differ, 0) << "trial " << trial;
    }
  }
}

// Views rendered from the region equal views rendered from the whole image decoded at the same
// DCT scale (the same taps; only the moved box rounds). Against the full-scale whole image, a
// reduced scale is a box prefilter before the bilinear resize: the view is smoother, printed.
TEST(JpegRegion, ViewsFromTheRegionAreTheViewsOfTheWholeImage) {
  std::mt19937_64 rng(2);
  double shown_scaled_diff = 0;
  int scaled_views = 0;
  for (const Encoded& f : test_files()) {
    const Image full = decode_jpeg(f.bytes.data(), f.bytes.size(), "whole");
    for (int trial = 0; trial < 12; ++trial) {
      const int out = trial % 2 ? 24 : 64;
      const ViewNeed n = random_need(rng, f.w, f.h, out);
      const bool flip = trial % 3 == 0;
      const Image region = decode_jpeg_region(f.bytes.data(), f.bytes.size(), "region", [&](int, int) { return n; });
      const Image whole = decode_jpeg(f.bytes.data(), f.bytes.size(), "whole", region.scale_num);
      const std::vector<float> a = render(whole, n, flip, out), b = render(region, n, flip, out);
      const std::vector<float> at_full = render(full, n, flip, out);
      double max = 0, mean_vs_full = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        max = std::max(max, std::abs(double(a[i]) - b[i]) * 127.5);  // in levels of 255 (2 <-> 255)
        mean_vs_full += std::abs(double(at_full[i]) - b[i]) * 127.5 / double(a.size());
      }
      EXPECT_LT(max, 0.02) << "trial " << trial << " at " << region.scale_num << "/8";
      if (region.scale_num < 8) shown_scaled_diff += mean_vs_full, ++scaled_views;
    }
  }
  ASSERT_GT(scaled_views, 0);
  std::printf("[ jpeg ] %d views decoded at a reduced scale: mean |view - full-scale view| %.2f levels\n",
              scaled_views, shown_scaled_diff / scaled_views);
}

TEST(JpegRegion, SmallViewsOfLargeBoxesDecodeAtAReducedScale) {
  const Encoded f = test_files()[0];
  const ViewNeed n{0, 0, float(f.h), float(f.w), 32, 32};
  const Image region = decode_jpeg_region(f.bytes.data(), f.bytes.size(), "region", [&](int, int) { return n; });
  EXPECT_EQ(region.scale_num, choose_dct_scale(f.w, f.h, 32, 32));
  EXPECT_LT(region.scale_num, 8);
  EXPECT_EQ(region.width, dct_scaled_size(f.w, region.scale_num));
  EXPECT_EQ(region.height, dct_scaled_size(f.h, region.scale_num));
}

TEST(JpegRegion, TheDecodedRangeCoversEveryTapAndIsNeverEmpty) {
  for (int scale : {1, 2, 4, 8})
    for (int size : {1, 2, 7, 8, 9, 100, 501}) {
      const int scaled = dct_scaled_size(size, scale);
      for (double lo = 0; lo < size; lo += std::max(1.0, size / 13.0))
        for (double len : {0.25, 1.0, 3.5, double(size)}) {
          const double hi = std::min(double(size), lo + len);
          const AxisRange r = decoded_range(lo, hi, scale, scaled);
          EXPECT_GE(r.begin, 0);
          EXPECT_LE(r.end, scaled);
          EXPECT_LT(r.begin, r.end);
          // Every bilinear tap of a view of [lo, hi): samples lie in [lo - 0.5, hi - 0.5] in
          // full pixels, at s = (u + 0.5) * scale / 8 - 0.5 in decoded ones, two taps each.
          const double s = scale / 8.0;
          const int first = int(std::floor((lo - 0.5 + 0.5) * s - 0.5)), last = int(std::ceil((hi - 0.5 + 0.5) * s - 0.5));
          EXPECT_LE(r.begin, std::max(0, first)) << lo << " " << hi << " at " << scale;
          EXPECT_GE(r.end, std::min(scaled, last + 1)) << lo << " " << hi << " at " << scale;
        }
    }
}

TEST(JpegRegion, BrokenNeedsAreErrorsAndBrokenFilesStillDecodeErrors) {
  const Encoded f = test_files()[0];
  EXPECT_THROW(decode_jpeg_region(f.bytes.data(), f.bytes.size(), "r", [](int, int) { return ViewNeed{}; }), Error);
  const std::vector<uint8_t> head(f.bytes.begin(), f.bytes.begin() + 200);
  EXPECT_THROW(decode_jpeg_region(head.data(), head.size(), "r",
                                  [](int, int) { return ViewNeed{0, 0, 8, 8, 8, 8}; }),
               DecodeError);
}

}  // namespace
}  // namespace kd
#endif

namespace kd {
namespace {

// Whatever the strategy, every box make_train_views / make_supervised_views draws for an image
// lies inside train_view_extent of that image's global slot (its own slot; the partner's slot
// for the mixup partner).
TEST(JpegRegion, TheExtentCoversEveryBoxTheStepDraws) {
  std::mt19937_64 rng(3);
  RecipeConfig c;
  const int64_t global = 8;
  auto inside = [](const CropBox& b, const CropBox& e) {
    return b.y0 >= e.y0 && b.x0 >= e.x0 && b.y0 + b.h <= e.y0 + e.h && b.x0 + b.w <= e.x0 + e.w;
  };
  for (TeachingStrategy s : {TeachingStrategy::fixed, TeachingStrategy::independent, TeachingStrategy::consistent,
                             TeachingStrategy::function_matching})
    for (int64_t step : {0, 5, 1234}) {
      BatchSlots slots;
      slots.step = step;
      slots.slot0 = 3;
      slots.global_batch = global;
      for (int i = 0; i < 4; ++i) slots.sizes.push_back(ImageSize{int32_t(50 + rng() % 400), int32_t(50 + rng() % 400)});
      slots.partner_size = ImageSize{int32_t(60 + rng() % 300), int32_t(60 + rng() % 300)};
      slots.partner_image = 4;
      const TrainViews v = make_train_views(c, s, slots, 9);
      auto slot_of = [&](int32_t image) { return image == 4 ? slots.slot0 - 1 : slots.slot0 + image; };
      auto size_of = [&](int32_t image) { return image == 4 ? slots.partner_size : slots.sizes[size_t(image)]; };
      for (const auto* views : {&v.student, &v.teacher})
        for (const ViewRecipe& r : *views)
          for (const ViewSource* src : {&r.a, &r.b}) {
            if (src == &r.b && r.lambda >= 1.0f) continue;
            const CropBox e = train_view_extent(c, s, false, 9, step, slot_of(src->image), size_of(src->image));
            EXPECT_TRUE(inside(src->box, e)) << teaching_strategy_name(s) << " step " << step << " image " << src->image;
          }
      const auto sup = make_supervised_views(c, slots.sizes, 9, step, slots.slot0);
      for (size_t i = 0; i < sup.size(); ++i) {
        const CropBox e = train_view_extent(c, s, true, 9, step, slots.slot0 + int64_t(i), slots.sizes[i]);
        EXPECT_TRUE(inside(sup[i].a.box, e));
      }
    }
}

TEST(JpegRegion, BoxesMoveIntoTheDecodedPixels) {
  const CropBox full{40, 24, 100, 64};
  const CropBox same = box_in_decoded(full, 0, 0, 8);
  EXPECT_EQ(same.y0, 40);
  EXPECT_EQ(same.w, 64);
  const CropBox half = box_in_decoded(full, 3, 5, 4);
  EXPECT_FLOAT_EQ(half.y0, 20 - 3);
  EXPECT_FLOAT_EQ(half.x0, 12 - 5);
  EXPECT_FLOAT_EQ(half.h, 50);
  EXPECT_FLOAT_EQ(half.w, 32);
}

}  // namespace
}  // namespace kd
