// View recipes and their rendering: teacher and student views of one recipe show the same crop
// at two resolutions, mixup mixes each image with its left neighbour with one batch lambda, each
// teaching strategy produces the recipes the paper describes, and the sample order is a pure
// function of (seed, step).
#include "data/recipe.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <tuple>

#include "data/sampler.h"
#include "kernels/augment.h"
#include "kernels/check.h"

namespace kd {
namespace {

// An image whose value is linear in the pixel position, v(y, x) = 2y + x, on every channel (an
// integer in [0, 255] at pixel centres). Bilinear interpolation reproduces linear functions, so
// a rendered view must equal the function at the sampled source coordinates, exactly.
struct LinearImage {
  int32_t h = 50, w = 100;
  std::vector<uint8_t> pixels;
  LinearImage() {
    pixels.resize(size_t(h * w * 3));
    for (int32_t y = 0; y < h; ++y)
      for (int32_t x = 0; x < w; ++x)
        for (int c = 0; c < 3; ++c) pixels[size_t((y * w + x) * 3 + c)] = uint8_t(2 * y + x);
  }
  static float value(float sy, float sx) { return 2 * sy + sx; }
};

Normalization identity_norm() {
  Normalization n;
  for (int c = 0; c < 3; ++c) n.scale[c] = 1, n.shift[c] = 0;
  return n;
}

std::vector<float> render(const LinearImage& img, const std::vector<ViewRecipe>& recipes, int64_t res,
                          const std::vector<SourceImage>& sources) {
  std::vector<float> out(recipes.size() * size_t(res * res * 3));
  augment_cpu(img.pixels.data(), sources.data(), recipes.data(), int64_t(recipes.size()), identity_norm(), res, res,
              out.data());
  return out;
}

// Boxes strictly inside the image, so no sample is clamped at a border.
RecipeConfig inner_crops() {
  RecipeConfig c;
  c.area_min = 0.1f, c.area_max = 0.5f;
  return c;
}

TEST(Recipe, TeacherAndStudentViewsShowTheSameCropAtTwoResolutions) {
  LinearImage img;
  const std::vector<SourceImage> sources{{0, img.h, img.w}};
  const std::vector<ImageSize> sizes(4, ImageSize{img.h, img.w});
  const TrainViews v = make_train_views(inner_crops(), TeachingStrategy::consistent, sizes, 11, 3);
  ASSERT_TRUE(v.shared);
  std::vector<SourceImage> four(4, sources[0]);
  for (size_t i = 0; i < 4; ++i) {
    std::vector<ViewRecipe> one{v.student[i]};
    one[0].a.image = 0;
    const int64_t resolutions[2] = {40, 16};  // "teacher" and "student"
    for (int64_t res : resolutions) {
      const auto out = render(img, one, res, sources);
      for (int64_t oy = 0; oy < res; ++oy)
        for (int64_t ox = 0; ox < res; ++ox) {
          float sy, sx;
          view_source_coord(one[0].a.box, one[0].a.flip, res, res, oy, ox, &sy, &sx);
          sy = std::clamp(sy, 0.0f, float(img.h - 1)), sx = std::clamp(sx, 0.0f, float(img.w - 1));
          ASSERT_NEAR(out[size_t((oy * res + ox) * 3)], LinearImage::value(sy, sx), 1e-3)
              << "recipe " << i << " at " << res << " px, pixel " << oy << "," << ox;
        }
      // Both resolutions cover the box: the mean of a linear function over the box is its value
      // at the centre, whatever the resolution.
      double mean = 0;
      for (int64_t p = 0; p < res * res; ++p) mean += out[size_t(p * 3)];
      mean /= double(res * res);
      const CropBox& b = one[0].a.box;
      EXPECT_NEAR(mean, LinearImage::value(b.y0 + b.h / 2 - 0.5f, b.x0 + b.w / 2 - 0.5f), 1e-2) << res << " px";
    }
  }
}

TEST(Recipe, FlipMirrorsTheView) {
  LinearImage img;
  const std::vector<SourceImage> sources{{0, img.h, img.w}};
  ViewRecipe r;
  r.a.box = CropBox{5, 10, 30, 60};
  std::vector<ViewRecipe> plain{r}, flipped{r};
  flipped[0].a.flip = 1;
  const int64_t res = 12;
  const auto a = render(img, plain, res, sources), b = render(img, flipped, res, sources);
  for (int64_t y = 0; y < res; ++y)
    for (int64_t x = 0; x < res; ++x)
      EXPECT_FLOAT_EQ(a[size_t((y * res + x) * 3)], b[size_t((y * res + (res - 1 - x)) * 3)]);
}

TEST(Recipe, FunctionMatchingMixesEachImageWithItsLeftNeighbour) {
  const std::vector<ImageSize> sizes{{30, 40}, {28, 28}, {50, 20}, {31, 33}, {40, 40}};
  const TrainViews v = make_train_views(RecipeConfig{}, TeachingStrategy::function_matching, sizes, 5, 17);
  ASSERT_TRUE(v.shared);
  EXPECT_GE(v.lambda, 0.5f);
  EXPECT_LE(v.lambda, 1.0f);
  const size_t n = sizes.size();
  for (size_t i = 0; i < n; ++i) {
    const ViewRecipe& r = v.student[i];
    EXPECT_EQ(r.a.image, int32_t(i));
    EXPECT_FLOAT_EQ(r.lambda, v.lambda) << "one coefficient per batch";
    const ViewRecipe& left = v.student[(i + n - 1) % n];
    EXPECT_EQ(r.b.image, left.a.image) << "partner is the left neighbour";
    EXPECT_EQ(r.b.box.x0, left.a.box.x0);
    EXPECT_EQ(r.b.box.w, left.a.box.w);
    EXPECT_EQ(r.b.flip, left.a.flip) << "the partner keeps its own crop and flip";
    EXPECT_EQ(v.teacher[i].a.box.y0, r.a.box.y0) << "the teacher sees the identical mixed image";
    EXPECT_EQ(v.teacher[i].b.image, r.b.image);
    EXPECT_EQ(v.teacher[i].lambda, r.lambda);
  }
}

TEST(Recipe, MixedPixelsAreTheLambdaBlendOfTheTwoViews) {
  // Two constant images: the blend is lambda * 200 + (1 - lambda) * 40 on every pixel.
  std::vector<uint8_t> pixels(size_t(2 * 10 * 10 * 3));
  std::fill(pixels.begin(), pixels.begin() + 300, 200);
  std::fill(pixels.begin() + 300, pixels.end(), 40);
  const std::vector<SourceImage> sources{{0, 10, 10}, {300, 10, 10}};
  const TrainViews v =
      make_train_views(RecipeConfig{}, TeachingStrategy::function_matching, {{10, 10}, {10, 10}}, 9, 2);
  std::vector<float> out(size_t(2 * 8 * 8 * 3));
  augment_cpu(pixels.data(), sources.data(), v.student.data(), 2, identity_norm(), 8, 8, out.data());
  const float l = v.lambda;
  for (size_t p = 0; p < 64 * 3; ++p) {
    EXPECT_NEAR(out[p], l * 200 + (1 - l) * 40, 1e-3);
    EXPECT_NEAR(out[64 * 3 + p], l * 40 + (1 - l) * 200, 1e-3);
  }
}

TEST(Recipe, LambdaVariesAcrossStepsAndPerSampleWhenAsked) {
  const std::vector<ImageSize> sizes(8, ImageSize{32, 32});
  std::set<float> batch_lambdas;
  for (int64_t step = 0; step < 20; ++step)
    batch_lambdas.insert(make_train_views(RecipeConfig{}, TeachingStrategy::function_matching, sizes, 1, step).lambda);
  EXPECT_GT(batch_lambdas.size(), 15u);
  RecipeConfig per_sample;
  per_sample.mixup_per_sample = true;
  const TrainViews v = make_train_views(per_sample, TeachingStrategy::function_matching, sizes, 1, 0);
  std::set<float> lambdas;
  for (const ViewRecipe& r : v.student) {
    EXPECT_GE(r.lambda, 0.5f);
    lambdas.insert(r.lambda);
  }
  EXPECT_GT(lambdas.size(), 4u);
}

TEST(Recipe, BetaMixupFoldsIntoTheUpperHalfWithTheRightMean) {
  // a ~ Beta(0.4, 0.4), lambda = max(a, 1 - a): E[lambda] = 0.5 + E|a - 0.5| = 0.8398 (numpy, 2M draws).
  double sum = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const float l = sample_mixup_lambda(0.4f, 3, uint64_t(i));
    ASSERT_GE(l, 0.5f);
    ASSERT_LE(l, 1.0f);
    sum += l;
  }
  EXPECT_NEAR(sum / n, 0.8398, 0.006);
  double beta_sum = 0;
  for (int i = 0; i < n; ++i) beta_sum += sample_beta(2.0, 5.0, 4, uint64_t(i));
  EXPECT_NEAR(beta_sum / n, 2.0 / 7.0, 0.01);
}

TEST(Recipe, StrategiesProduceThePapersRecipes) {
  const std::vector<ImageSize> sizes(6, ImageSize{40, 60});
  const RecipeConfig c;
  const TrainViews fixed = make_train_views(c, TeachingStrategy::fixed, sizes, 1, 4);
  EXPECT_FALSE(fixed.shared);
  for (size_t i = 0; i < sizes.size(); ++i) {
    const CropBox centre = centre_crop_box(sizes[i], c.eval_crop_fraction);
    EXPECT_EQ(fixed.teacher[i].a.box.y0, centre.y0);
    EXPECT_EQ(fixed.teacher[i].a.box.w, centre.w);
    EXPECT_EQ(fixed.teacher[i].a.flip, 0);
    EXPECT_EQ(fixed.teacher[i].lambda, 1.0f);
    EXPECT_EQ(fixed.student[i].lambda, 1.0f) << "no mixup for the fixed teacher's student";
  }
  const TrainViews independent = make_train_views(c, TeachingStrategy::independent, sizes, 1, 4);
  EXPECT_FALSE(independent.shared);
  int different = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    different += independent.teacher[i].a.box.x0 != independent.student[i].a.box.x0 ||
                 independent.teacher[i].a.box.w != independent.student[i].a.box.w;
    EXPECT_EQ(independent.teacher[i].lambda, 1.0f);
  }
  EXPECT_GE(different, 5) << "independent noise: separate crops";
  const TrainViews consistent = make_train_views(c, TeachingStrategy::consistent, sizes, 1, 4);
  EXPECT_TRUE(consistent.shared);
  for (const ViewRecipe& r : consistent.student) EXPECT_EQ(r.lambda, 1.0f);
  // Same crops for consistent and function matching at the same (seed, step): only mixup differs.
  const TrainViews fm = make_train_views(c, TeachingStrategy::function_matching, sizes, 1, 4);
  for (size_t i = 0; i < sizes.size(); ++i) EXPECT_EQ(fm.student[i].a.box.x0, consistent.student[i].a.box.x0);
  EXPECT_LT(fm.student[0].lambda, 1.0f);
}

TEST(Recipe, InceptionCropsRespectAreaAndAspectBounds) {
  RecipeConfig c;
  c.area_min = 0.2f, c.area_max = 0.6f;
  for (uint64_t s = 0; s < 500; ++s) {
    const ImageSize size{120, 90};
    const CropBox b = sample_inception_crop(c, size, 7, s);
    ASSERT_GE(b.y0, 0);
    ASSERT_GE(b.x0, 0);
    ASSERT_LE(b.y0 + b.h, size.h);
    ASSERT_LE(b.x0 + b.w, size.w);
    const double area = double(b.h) * b.w / (double(size.h) * size.w);
    EXPECT_GE(area, 0.19);
    EXPECT_LE(area, 0.61);
    EXPECT_GE(b.w / b.h, 0.75 * 0.95);
    EXPECT_LE(b.w / b.h, 4.0 / 3.0 * 1.05);
  }
}

TEST(Recipe, ViewsArePureFunctionsOfSeedAndStep) {
  const std::vector<ImageSize> sizes(5, ImageSize{33, 47});
  const TrainViews a = make_train_views(RecipeConfig{}, TeachingStrategy::function_matching, sizes, 42, 1000);
  const TrainViews b = make_train_views(RecipeConfig{}, TeachingStrategy::function_matching, sizes, 42, 1000);
  const TrainViews c = make_train_views(RecipeConfig{}, TeachingStrategy::function_matching, sizes, 42, 1001);
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(a.student[i].a.box.x0, b.student[i].a.box.x0);
    EXPECT_EQ(a.student[i].lambda, b.student[i].lambda);
  }
  EXPECT_NE(a.lambda, c.lambda);
}

TEST(Sampler, EpochsArePermutationsAndStepsArePure) {
  EpochSampler s(10, 4, 3);
  std::vector<int64_t> stream;
  for (int64_t step = 0; step < 5; ++step) {
    const auto idx = s.indices(step);
    stream.insert(stream.end(), idx.begin(), idx.end());
  }
  std::vector<int64_t> epoch0(stream.begin(), stream.begin() + 10), epoch1(stream.begin() + 10, stream.end());
  std::sort(epoch0.begin(), epoch0.end());
  std::sort(epoch1.begin(), epoch1.end());
  for (int64_t i = 0; i < 10; ++i) {
    EXPECT_EQ(epoch0[size_t(i)], i);
    EXPECT_EQ(epoch1[size_t(i)], i);
  }
  EXPECT_NE(std::vector<int64_t>(stream.begin(), stream.begin() + 10),
            std::vector<int64_t>(stream.begin() + 10, stream.end()))
      << "each epoch has its own order";
  EpochSampler fresh(10, 4, 3);
  EXPECT_EQ(fresh.indices(3), s.indices(3)) << "step 3 without steps 0-2";
}

TEST(Sampler, RanksSplitEachGlobalBatch) {
  EpochSampler whole(100, 8, 5);
  EpochSampler r0(100, 8, 5, 0, 2), r1(100, 8, 5, 1, 2);
  for (int64_t step = 0; step < 30; ++step) {
    auto all = whole.indices(step), a = r0.indices(step), b = r1.indices(step);
    a.insert(a.end(), b.begin(), b.end());
    EXPECT_EQ(a, all);
  }
  EXPECT_THROW(EpochSampler(100, 9, 5, 0, 2), Error);
}

// Any split of a global batch over ranks and micro-batches (contiguous shares) must give every
// slot the recipe it has when one rank holds the whole batch: the same crop, flip, mixup partner
// image (the global neighbour) and the same lambda.
TEST(Recipe, ViewsAndMixupAreTheSameWhateverTheRankCount) {
  const int64_t batch = 12;
  std::vector<ImageSize> sizes;  // slot i's image; every slot a different size
  for (int64_t i = 0; i < batch; ++i) sizes.push_back({int32_t(40 + 3 * i), int32_t(70 - 2 * i)});
  for (TeachingStrategy strategy : {TeachingStrategy::fixed, TeachingStrategy::independent,
                                    TeachingStrategy::consistent, TeachingStrategy::function_matching}) {
    for (bool per_sample : {false, true}) {
      RecipeConfig c;
      c.mixup_per_sample = per_sample;
      for (int64_t step : {0, 7, 123456}) {
        const TrainViews whole = make_train_views(c, strategy, sizes, 99, step);
        for (int64_t shares : {2, 3, 4, 6, 12}) {
          const int64_t n = batch / shares;
          for (int64_t share = 0; share < shares; ++share) {
            BatchSlots slots;
            slots.step = step, slots.slot0 = share * n, slots.global_batch = batch;
            slots.sizes.assign(sizes.begin() + share * n, sizes.begin() + (share + 1) * n);
            slots.partner_size = sizes[size_t((share * n + batch - 1) % batch)];
            slots.partner_image = int32_t(n);  // loaded after the share's own images
            const TrainViews part = make_train_views(c, strategy, slots, 99);
            ASSERT_EQ(part.lambda, whole.lambda) << "one lambda per step, whatever the split";
            ASSERT_EQ(part.shared, whole.shared);
            for (int64_t i = 0; i < n; ++i) {
              const int64_t g = share * n + i;
              for (const auto& [mine, ref] : {std::pair{&part.student, &whole.student}, {&part.teacher, &whole.teacher}}) {
                const ViewRecipe &a = (*mine)[size_t(i)], &b = (*ref)[size_t(g)];
                // Image indices are local to the share: slot i is image i, the partner is image n.
                EXPECT_EQ(a.a.image, i);
                EXPECT_EQ(a.a.flip, b.a.flip);
                EXPECT_EQ(std::tie(a.a.box.y0, a.a.box.x0, a.a.box.h, a.a.box.w),
                          std::tie(b.a.box.y0, b.a.box.x0, b.a.box.h, b.a.box.w))
                    << "slot " << g << " split " << shares;
                EXPECT_EQ(a.lambda, b.lambda);
                if (b.lambda == 1.0f) continue;
                const int64_t partner_global = (g + batch - 1) % batch;
                EXPECT_EQ(b.b.image, partner_global) << "one rank: the left neighbour";
                EXPECT_EQ(a.b.image, i == 0 ? n : i - 1) << "split: the extra image or the slot before";
                EXPECT_EQ(a.b.flip, b.b.flip);
                EXPECT_EQ(std::tie(a.b.box.y0, a.b.box.x0, a.b.box.h, a.b.box.w),
                          std::tie(b.b.box.y0, b.b.box.x0, b.b.box.h, b.b.box.w));
              }
            }
          }
        }
      }
    }
  }
}

TEST(Sampler, EverySampleOnceAnEpochOnEveryRankCount) {
  const int64_t n = 60, batch = 12;
  for (int ranks : {1, 2, 3, 4}) {
    std::vector<std::unique_ptr<EpochSampler>> samplers;
    for (int r = 0; r < ranks; ++r) samplers.push_back(std::make_unique<EpochSampler>(n, batch, 17, r, ranks));
    for (int64_t epoch = 0; epoch < 3; ++epoch) {
      std::vector<int64_t> seen;
      for (int64_t step = epoch * n / batch; step < (epoch + 1) * n / batch; ++step)
        for (auto& s : samplers) {
          const auto idx = s->indices(step);
          seen.insert(seen.end(), idx.begin(), idx.end());
          // The partner of a rank's first slot is the image of the slot before it.
          EXPECT_EQ(s->partner_index(step), s->index_at(step, (s->first_slot() + batch - 1) % batch));
        }
      std::sort(seen.begin(), seen.end());
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[size_t(i)], i) << ranks << " ranks, epoch " << epoch;
    }
    // The same stream as one rank: rank r holds slots [r * local, (r + 1) * local).
    EpochSampler one(n, batch, 17);
    for (int64_t step = 0; step < 9; ++step)
      for (int r = 0; r < ranks; ++r)
        for (int64_t j = 0; j < batch / ranks; ++j)
          EXPECT_EQ(samplers[size_t(r)]->indices(step)[size_t(j)], one.index_at(step, r * (batch / ranks) + j));
  }
}

}  // namespace
}  // namespace kd
