#include "train/fixed_teacher.h"

#include "data/loader.h"
#include "engine/ops.h"
#include "train/pipeline.h"

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
  std::vector<std::vector<int64_t>> plan;
  for (int64_t b = 0; b < images_; b += kFixedTeacherBatch) {
    plan.emplace_back();
    for (int64_t i = b; i < std::min(images_, b + kFixedTeacherBatch); ++i) plan.back().push_back(i);
  }
  LoaderOptions lo;
  lo.batch_size = int(kFixedTeacherBatch);
  lo.num_threads = loader_threads;
  lo.prefetch_batches = 2;
  lo.on_bad_image = [](const std::string&, const std::string&) {};  // the training loader reports them
  Loader loader(source, fixed_plan(plan), lo);
  int64_t first = 0;
  while (auto batch = loader.next()) {
    const PackedImages packed = pack_images(batch->images);
    const int64_t rows = int64_t(batch->size());
    auto views = make_eval_views(packed.file_sizes, crop_fraction);
    place_views(views, packed);
    const std::vector<Tensor> x = render_views_at(ctx, packed, views, norm, resolutions);
    const Tensor logits = ops::to_host_f32(ctx, teacher_logits(ctx, teachers, x));  // [teachers, rows, classes]
    for (int64_t t = 0; t < teachers_; ++t)
      for (int64_t r = 0; r < rows; ++r)
        std::copy_n(logits.data<float>() + (t * rows + r) * classes_, classes_,
                    table_.begin() + ((first + r) * teachers_ + t) * classes_);
    first += rows;
  }
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
  return host.to(Device::cuda, &ctx);
}

}  // namespace kd
