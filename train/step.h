// One training step, shared by `kd train`, `kd distill` and `kd bench`. A rank's share of the
// global batch is split into `accumulate` micro-batches; each goes
//   recipes -> augment (teacher and student views of the same recipe) -> teacher(s) forward
//   (inference only) -> student forward -> loss -> student backward,
// then the gradients are summed over micro-batches and ranks (GradientSync, which overlaps the
// last backward with communication) and the optimizer updates the weights. Phases are marked
// on a PhaseTimer when one is given.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"
#include "engine/grad_sync.h"
#include "engine/optim/optimizer.h"
#include "engine/timer.h"
#include "models/model.h"
#include "train/fixed_teacher.h"
#include "train/pipeline.h"
#include "train/step_config.h"

namespace kd {

// This rank's share of global batch `step`, decoded: images[i] fills global slot slot0 + i.
// With function matching there is one more image at the end: the mixup partner of slot0 (global
// slot slot0 - 1, cyclically).
struct RankBatch {
  int64_t step = 0;
  int64_t slot0 = 0;
  std::vector<Image> images;
  std::vector<int32_t> labels;   // per slot
  std::vector<int64_t> indices;  // per slot: source index (the fixed teacher's cache key)
  bool has_partner = false;
  int64_t slots() const { return int64_t(labels.size()); }
};

// One micro-batch rendered and uploaded: everything its forward, loss and backward read, in the
// context's memory (StepRunner::render_micro_batch).
struct MicroBatchInputs {
  int64_t step = 0, rows = 0;
  Tensor student;                // the student's views [rows, r, r, 3], activation dtype
  std::vector<Tensor> teachers;  // distillation: teacher k's views (empty with fixed_logits)
  Tensor fixed_logits;           // the fixed strategy's cached teacher logits [k, rows, classes]
  Tensor labels;                 // supervised: i32 [rows], checked against the class count
};

struct StepResult {
  double loss_sum = 0;  // over this rank's rows (the step's loss is the sum over ranks / global batch)
  int64_t rows = 0;
  int64_t agree_top1 = 0;  // distillation: student top-1 == teacher top-1 on the training views
  float mixup_lambda = 1;
  StepStats optim;  // from the summed gradients: the same on every rank
};

class StepRunner {
 public:
  StepRunner(const StepConfig& config, Model& student, std::vector<Model*> teachers, Optimizer& optimizer,
             GradientSync& sync);
  StepResult run(Context& ctx, const RankBatch& batch, PhaseTimer* timer = nullptr, double* stats = nullptr);
  // run() in two halves, so that the caller can decide between them whether the update happens
  // (the training loop skips it when the job-wide loss is not finite).
  // With `stats` (a kernels/step_stats.h block in the context's device memory) nothing is read
  // back: the losses and agreement are added there, StepResult's loss_sum and agree_top1 stay 0,
  // and update() is the optimizer's step_deferred, which skips a non-finite step on the device
  // (the block's loss sum must be the job-wide one by then).
  StepResult forward_backward(Context& ctx, const RankBatch& batch, PhaseTimer* timer = nullptr,
                              double* stats = nullptr);
  void update(Context& ctx, StepResult& r, PhaseTimer* timer = nullptr, double* stats = nullptr);
  // After a step whose loss or gradients were not finite: the phase whose output on this rank
  // was not ("the teacher forward (the teachers' logits are not finite)"), or "" when the logits
  // were finite. Reads the step's logits back, so it is for the failure path only.
  std::string nonfinite_phase(Context& ctx) const;
  // The same from a step's statistics block (its non-finite flags), read later.
  static std::string nonfinite_phase(const double* stats);
  // forward_backward's parts, for a step whose device work is captured once and replayed
  // (train/step_graph.h): check_batch names what does not fit; render_micro_batch is the host's
  // part of micro-batch k (recipes, views, uploads) and compute_micro_batch only queues device
  // work that reads `in` (forward, loss, backward, the gradient sync), between begin_step() and
  // end_step().
  void check_batch(const RankBatch& batch) const;
  void begin_step();
  MicroBatchInputs render_micro_batch(Context& ctx, const RankBatch& batch, int64_t k, StepResult& r,
                                      PhaseTimer* timer = nullptr);
  void compute_micro_batch(Context& ctx, const MicroBatchInputs& in, int64_t k, StepResult& r,
                           PhaseTimer* timer = nullptr, double* stats = nullptr);
  void end_step(Context& ctx, int64_t step);
  const StepConfig& config() const { return config_; }
  const Optimizer& optimizer() const { return optimizer_; }
  Optimizer& optimizer() { return optimizer_; }
  const FixedTeacherTable* fixed_teacher() const { return fixed_; }
  Model& student() { return student_; }
  // The fixed strategy's precomputed logits (by source index). Without them the fixed teacher
  // runs on each micro-batch's centre crops.
  void set_fixed_teacher(const FixedTeacherTable* table) { fixed_ = table; }

 private:
  StepConfig config_;
  Model& student_;
  std::vector<Model*> teachers_;
  Optimizer& optimizer_;
  GradientSync& sync_;
  const FixedTeacherTable* fixed_ = nullptr;
  std::vector<Tensor> teacher_logits_, student_logits_;  // this step's, per micro-batch
};

}  // namespace kd
