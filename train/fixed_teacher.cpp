#include "train/fixed_teacher.h"

#include "engine/ops.h"
#include "train/pipeline.h"
#include "train/render.h"

namespace kd {

void FixedTeacherTable::compute(Context& ctx, const std::vector<Model*>& teachers, const SourcePtr& source,
                                const std::vector<int64_t>& resolutions, float crop_fraction,
                                const Normalization& norm, int loader_threads) {
  KD_CHECK(resolutions.size() == teachers.size(), "fixed teacher: ", resolutions.size(), " resolutions for ",
           teachers.size(), " teachers");
  KD_CHECK(!teachers.empty(), "the fixed teacher needs a teacher");
  images_ = source->size();
  teachers_ = int64_t(teachers.size());
  classes_ = teachers[0]->spec().num_classes;
  table_.assign(size_t(images_ * teachers_ * classes_), 0.0f);
  int64_t first = 0;
  for_each_centre_crop_batch(
      ctx, source, images_, kFixedTeacherBatch, loader_threads, crop_fraction, norm, resolutions,
      [&](const std::vector<Tensor>& x, int64_t rows) {
        const Tensor logits = ops::to_host_f32(ctx, teacher_logits(ctx, teachers, x));  // [teachers, rows, classes]
        for (int64_t t = 0; t < teachers_; ++t)
          for (int64_t r = 0; r < rows; ++r)
            std::copy_n(logits.data<float>() + (t * rows + r) * classes_, classes_,
                        table_.begin() + ((first + r) * teachers_ + t) * classes_);
        first += rows;
      },
      [](const std::string&, const std::string&) {});  // the training loader reports unreadable images
  KD_CHECK(first == images_, "fixed teacher: ", first, " of ", images_, " images computed");
}

Tensor FixedTeacherTable::logits(Context& ctx, const std::vector<int64_t>& indices) const {
  KD_CHECK(ready(), "the fixed teacher's logits were not computed");
  const int64_t rows = int64_t(indices.size());
  Tensor host = Tensor::zeros_cpu({teachers_, rows, classes_}, DType::f32);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = indices[size_t(r)];
    KD_CHECK(i >= 0 && i < images_, "fixed teacher: image ", i, " outside the ", images_, " computed");
    for (int64_t t = 0; t < teachers_; ++t)
      std::copy_n(table_.begin() + (i * teachers_ + t) * classes_, classes_,
                  host.data<float>() + (t * rows + r) * classes_);
  }
  if (!ctx.is_cuda()) return host;
  return upload(ctx, host);
}

}  // namespace kd
