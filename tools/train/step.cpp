#include "tools/train/step.h"

#include <cmath>

#include "engine/ops.h"

namespace kd {

StepRunner::StepRunner(const TrainOptions& options, Model& student, std::vector<Model*> teachers,
                       Optimizer& optimizer)
    : options_(options), student_(student), teachers_(std::move(teachers)), optimizer_(optimizer) {
  recipe_ = options.augment.recipe();
  norm_ = options.augment.normalization();
  student_res_ = options.augment.resolution;
  teacher_res_ = options.augment.teacher_resolution > 0 ? options.augment.teacher_resolution : student_res_;
  if (options.mode == RunMode::distill) {
    KD_CHECK(!teachers_.empty(), "distillation needs at least one teacher");
    strategy_ = parse_teaching_strategy(options.distill.strategy);
    loss_.distance = parse_distill_distance(options.distill.distance);
    loss_.temperature = float(options.distill.temperature);
    loss_.label_smoothing = float(options.distill.label_smoothing);
  }
}

// The fixed teacher sees centre crops, so its logits depend on the source image alone: computed
// once per image, then served from memory (the paper's "precomputed teacher").
Tensor StepRunner::fixed_teacher_logits(Context& ctx, const StepInput& in, const std::vector<ViewRecipe>& views) {
  const int64_t rows = int64_t(views.size()), classes = student_.spec().num_classes, k = int64_t(teachers_.size());
  std::vector<int64_t> missing;
  for (int64_t i = 0; i < rows; ++i)
    if (!fixed_cache_.count((*in.indices)[size_t(i)])) missing.push_back(i);
  if (!missing.empty()) {
    std::vector<ViewRecipe> todo;
    for (int64_t i : missing) todo.push_back(views[size_t(i)]);
    Tensor x = render_views(ctx, *in.images, todo, norm_, teacher_res_).first;
    Tensor logits = ops::to_host_f32(ctx, teacher_logits(ctx, teachers_, x));
    const int64_t m = int64_t(missing.size());
    for (int64_t j = 0; j < m; ++j) {
      std::vector<float>& entry = fixed_cache_[(*in.indices)[size_t(missing[size_t(j)])]];
      entry.resize(size_t(k * classes));
      for (int64_t t = 0; t < k; ++t)
        std::copy_n(logits.data<float>() + (t * m + j) * classes, classes, entry.begin() + t * classes);
    }
  }
  Tensor host = Tensor::zeros_cpu({k, rows, classes}, DType::f32);
  for (int64_t i = 0; i < rows; ++i) {
    const std::vector<float>& entry = fixed_cache_.at((*in.indices)[size_t(i)]);
    for (int64_t t = 0; t < k; ++t)
      std::copy_n(entry.begin() + t * classes, classes, host.data<float>() + (t * rows + i) * classes);
  }
  if (!ctx.is_cuda()) return host;
  return host.to(Device::cuda, &ctx);
}

StepResult StepRunner::run(Context& ctx, const StepInput& in, PhaseTimer* timer) {
  auto mark = [&](const char* phase) {
    if (timer) timer->mark(phase);
  };
  const auto& sizes = in.images->sizes;
  const int64_t rows = int64_t(sizes.size());
  const float grad_scale = 1.0f / float(rows);
  const uint64_t seed = uint64_t(options_.run.seed);
  StepResult r;
  r.rows = rows;
  ops::LossResult loss;
  mark("augment");
  if (options_.mode == RunMode::train) {
    const auto views = make_supervised_views(recipe_, sizes, seed, in.step);
    Tensor x = render_views(ctx, *in.images, views, norm_, student_res_).first;
    mark("student_forward");
    Tensor logits = student_.forward(ctx, x, Mode::train);
    mark("loss");
    loss = ops::cross_entropy(ctx, logits, *in.labels, float(options_.run.label_smoothing), grad_scale, true);
  } else {
    const TrainViews views = make_train_views(recipe_, strategy_, sizes, seed, in.step);
    r.mixup_lambda = views.lambda;
    Tensor xs, xt, t_logits;
    if (views.shared) {
      const bool same = teacher_res_ == student_res_;
      std::tie(xs, xt) = render_views(ctx, *in.images, views.student, norm_, student_res_, same ? 0 : teacher_res_);
      if (same) xt = xs;
      mark("teacher_forward");
      t_logits = teacher_logits(ctx, teachers_, xt);
    } else {
      xs = render_views(ctx, *in.images, views.student, norm_, student_res_).first;
      mark("teacher_forward");
      if (strategy_ == TeachingStrategy::fixed) {
        t_logits = fixed_teacher_logits(ctx, in, views.teacher);
      } else {
        xt = render_views(ctx, *in.images, views.teacher, norm_, teacher_res_).first;
        t_logits = teacher_logits(ctx, teachers_, xt);
      }
    }
    xt = Tensor();
    mark("student_forward");
    Tensor s_logits = student_.forward(ctx, xs, Mode::train);
    mark("loss");
    DistillLossOptions o = loss_;
    o.grad_scale = grad_scale;
    loss = ops::distill_loss(ctx, t_logits, s_logits, o, true);
    for (int32_t rank : loss.student_rank) r.agree_top1 += rank == 0;
  }
  double sum = 0;
  for (float v : loss.loss_rows) sum += v;
  r.loss = sum / double(rows);
  mark("backward");
  student_.backward(ctx, loss.dlogits);
  mark("optimizer");
  if (std::isfinite(r.loss)) {
    r.optim = optimizer_.step(ctx);
  } else {
    r.optim.finite = false;
  }
  if (timer) timer->stop();
  return r;
}

}  // namespace kd
