#include "train/fp8_calibration.h"

#include <algorithm>

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
  total.calibration_images = std::min(source->size(), batches * batch_size);
  for_each_centre_crop_batch(ctx, source, total.calibration_images, batch_size, settings.threads,
                             settings.crop_fraction, settings.norm, resolutions,
                             [&](const std::vector<Tensor>& x, int64_t) {
                               for (size_t k = 0; k < teachers.size(); ++k) teachers[k]->forward(ctx, x[k], Mode::eval);
                             });
  for (Model* t : teachers) finish_fp8_calibration(*t);
  return total;
}

}  // namespace kd
