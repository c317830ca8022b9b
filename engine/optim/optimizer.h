// Optimizers over a model's parameter store: AdamW and SGD with momentum, decoupled weight
// decay on conv/dense kernels only (the store keeps them first), global-norm gradient clipping
// folded into the update, and the learning-rate schedule (linear warmup, then cosine, linear or
// constant). State lives in flat buffers beside the parameters, so one update is two passes and
// a checkpoint is a handful of tensors.
#pragma once
#include <cstdint>
#include <string>

#include "engine/context.h"
#include "engine/param.h"

namespace kd {

class SafetensorsFile;
class SafetensorsWriter;

struct ScheduleConfig {
  int64_t total_steps = 1;
  int64_t warmup_steps = 0;
  std::string decay = "cosine";  // cosine | linear | constant
  double final_fraction = 0.0;   // lr at the end, as a fraction of the peak
};

// The learning rate at `step` (0-based): linear warmup from 0 to peak over warmup_steps, then the
// decay from peak to peak * final_fraction at total_steps.
double scheduled_lr(const ScheduleConfig& s, double peak_lr, int64_t step);

struct OptimizerConfig {
  std::string name = "adam";  // adam | sgd
  double lr = 1e-3;
  double weight_decay = 0.0;  // decoupled (AdamW): w -= lr * wd * w, kernels only
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double momentum = 0.9;
  bool nesterov = false;
  double clip_norm = 1.0;     // global gradient norm; <= 0 disables clipping
};

struct StepStats {
  double lr = 0;
  double grad_norm = 0;  // before clipping
  bool finite = true;    // the gradient norm is finite (no NaN/Inf anywhere in the gradients)
};

class Optimizer {
 public:
  Optimizer(ParamStore& params, const OptimizerConfig& config, const ScheduleConfig& schedule, Context& ctx);

  // Applies one update from the accumulated gradients (then zeroes them). With a non-finite
  // gradient nothing is changed and stats.finite is false.
  StepStats step(Context& ctx);
  int64_t steps_done() const { return steps_done_; }

  // State under "optimizer.*" names; load checks sizes and the optimizer kind.
  void save(SafetensorsWriter& out, Context& ctx) const;
  void load(const SafetensorsFile& file, Context& ctx);

 private:
  ParamStore& params_;
  OptimizerConfig config_;
  ScheduleConfig schedule_;
  int64_t steps_done_ = 0;
  Tensor m_, v_;  // adam: first and second moments; sgd: m_ is the momentum buffer
};

}  // namespace kd
