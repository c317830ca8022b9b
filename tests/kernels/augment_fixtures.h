// Fixtures shared by the CPU and CUDA augmentation tests: packed batches of source images of
// mixed sizes (random, or linear "gradient" images whose resampling is known in closed form),
// random view recipes, and the closed-form expected output on gradient images.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/augment.h"

namespace kd::test {

struct ImageHW {
  int32_t h, w;
};

struct SourceBatch {
  std::vector<uint8_t> pixels;
  std::vector<SourceImage> sources;
  std::vector<ImageHW> sizes;
};

// Images packed back to back with a 3-byte gap before each, so that no image starts aligned.
template <typename PixelFn>
SourceBatch pack_sources(const std::vector<ImageHW>& sizes, PixelFn pixel) {
  SourceBatch b;
  b.sizes = sizes;
  for (size_t i = 0; i < sizes.size(); ++i) {
    b.pixels.resize(b.pixels.size() + 3, 0);
    SourceImage s;
    s.offset = int64_t(b.pixels.size());
    s.h = sizes[i].h, s.w = sizes[i].w;
    b.sources.push_back(s);
    for (int32_t y = 0; y < s.h; ++y)
      for (int32_t x = 0; x < s.w; ++x)
        for (int c = 0; c < 3; ++c) b.pixels.push_back(pixel(int(i), y, x, c));
  }
  return b;
}

// Channel values of gradient image i: red = x, green = y, blue = a constant naming the image.
// Sizes up to 256 keep every value in a byte.
inline double gradient_value(int image, int c, double y, double x) {
  return c == 0 ? x : c == 1 ? y : double(20 * image + 5);
}

inline SourceBatch gradient_sources(const std::vector<ImageHW>& sizes) {
  return pack_sources(sizes, [](int i, int y, int x, int c) { return uint8_t(gradient_value(i, c, y, x)); });
}

inline SourceBatch random_sources(const std::vector<ImageHW>& sizes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  return pack_sources(sizes, [&](int, int, int, int) { return uint8_t(rng() & 0xFF); });
}

// Bilinear resampling reproduces a linear image exactly, except that coordinates are clamped to
// the image: the expected channel c of output pixel (oy, ox), in pixel units, computed in double.
inline double expected_gradient_channel(const SourceBatch& b, const ViewRecipe& r, int64_t out_h, int64_t out_w,
                                        int64_t oy, int64_t ox, int c) {
  auto one = [&](const ViewSource& v) {
    const ImageHW size = b.sizes[size_t(v.image)];
    const int64_t fx = v.flip ? out_w - 1 - ox : ox;
    const double sy = double(v.box.y0) + (double(oy) + 0.5) * double(v.box.h) / double(out_h) - 0.5;
    const double sx = double(v.box.x0) + (double(fx) + 0.5) * double(v.box.w) / double(out_w) - 0.5;
    return gradient_value(v.image, c, std::clamp(sy, 0.0, double(size.h - 1)), std::clamp(sx, 0.0, double(size.w - 1)));
  };
  const double a = one(r.a);
  return r.lambda < 1.0f ? double(r.lambda) * a + (1.0 - double(r.lambda)) * one(r.b) : a;
}

// Random crop boxes (fractional corners, some reaching past the image, some smaller than the
// output so that it upsamples), random flips; image i mixed with image i - 1 (cyclically) at
// `lambda`, except every third image, which is not mixed.
inline std::vector<ViewRecipe> random_recipes(const std::vector<ImageHW>& sizes, float lambda, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  const int32_t n = int32_t(sizes.size());
  auto view = [&](int32_t i) {
    ViewSource v;
    v.image = i;
    const ImageHW s = sizes[size_t(i)];
    v.box.h = std::max(1.0f, float(s.h) * (0.1f + 1.0f * u(rng)));
    v.box.w = std::max(1.0f, float(s.w) * (0.1f + 1.0f * u(rng)));
    v.box.y0 = (float(s.h) - v.box.h) * (u(rng) * 1.2f - 0.1f);
    v.box.x0 = (float(s.w) - v.box.w) * (u(rng) * 1.2f - 0.1f);
    v.flip = u(rng) < 0.5f;
    return v;
  };
  std::vector<ViewRecipe> recipes(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) recipes[size_t(i)].a = view(i);
  for (int32_t i = 0; i < n; ++i) {
    ViewRecipe& r = recipes[size_t(i)];
    r.b = recipes[size_t((i + n - 1) % n)].a;
    r.lambda = i % 3 == 0 ? 1.0f : lambda;
  }
  return recipes;
}

}  // namespace kd::test
