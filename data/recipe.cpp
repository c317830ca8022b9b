#include "data/recipe.h"

#include <algorithm>
#include <cmath>

#include "kernels/check.h"
#include "kernels/random.h"

namespace kd {

namespace {
// Streams: one per purpose, mixed with the step so that every step draws fresh values.
constexpr uint64_t kCropStream = 0x63726f70;     // "crop"
constexpr uint64_t kTeacherStream = 0x74636872;  // "tchr": the independent teacher's crops
constexpr uint64_t kMixStream = 0x6d697875;      // "mixu"

uint64_t stream_for(uint64_t purpose, int64_t step, int64_t slot) {
  return mix64(purpose ^ mix64(uint64_t(step))) ^ uint64_t(slot);
}

// A random crop + flip of source image `image` (of size `size`).
ViewSource random_view(const RecipeConfig& c, ImageSize size, int32_t image, uint64_t seed, uint64_t stream) {
  ViewSource v;
  v.image = image;
  v.box = sample_inception_crop(c, size, seed, stream);
  v.flip = c.flip && random_uniform(seed, stream, 1000) < 0.5f;
  return v;
}
}  // namespace

TeachingStrategy parse_teaching_strategy(const std::string& name) {
  if (name == "fixed") return TeachingStrategy::fixed;
  if (name == "independent") return TeachingStrategy::independent;
  if (name == "consistent") return TeachingStrategy::consistent;
  if (name == "function_matching") return TeachingStrategy::function_matching;
  KD_FAIL("unknown teaching strategy '", name, "' (use fixed, independent, consistent or function_matching)");
}

const char* teaching_strategy_name(TeachingStrategy s) {
  switch (s) {
    case TeachingStrategy::fixed: return "fixed";
    case TeachingStrategy::independent: return "independent";
    case TeachingStrategy::consistent: return "consistent";
    case TeachingStrategy::function_matching: return "function_matching";
  }
  return "?";
}

// Up to 10 attempts at a box of random area and log-uniform aspect ratio that fits; otherwise
// the centre crop with the aspect ratio clamped into range (torchvision's fallback). Integer
// boxes, as the official pipeline crops whole pixels.
CropBox sample_inception_crop(const RecipeConfig& c, ImageSize size, uint64_t seed, uint64_t stream) {
  KD_CHECK(size.h > 0 && size.w > 0, "inception crop of an empty image");
  const double area = double(size.h) * size.w;
  const double log_lo = std::log(c.aspect_min), log_hi = std::log(c.aspect_max);
  for (uint64_t attempt = 0; attempt < 10; ++attempt) {
    const double target = area * (c.area_min + (c.area_max - c.area_min) * random_uniform_double(seed, stream, 4 * attempt));
    const double ratio = std::exp(log_lo + (log_hi - log_lo) * random_uniform_double(seed, stream, 4 * attempt + 1));
    const int64_t w = std::llround(std::sqrt(target * ratio)), h = std::llround(std::sqrt(target / ratio));
    if (w <= 0 || h <= 0 || w > size.w || h > size.h) continue;
    const int64_t y0 = std::min<int64_t>(size.h - h, int64_t(random_uniform_double(seed, stream, 4 * attempt + 2) * double(size.h - h + 1)));
    const int64_t x0 = std::min<int64_t>(size.w - w, int64_t(random_uniform_double(seed, stream, 4 * attempt + 3) * double(size.w - w + 1)));
    return CropBox{float(y0), float(x0), float(h), float(w)};
  }
  const double in_ratio = double(size.w) / size.h;
  int64_t w = size.w, h = size.h;
  if (in_ratio < c.aspect_min)
    h = std::llround(w / c.aspect_min);
  else if (in_ratio > c.aspect_max)
    w = std::llround(h * c.aspect_max);
  return CropBox{float((size.h - h) / 2), float((size.w - w) / 2), float(h), float(w)};
}

CropBox centre_crop_box(ImageSize size, float crop_fraction) {
  const float side = float(std::min(size.h, size.w)) * crop_fraction;
  return CropBox{(float(size.h) - side) * 0.5f, (float(size.w) - side) * 0.5f, side, side};
}

// Gamma(shape k, scale 1) by Marsaglia & Tsang (2000); k < 1 through the boost
// Gamma(k) = Gamma(k + 1) * U^(1/k). Draws come from the counter stream, so it is repeatable.
static double sample_gamma(double k, uint64_t seed, uint64_t stream) {
  KD_CHECK(k > 0, "gamma shape must be positive, got ", k);
  double boost = 1.0;
  uint64_t index = 0;
  if (k < 1.0) {
    boost = std::pow(random_uniform_double(seed, stream, index++) + 1e-300, 1.0 / k);
    k += 1.0;
  }
  const double d = k - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    const double x = random_normal(seed, stream, index++);
    const double v = std::pow(1.0 + c * x, 3);
    if (v <= 0) continue;
    const double u = random_uniform_double(seed, stream ^ 0x5555, index++);
    if (std::log(u + 1e-300) < 0.5 * x * x + d - d * v + d * std::log(v)) return boost * d * v;
  }
}

double sample_beta(double alpha, double beta, uint64_t seed, uint64_t stream) {
  const double x = sample_gamma(alpha, seed, mix64(stream ^ 1)), y = sample_gamma(beta, seed, mix64(stream ^ 2));
  return x / (x + y);
}

float sample_mixup_lambda(float alpha, uint64_t seed, uint64_t stream) {
  const double a = alpha == 1.0f ? random_uniform_double(seed, stream, 0) : sample_beta(alpha, alpha, seed, stream);
  return float(std::max(a, 1.0 - a));
}

bool needs_mixup_partner(TeachingStrategy strategy, int64_t global_batch) {
  return strategy == TeachingStrategy::function_matching && global_batch > 1;
}

TrainViews make_train_views(const RecipeConfig& c, TeachingStrategy strategy, const BatchSlots& slots, uint64_t seed) {
  const int32_t n = int32_t(slots.sizes.size());
  KD_CHECK(n > 0, "make_train_views: empty batch");
  KD_CHECK(slots.slot0 >= 0 && slots.slot0 + n <= slots.global_batch, "make_train_views: slots [", slots.slot0, ", ",
           slots.slot0 + n, ") outside a global batch of ", slots.global_batch);
  const int64_t step = slots.step, slot0 = slots.slot0;
  TrainViews v;
  v.student.resize(size_t(n));
  for (int32_t i = 0; i < n; ++i)
    v.student[size_t(i)].a = random_view(c, slots.sizes[size_t(i)], i, seed, stream_for(kCropStream, step, slot0 + i));
  switch (strategy) {
    case TeachingStrategy::fixed:
      v.teacher = make_eval_views(slots.sizes, c.eval_crop_fraction);
      break;
    case TeachingStrategy::independent:
      v.teacher.resize(size_t(n));
      for (int32_t i = 0; i < n; ++i)
        v.teacher[size_t(i)].a = random_view(c, slots.sizes[size_t(i)], i, seed, stream_for(kTeacherStream, step, slot0 + i));
      break;
    case TeachingStrategy::consistent:
      v.shared = true;
      break;
    case TeachingStrategy::function_matching: {
      v.shared = true;
      // Global slot g takes lambda of itself and 1 - lambda of slot g - 1, cyclically over the
      // global batch (big_vision's roll by one). One lambda per step, drawn from the step alone.
      const float batch_lambda = sample_mixup_lambda(c.mixup_alpha, seed, stream_for(kMixStream, step, 0));
      v.lambda = batch_lambda;
      if (!needs_mixup_partner(strategy, slots.global_batch)) {
        v.lambda = 1.0f;  // a global batch of one image: nothing to mix with
        break;
      }
      KD_CHECK(slots.partner_image >= 0, "make_train_views: function matching needs the partner image of slot ",
               slot0);
      // The partner's own view: drawn from its global slot's stream, as on the rank that holds it.
      const int64_t partner_slot = (slot0 + slots.global_batch - 1) % slots.global_batch;
      const ViewSource partner = random_view(c, slots.partner_size, slots.partner_image, seed,
                                             stream_for(kCropStream, step, partner_slot));
      const std::vector<ViewRecipe> own = v.student;
      for (int32_t i = 0; i < n; ++i) {
        ViewRecipe& r = v.student[size_t(i)];
        r.b = i == 0 ? partner : own[size_t(i - 1)].a;
        r.lambda = c.mixup_per_sample
                       ? sample_mixup_lambda(c.mixup_alpha, seed, stream_for(kMixStream, step, slot0 + i + 1))
                       : batch_lambda;
      }
      break;
    }
  }
  if (v.shared) v.teacher = v.student;
  return v;
}

TrainViews make_train_views(const RecipeConfig& c, TeachingStrategy strategy, const std::vector<ImageSize>& sizes,
                            uint64_t seed, int64_t step) {
  KD_CHECK(!sizes.empty(), "make_train_views: empty batch");
  BatchSlots slots;
  slots.step = step;
  slots.global_batch = int64_t(sizes.size());
  slots.sizes = sizes;
  slots.partner_size = sizes.back();
  slots.partner_image = int32_t(sizes.size()) - 1;
  return make_train_views(c, strategy, slots, seed);
}

std::vector<ViewRecipe> make_supervised_views(const RecipeConfig& c, const std::vector<ImageSize>& sizes,
                                              uint64_t seed, int64_t step, int64_t slot0) {
  std::vector<ViewRecipe> out(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i)
    out[i].a = random_view(c, sizes[i], int32_t(i), seed, stream_for(kCropStream, step, slot0 + int64_t(i)));
  return out;
}

CropBox train_view_extent(const RecipeConfig& c, TeachingStrategy strategy, bool supervised, uint64_t seed,
                          int64_t step, int64_t global_slot, ImageSize size) {
  CropBox box = sample_inception_crop(c, size, seed, stream_for(kCropStream, step, global_slot));
  if (supervised) return box;
  auto unite = [&box](const CropBox& o) {
    const float y1 = std::max(box.y0 + box.h, o.y0 + o.h), x1 = std::max(box.x0 + box.w, o.x0 + o.w);
    box.y0 = std::min(box.y0, o.y0), box.x0 = std::min(box.x0, o.x0);
    box.h = y1 - box.y0, box.w = x1 - box.x0;
  };
  if (strategy == TeachingStrategy::independent)
    unite(sample_inception_crop(c, size, seed, stream_for(kTeacherStream, step, global_slot)));
  if (strategy == TeachingStrategy::fixed) unite(centre_crop_box(size, c.eval_crop_fraction));
  return box;
}

CropBox box_in_decoded(const CropBox& full, int offset_y, int offset_x, int scale_num) {
  const float s = float(scale_num) / 8.0f;
  return CropBox{full.y0 * s - float(offset_y), full.x0 * s - float(offset_x), full.h * s, full.w * s};
}

std::vector<ViewRecipe> make_eval_views(const std::vector<ImageSize>& sizes, float crop_fraction) {
  KD_CHECK(crop_fraction > 0 && crop_fraction <= 1, "eval crop fraction must be in (0, 1], got ", crop_fraction);
  std::vector<ViewRecipe> out(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    out[i].a.image = int32_t(i);
    out[i].a.box = centre_crop_box(sizes[i], crop_fraction);
  }
  return out;
}

}  // namespace kd
