// What one training step needs to know, and nothing more: the step does not see the run's
// options, so `kd bench`, tests and the loop configure it the same way.
#pragma once
#include <cstdint>
#include <vector>

#include "data/image.h"
#include "data/recipe.h"
#include "kernels/augment.h"
#include "kernels/distill_loss.h"

namespace kd {

enum class RunMode : uint8_t { train, distill };

struct StepConfig {
  RunMode mode = RunMode::distill;
  uint64_t seed = 0;
  RecipeConfig recipe;
  Normalization norm;
  int64_t student_resolution = 224;
  int64_t teacher_resolution = 224;
  std::vector<int64_t> teacher_resolutions;  // per teacher of an ensemble (empty: teacher_resolution for all)
  bool ensemble_logits = false;              // ensemble = mean of logits (else of softmaxes, in the loss)
  TeachingStrategy strategy = TeachingStrategy::function_matching;  // distill
  DistillLossOptions loss;                                          // distill (grad_scale is set per step)
  float label_smoothing = 0;                                        // train
  int64_t global_batch = 1;                                         // images per optimizer step, on all ranks together
  int64_t accumulate = 1;                                           // micro-batches per rank and step

  // Does a rank load the mixup partner of its first slot (an image of another rank's share)?
  bool needs_partner() const { return mode == RunMode::distill && needs_mixup_partner(strategy, global_batch); }
  int64_t teacher_res(size_t k) const { return teacher_resolutions.empty() ? teacher_resolution : teacher_resolutions[k]; }
  // What the views of global slot `global_slot` of step `step` read of an image of `size` (the
  // loader decodes only that): the union of the slot's crop boxes, at the largest resolution
  // any model sees.
  ViewNeed view_need(int64_t step, int64_t global_slot, ImageSize size) const;
};

}  // namespace kd
