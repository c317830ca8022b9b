// Function matching's mixed views against an independent implementation (issue 21, item 2):
// tests/reference/make_mixup_fixtures.py crops with torchvision's roi_align, flips, and mixes the
// batch with itself rolled by one, as big_vision does. kd renders the same boxes with its own
// recipes, built by the rule make_train_views follows (slot i takes 1 - lambda of slot i - 1's
// own view, cyclically: tests/data/recipe_test.cpp checks that rule), at the teacher's and the
// student's resolution. Within 2e-3 of the 0..255 range (float arithmetic, the same taps).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "engine/safetensors.h"
#include "kernels/augment.h"

namespace kd {
namespace {

TEST(Mixup, FunctionMatchingViewsAreTheRolledBatchMixOfPyTorchCrops) {
  const SafetensorsFile f = SafetensorsFile::open(std::string(KD_PARITY_DIR) + "/mixup.safetensors");
  const int64_t n = 6, h = 37, w = 53;
  const Tensor images = f.tensor_as("images", {n, h, w, 3}, DType::f32);
  const Tensor boxes = f.tensor_as("boxes", {n, 4}, DType::f32);
  const Tensor flips = f.tensor_as("flips", {n}, DType::f32);
  const float lambda = f.tensor_as("lam", {1}, DType::f32).data<float>()[0];

  std::vector<uint8_t> pixels(size_t(images.numel()));
  for (int64_t i = 0; i < images.numel(); ++i) pixels[size_t(i)] = uint8_t(images.data<float>()[i]);
  std::vector<SourceImage> sources(static_cast<size_t>(n));
  std::vector<ViewRecipe> recipes(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    sources[size_t(i)] = {i * h * w * 3, int32_t(h), int32_t(w)};
    const float* b = boxes.data<float>() + i * 4;
    recipes[size_t(i)].a = {int32_t(i), uint8_t(flips.data<float>()[i] != 0.0f), CropBox{b[0], b[1], b[2], b[3]}};
  }
  for (int64_t i = 0; i < n; ++i) {
    recipes[size_t(i)].b = recipes[size_t((i + n - 1) % n)].a;  // the left neighbour's own view
    recipes[size_t(i)].lambda = lambda;
  }
  Normalization raw;  // 0..255 units, as the fixture
  for (int c = 0; c < 3; ++c) raw.scale[c] = 1.0f, raw.shift[c] = 0.0f;

  for (int64_t size : {24, 16}) {
    const std::string name = "mixed_" + std::to_string(size) + "x" + std::to_string(size);
    const Tensor want = f.tensor_as(name, {n, size, size, 3}, DType::f32);
    std::vector<float> got(size_t(want.numel()));
    augment_cpu(pixels.data(), sources.data(), recipes.data(), n, raw, size, size, got.data());
    double worst = 0;
    for (int64_t i = 0; i < want.numel(); ++i)
      worst = std::max(worst, double(std::fabs(got[size_t(i)] - want.data<float>()[i])));
    EXPECT_LT(worst, 2e-3) << name;
    std::printf("[ parity ] function matching's mixed views %s: largest difference %.2e (of 0..255)\n", name.c_str(),
                worst);
  }
}

}  // namespace
}  // namespace kd
