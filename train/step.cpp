#include "train/step.h"

#include <algorithm>
#include <cmath>

#include "engine/fault_injection.h"
#include "engine/ops.h"
#include "kernels/step_stats.h"

namespace kd {

namespace {

// Test hook (KD_FAULT=nan.<site>:step=<s>): the first element of `t` becomes `value`.
void poison_first_element(const Tensor& t, float value, Context& ctx) {
  Tensor host = Tensor::zeros_cpu({1}, t.dtype());
  if (t.dtype() == DType::f64)
    host.data<double>()[0] = value;
  else if (t.dtype() == DType::bf16)
    host.data<bf16>()[0] = float_to_bf16(value);
  else
    host.data<float>()[0] = value;
  t.reshape({t.numel()}).slice_rows(0, 1).copy_from(host, &ctx);
}

bool all_finite(const Tensor& t, Context& ctx) {
  const Tensor host = t.to(Device::cpu, &ctx);
  for (int64_t i = 0; i < host.numel(); ++i) {
    const double v = host.dtype() == DType::f64    ? host.data<double>()[i]
                     : host.dtype() == DType::bf16 ? double(bf16_to_float(host.data<bf16>()[i]))
                                                   : double(host.data<float>()[i]);
    if (!std::isfinite(v)) return false;
  }
  return true;
}

void inject_nonfinite(const char* site, int64_t step, const Tensor& t, Context& ctx) {
  if (const auto v = fault::nonfinite(site, step)) poison_first_element(t, *v, ctx);
}

}  // namespace

ViewNeed StepConfig::view_need(int64_t step, int64_t global_slot, ImageSize size) const {
  const CropBox box = train_view_extent(recipe, strategy, mode == RunMode::train, seed, step, global_slot, size);
  int64_t res = student_resolution;
  if (mode == RunMode::distill) {
    res = std::max(res, teacher_resolution);
    for (int64_t r : teacher_resolutions) res = std::max(res, r);
  }
  return ViewNeed{box.y0, box.x0, box.h, box.w, int(res), int(res)};
}

StepRunner::StepRunner(const StepConfig& config, Model& student, std::vector<Model*> teachers, Optimizer& optimizer,
                       GradientSync& sync)
    : config_(config), student_(student), teachers_(std::move(teachers)), optimizer_(optimizer), sync_(sync) {
  KD_CHECK(config.global_batch > 0 && config.accumulate > 0, "step: global batch ", config.global_batch,
           " and accumulate ", config.accumulate, " must be positive");
  KD_CHECK(sync.accumulate() == config.accumulate, "step: the gradient sync accumulates ", sync.accumulate(),
           " micro-batches, the step ", config.accumulate);
  if (config.mode == RunMode::distill) KD_CHECK(!teachers_.empty(), "distillation needs at least one teacher");
  student_.set_input_gradient(false);  // the step never reads the images' gradient
}

MicroBatchInputs StepRunner::render_micro_batch(Context& ctx, const RankBatch& batch, int64_t k, StepResult& r,
                                                PhaseTimer* timer) {
  if (timer) timer->mark("augment");
  const StepConfig& c = config_;
  const int64_t count = batch.slots() / c.accumulate, first = k * count;
  // The micro-batch's images, then (function matching) its first slot's mixup partner: the
  // rank's extra image for the rank's first slot, else the slot before.
  std::vector<const Image*> sources;
  for (int64_t i = first; i < first + count; ++i) sources.push_back(&batch.images[size_t(i)]);
  const bool mix = c.needs_partner();
  if (mix) {
    KD_CHECK(first > 0 || batch.has_partner, "step ", batch.step,
             ": function matching needs the mixup partner of slot ", batch.slot0);
    sources.push_back(first > 0 ? &batch.images[size_t(first - 1)] : &batch.images[size_t(batch.slots())]);
  }
  const PackedImages packed = pack_images(sources);
  BatchSlots slots;
  slots.step = batch.step;
  slots.slot0 = batch.slot0 + first;
  slots.global_batch = c.global_batch;
  // Views are drawn on the images' sizes in their files, then moved onto the decoded pixels
  // (the loader may have decoded only the part they read, at a reduced scale).
  slots.sizes.assign(packed.file_sizes.begin(), packed.file_sizes.begin() + count);
  if (mix) slots.partner_size = packed.file_sizes.back(), slots.partner_image = int32_t(count);

  MicroBatchInputs in;
  in.step = batch.step;
  in.rows = count;
  if (c.mode == RunMode::train) {
    auto views = make_supervised_views(c.recipe, slots.sizes, c.seed, batch.step, slots.slot0);
    place_views(views, packed);
    in.student = render_views(ctx, packed, views, c.norm, c.student_resolution).first;
    // The labels go up here, checked on the host, so that the loss only reads device memory.
    Tensor labels = Tensor::zeros_cpu({count}, DType::i32);
    const int64_t classes = student_.spec().num_classes;
    for (int64_t i = 0; i < count; ++i) {
      const int32_t label = batch.labels[size_t(first + i)];
      KD_CHECK(label >= 0 && label < classes, "step ", batch.step, ": slot ", batch.slot0 + first + i,
               " has label ", label, " outside the student's ", classes, " classes");
      labels.data<int32_t>()[i] = label;
    }
    in.labels = ctx.is_cuda() ? upload(ctx, labels) : labels;
    return in;
  }
  TrainViews views = make_train_views(c.recipe, c.strategy, slots, c.seed);
  place_views(views.student, packed);
  if (views.shared)
    views.teacher = views.student;
  else
    place_views(views.teacher, packed);
  r.mixup_lambda = views.lambda;
  // Each teacher sees the recipe at its own resolution: views[0] is the student's, views[1 + k]
  // teacher k's (one upload; equal resolutions rendered once).
  std::vector<int64_t> resolutions{c.student_resolution};
  for (size_t t = 0; t < teachers_.size(); ++t) resolutions.push_back(c.teacher_res(t));
  if (views.shared) {
    std::vector<Tensor> xv = render_views_at(ctx, packed, views.student, c.norm, resolutions);
    in.student = xv[0];
    in.teachers.assign(xv.begin() + 1, xv.end());
    return in;
  }
  in.student = render_views(ctx, packed, views.student, c.norm, c.student_resolution).first;
  if (c.strategy == TeachingStrategy::fixed && fixed_) {
    const std::vector<int64_t> indices(batch.indices.begin() + first, batch.indices.begin() + first + count);
    in.fixed_logits = fixed_->logits(ctx, indices);
  } else {
    in.teachers = render_views_at(ctx, packed, views.teacher, c.norm,
                                  std::vector<int64_t>(resolutions.begin() + 1, resolutions.end()));
  }
  return in;
}

void StepRunner::compute_micro_batch(Context& ctx, const MicroBatchInputs& in, int64_t k, StepResult& r,
                                     PhaseTimer* timer, double* stats) {
  auto mark = [&](const char* phase) {
    if (timer) timer->mark(phase);
  };
  const StepConfig& c = config_;
  const float grad_scale = 1.0f / float(c.global_batch);  // gradients: sums over the global batch
  ops::LossResult loss;
  if (c.mode == RunMode::train) {
    mark("student_forward");
    Tensor logits = student_.forward(ctx, in.student, Mode::train);
    student_logits_.push_back(logits);
    if (stats) ops::flag_nonfinite(ctx, logits, stats + kStatStudentNonfinite);
    mark("loss");
    loss = ops::cross_entropy(ctx, logits, in.labels, c.label_smoothing, grad_scale, true, !stats);
  } else {
    mark("teacher_forward");
    Tensor t_logits = in.fixed_logits.defined() ? in.fixed_logits : teacher_logits(ctx, teachers_, in.teachers);
    if (c.ensemble_logits && t_logits.dim(0) > 1) t_logits = mean_over_teachers(ctx, t_logits);
    if (k == 0) inject_nonfinite("teacher_logits", in.step, t_logits, ctx);
    mark("student_forward");
    Tensor s_logits = student_.forward(ctx, in.student, Mode::train);
    teacher_logits_.push_back(t_logits), student_logits_.push_back(s_logits);
    if (stats) {  // the phase of a non-finite step, named when the block is read
      ops::flag_nonfinite(ctx, t_logits, stats + kStatTeacherNonfinite);
      ops::flag_nonfinite(ctx, s_logits, stats + kStatStudentNonfinite);
    }
    mark("loss");
    DistillLossOptions o = c.loss;
    o.grad_scale = grad_scale;
    loss = ops::distill_loss(ctx, t_logits, s_logits, o, true, !stats);
    for (int32_t rank : loss.student_rank) r.agree_top1 += rank == 0;
  }
  if (const auto v = fault::nonfinite("loss", in.step); v && k == 0) {
    if (stats)
      poison_first_element(loss.loss, *v, ctx);
    else
      loss.loss_rows.at(0) = *v;
  }
  if (stats)
    ops::add_to_step_stats(ctx, loss, stats);
  else
    for (float v : loss.loss_rows) r.loss_sum += v;
  r.rows += in.rows;
  mark("backward");
  sync_.begin_micro_batch(k, ctx);
  student_.backward(ctx, loss.dlogits);
  if (k == c.accumulate - 1) mark("grad_sync");
  sync_.end_micro_batch(k, ctx);
}

void StepRunner::check_batch(const RankBatch& batch) const {
  const int64_t n = batch.slots(), k_count = config_.accumulate;
  KD_CHECK(n > 0 && n % k_count == 0, "step ", batch.step, ": ", n, " images on this rank do not split into ", k_count,
           " micro-batches (optim.accumulate)");
  KD_CHECK(int64_t(batch.images.size()) == n + (batch.has_partner ? 1 : 0) && int64_t(batch.indices.size()) == n &&
               int64_t(batch.labels.size()) == n,
           "step ", batch.step, ": ", batch.images.size(), " images, ", batch.labels.size(), " labels and ",
           batch.indices.size(), " indices for ", n, " slots");
}

StepResult StepRunner::forward_backward(Context& ctx, const RankBatch& batch, PhaseTimer* timer, double* stats) {
  check_batch(batch);
  StepResult r;
  begin_step();
  for (int64_t k = 0; k < config_.accumulate; ++k)
    compute_micro_batch(ctx, render_micro_batch(ctx, batch, k, r, timer), k, r, timer, stats);
  end_step(ctx, batch.step);
  return r;
}

void StepRunner::begin_step() { teacher_logits_.clear(), student_logits_.clear(); }

void StepRunner::end_step(Context& ctx, int64_t step) {
  inject_nonfinite("student_grads", step, student_.params().grads(), ctx);
}

namespace {
const char* const kTeacherPhase = "the teacher forward (the teachers' logits are not finite)";
const char* const kStudentPhase = "the student forward (the student's logits are not finite)";
}  // namespace

std::string StepRunner::nonfinite_phase(Context& ctx) const {
  for (const Tensor& t : teacher_logits_)
    if (!all_finite(t, ctx)) return kTeacherPhase;
  for (const Tensor& s : student_logits_)
    if (!all_finite(s, ctx)) return kStudentPhase;
  return "";
}

std::string StepRunner::nonfinite_phase(const double* stats) {
  if (stats[kStatTeacherNonfinite] != 0) return kTeacherPhase;
  if (stats[kStatStudentNonfinite] != 0) return kStudentPhase;
  return "";
}

void StepRunner::update(Context& ctx, StepResult& r, PhaseTimer* timer, double* stats) {
  if (timer) timer->mark("optimizer");
  if (stats) {
    r.optim.lr = optimizer_.scheduled_lr_now();
    optimizer_.step_deferred(ctx, stats);
  } else {
    r.optim = optimizer_.step(ctx);
  }
  if (timer) timer->stop();
}

StepResult StepRunner::run(Context& ctx, const RankBatch& batch, PhaseTimer* timer, double* stats) {
  StepResult r = forward_backward(ctx, batch, timer, stats);
  update(ctx, r, timer, stats);
  return r;
}

}  // namespace kd
