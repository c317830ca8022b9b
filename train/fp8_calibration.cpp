#include "train/fp8_calibration.h"

#include <algorithm>
#include <optional>

#include "data/loader.h"
#include "train/pipeline.h"
#include "train/render.h"

namespace kd {

Fp8Summary prepare_fp8_teachers(Context& ctx, const std::vector<Model*>& teachers,
                                const std::vector<int64_t>& resolutions, SourcePtr source, const EvalSettings& settings,
                                int64_t batches, int64_t batch_size) {
  KD_CHECK(resolutions.size() == teachers.size(), "fp8 calibration: ", resolutions.size(), " resolutions for ",
           teachers.size(), " teachers");
  KD_CHECK(source && source->size() > 0, "fp8 calibration needs training images (data.train)");
  Fp8Summary total;
  for (Model* t : teachers) {
    const Fp8Summary s = enable_fp8(*t, batches);
    total.fp8_convs += s.fp8_convs, total.other_convs += s.other_convs;
  }
  std::vector<std::vector<int64_t>> plan;
  const int64_t images = std::min(source->size(), batches * batch_size);
  for (int64_t b = 0; b < images; b += batch_size) {
    plan.emplace_back();
    for (int64_t i = b; i < std::min(images, b + batch_size); ++i) plan.back().push_back(i);
  }
  LoaderOptions lo;
  lo.batch_size = int(batch_size);
  lo.num_threads = settings.threads;
  lo.prefetch_batches = 2;
  Loader loader(source, fixed_plan(plan), lo);
  while (auto batch = loader.next()) {
    const PackedImages packed = pack_images(batch->images);
    auto views = make_eval_views(packed.file_sizes, settings.crop_fraction);
    place_views(views, packed);
    const std::vector<Tensor> x = render_views_at(ctx, packed, views, settings.norm, resolutions);
    for (size_t k = 0; k < teachers.size(); ++k) teachers[k]->forward(ctx, x[k], Mode::eval);
  }
  for (Model* t : teachers) finish_fp8_calibration(*t);
  return total;
}

}  // namespace kd
