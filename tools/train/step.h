// One training step, shared by `kd train`, `kd distill` and `kd bench`:
//   recipes -> augment (teacher and student views of the same recipe) -> teacher(s) forward
//   (inference only) -> student forward -> loss -> student backward -> optimizer,
// each phase marked on a PhaseTimer when one is given.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "engine/optim/optimizer.h"
#include "engine/timer.h"
#include "models/model.h"
#include "tools/train/options.h"
#include "tools/train/pipeline.h"

namespace kd {

struct StepInput {
  int64_t step = 0;
  const PackedImages* images = nullptr;
  const std::vector<int32_t>* labels = nullptr;
  const std::vector<int64_t>* indices = nullptr;  // source indices (the fixed teacher's cache key)
};

struct StepResult {
  double loss = 0;        // mean over the batch
  int64_t rows = 0;
  int64_t agree_top1 = 0; // distillation: student top-1 == teacher top-1 on the training views
  float mixup_lambda = 1;
  StepStats optim;
};

class StepRunner {
 public:
  StepRunner(const TrainOptions& options, Model& student, std::vector<Model*> teachers, Optimizer& optimizer);
  StepResult run(Context& ctx, const StepInput& in, PhaseTimer* timer = nullptr);

 private:
  Tensor fixed_teacher_logits(Context& ctx, const StepInput& in, const std::vector<ViewRecipe>& views);
  const TrainOptions& options_;
  Model& student_;
  std::vector<Model*> teachers_;
  Optimizer& optimizer_;
  RecipeConfig recipe_;
  Normalization norm_;
  TeachingStrategy strategy_ = TeachingStrategy::function_matching;
  DistillLossOptions loss_;
  int64_t student_res_, teacher_res_;
  // fixed strategy: teacher logits [teachers * classes] per source index (centre crops never change)
  std::unordered_map<int64_t, std::vector<float>> fixed_cache_;
};

}  // namespace kd
