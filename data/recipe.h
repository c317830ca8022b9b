// View recipes: what each training image looks like this step, decided on the host from
// (seed, step, slot) alone, so any step's views can be recomputed after a resume, on any
// number of loader threads. The augment op renders a recipe at any resolution; rendering one
// recipe twice (teacher 224 px, student 160 px) gives consistent views of the same crop.
//
// Teaching strategies (the paper's comparison) are only different recipes:
//   fixed               teacher: centre crop, no flip (its outputs can be cached);
//                       student: its own random crop + flip
//   independent         teacher and student: two independent random crops + flips
//   consistent          one random crop + flip, shared
//   function_matching   one random crop + flip, then mixup, shared (the paper's method)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/augment.h"

namespace kd {

enum class TeachingStrategy : uint8_t { fixed, independent, consistent, function_matching };
TeachingStrategy parse_teaching_strategy(const std::string& name);  // throws listing the valid names
const char* teaching_strategy_name(TeachingStrategy s);

struct RecipeConfig {
  // Inception crop (big_vision's inception_crop; torchvision's RandomResizedCrop sampling)
  float area_min = 0.05f, area_max = 1.0f;       // of the image area
  float aspect_min = 0.75f, aspect_max = 4.0f / 3.0f;
  bool flip = true;
  // Mixup: a ~ Beta(alpha, alpha), lambda = max(a, 1 - a); each image mixed with its neighbour
  // in the batch (slot i with slot i - 1, cyclically) as big_vision's roll(x, 1).
  float mixup_alpha = 1.0f;
  bool mixup_per_sample = false;  // one lambda per batch (official) or one per image
  // Evaluation: resize the short side to crop / crop_fraction, then take the centre crop; as a
  // box on the source image: a centred square of side short_side * crop_fraction.
  float eval_crop_fraction = 0.875f;
};

struct ImageSize {
  int32_t h = 0, w = 0;
};

// Counter-based draws (kernels/random.h). `stream` separates purposes, `index` the draws.
CropBox sample_inception_crop(const RecipeConfig& c, ImageSize size, uint64_t seed, uint64_t stream);
CropBox centre_crop_box(ImageSize size, float crop_fraction);
float sample_mixup_lambda(float alpha, uint64_t seed, uint64_t stream);  // in [0.5, 1]
double sample_beta(double alpha, double beta, uint64_t seed, uint64_t stream);

struct TrainViews {
  std::vector<ViewRecipe> teacher, student;
  bool shared = false;  // teacher == student (render once at both resolutions)
  float lambda = 1.0f;  // the batch's mixup coefficient (1 without mixup)
};

// Where a rank's share of a global batch sits in it. Views, mixup partners and the mixup
// coefficient are functions of (seed, step, global slot) only, so any split of a global batch
// over ranks and micro-batches renders the same images.
struct BatchSlots {
  int64_t step = 0;
  int64_t slot0 = 0;             // global slot of sizes[0]
  int64_t global_batch = 0;      // slots in the whole batch, on all ranks
  std::vector<ImageSize> sizes;  // the images of global slots [slot0, slot0 + sizes.size())
  // Mixup partner of slot0: the image of global slot (slot0 - 1) mod global_batch, at index
  // partner_image of the batch's sources (the rank loads it as an extra image, or holds it).
  ImageSize partner_size;
  int32_t partner_image = -1;
};

// True when the strategy mixes each slot with its neighbour (so a rank needs the partner image).
bool needs_mixup_partner(TeachingStrategy strategy, int64_t global_batch);

// Views of a rank's slots. Recipe i reads source image i (and the partner image for slot0's mix).
TrainViews make_train_views(const RecipeConfig& c, TeachingStrategy strategy, const BatchSlots& slots, uint64_t seed);
// Views of a whole global batch held by one rank: sizes[i] is the size of source image i.
TrainViews make_train_views(const RecipeConfig& c, TeachingStrategy strategy, const std::vector<ImageSize>& sizes,
                            uint64_t seed, int64_t step);
// Supervised training: a random crop + flip per image, no mixup.
std::vector<ViewRecipe> make_supervised_views(const RecipeConfig& c, const std::vector<ImageSize>& sizes,
                                              uint64_t seed, int64_t step, int64_t slot0 = 0);
// The part of an image of `size` that the views of global slot `global_slot` of step `step` read,
// as make_train_views (distill) or make_supervised_views (supervised) draw them: the union of
// the slot's crop boxes (its own random crop; the independent teacher's crop; the fixed
// teacher's centre crop). A slot's image is only ever rendered with its own slot's boxes, also
// as a mixup partner, so the loader can ask for this before decoding (data/image.h ViewNeed).
CropBox train_view_extent(const RecipeConfig& c, TeachingStrategy strategy, bool supervised, uint64_t seed,
                          int64_t step, int64_t global_slot, ImageSize size);

// A box in full-size pixels moved into a decoded image's pixels (data/image.h: full-size
// coordinate u is u * scale_num / 8 - offset there).
CropBox box_in_decoded(const CropBox& full, int offset_y, int offset_x, int scale_num);

// Evaluation: the centre crop of every image, no flip, no mixup.
std::vector<ViewRecipe> make_eval_views(const std::vector<ImageSize>& sizes, float crop_fraction);

}  // namespace kd
