// From options to batches: opening the train/test sources (with the class-balanced subset),
// packing decoded images into one pixel buffer for the augment op, and the models a run uses
// (built, allocated and loaded from options or checkpoints).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "data/loader.h"
#include "data/recipe.h"
#include "data/sampler.h"
#include "data/source.h"
#include "engine/context.h"
#include "models/model.h"
#include "train/options.h"

namespace kd {

struct Datasets {
  SourcePtr train, test;
  int num_classes = 0;
};
// Errors name the option and the path (a missing dataset, an empty one, classes that disagree).
Datasets open_datasets(const DataOptions& data, bool need_train = true);

// The training order: shard by shard (data/sampler.h) when the source is packed shards
// (data.kind = shards, also a subset of them), else one seeded permutation of the dataset per epoch.
EpochSampler make_sampler(const DataSource& train, const DataOptions& data, uint64_t seed, int rank, int world_size);

// Decoded images back to back in one uint8 buffer, as the augment op reads them.
struct PackedImages {
  struct Placement {
    int offset_y = 0, offset_x = 0, scale_num = 8;  // as in data/image.h's Image
  };
  std::vector<uint8_t> pixels;
  std::vector<SourceImage> sources;
  std::vector<ImageSize> sizes;       // decoded
  std::vector<ImageSize> file_sizes;  // as the files hold them: training views are drawn on these
  std::vector<Placement> placements;  // where the decoded pixels sit in the files' images
};
PackedImages pack_images(const std::vector<Image>& images);
PackedImages pack_images(const std::vector<const Image*>& images);
// Moves recipes drawn on the file sizes onto the decoded pixels (region or DCT-scaled decodes;
// a whole, full-size decode is left as it is).
void place_views(std::vector<ViewRecipe>& recipes, const PackedImages& batch);

// Renders recipes of a packed batch at one or two resolutions (see ops::augment).
std::pair<Tensor, Tensor> render_views(Context& ctx, const PackedImages& batch, const std::vector<ViewRecipe>& recipes,
                                       const Normalization& norm, int64_t res1, int64_t res2 = 0);
// The same recipes at every resolution in `resolutions` (duplicates rendered once), one tensor
// per entry of `resolutions`.
std::vector<Tensor> render_views_at(Context& ctx, const PackedImages& batch, const std::vector<ViewRecipe>& recipes,
                                    const Normalization& norm, const std::vector<int64_t>& resolutions);

// A model for `arch` with `classes` outputs on ctx, from `weights` (timm-named safetensors, a kd
// checkpoint, or BiT's original .npz for a ResNetV2 arch; strict) or initialised from `seed` when weights is empty. frozen: for inference
// only (no gradients; Model::freeze_for_inference releases what inference does not read).
// reset_head: every weight but the classifier's (model.reset_head), which keeps its initialisation.
std::unique_ptr<Model> build_model(Context& ctx, const std::string& arch, int64_t classes, bool zero_head,
                                   const std::string& weights, uint64_t seed, bool frozen = false,
                                   bool reset_head = false);
// A model from a kd checkpoint alone: its metadata names the arch and the class count.
std::unique_ptr<Model> load_checkpoint_model(Context& ctx, const std::string& path, bool frozen = false);

// Teachers of a distillation run, frozen for inference (no gradient or unread fp32 memory).
std::vector<std::unique_ptr<Model>> build_teachers(Context& ctx, const TeacherOptions& t, int64_t classes);

// Logits of every teacher on x, stacked [teachers, n, classes] (param dtype, on the device).
Tensor teacher_logits(Context& ctx, const std::vector<Model*>& teachers, const Tensor& x);
// The same with one input per teacher (an ensemble at several resolutions).
Tensor teacher_logits(Context& ctx, const std::vector<Model*>& teachers, const std::vector<Tensor>& inputs);
// [teachers, n, classes] -> [1, n, classes]: the mean of the teachers' logits.
Tensor mean_over_teachers(Context& ctx, const Tensor& stacked);

}  // namespace kd
