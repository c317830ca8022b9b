// Optimizers over a model's parameter store, behind one interface: AdamW, SGD with momentum, and
// Shampoo with grafting (docs/shampoo.md). What they share lives here, once: the learning-rate
// schedule (linear warmup, then cosine, linear or constant), global-norm gradient clipping (also
// the NaN/Inf detector), decoupled weight decay on conv/dense kernels only (the store keeps them
// first), zeroing the gradients, and checkpointing state by parameter name. An optimizer adds
// only its update and its state.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/context.h"
#include "engine/param.h"

namespace kd {

class Communicator;
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

struct ShampooConfig {
  std::string graft = "adam";       // adam | adagrad | sgd: the step size each block takes
  int64_t block_size = 1024;        // largest side of a preconditioned block
  double beta2 = 0.999;             // statistics: L = b2 L + (1 - b2) G G^T (1: plain sums)
  double eps = 1e-4;                // damping, relative to the statistic's largest eigenvalue
  int64_t statistics_every = 1;     // steps between statistics updates
  int64_t precondition_every = 20;  // steps between inverse-root computations
  int64_t start_step = 25;          // first step (1-based) that uses Shampoo's direction
  int64_t root_delay = 1;           // roots computed at step t are used from step t + delay
  int64_t max_rejections = 10;      // root steps in a row with rejected roots before the run stops
};

struct OptimizerConfig {
  std::string name = "adam";  // adam | sgd | shampoo
  double lr = 1e-3;
  double weight_decay = 0.0;                      // decoupled (AdamW): w -= lr * wd * w, kernels only
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // adam, and shampoo's adam grafting
  double momentum = 0.9;                          // sgd, and shampoo's sgd grafting
  bool nesterov = false;
  double clip_norm = 1.0;  // global gradient norm; <= 0 disables clipping
  ShampooConfig shampoo;
};

struct StepStats {
  double lr = 0;
  double grad_norm = 0;  // before clipping
  bool finite = true;    // the gradient norm is finite (no NaN/Inf anywhere in the gradients)
};

// What one update gets from the shared part of the step.
struct UpdateArgs {
  int64_t step = 1;       // 1-based
  double lr = 0;          // scheduled
  double grad_scale = 1;  // clipping: the gradients are used times this
  // Device memory (kernels/step_stats.h), set when the update is to read the gate there instead
  // of grad_scale: it does nothing unless step_stats[kStatApplied] (gates_on_device optimizers).
  const double* step_stats = nullptr;
};

class Optimizer {
 public:
  // Throws for an unknown name (listing the known ones) and bad values (naming the key).
  static std::unique_ptr<Optimizer> create(ParamStore& params, const OptimizerConfig& config,
                                           const ScheduleConfig& schedule, Context& ctx);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Applies one update from the gradients (then zeroes them). With a non-finite gradient nothing
  // is changed and stats.finite is false.
  StepStats step(Context& ctx);
  // The same step without a host wait (issue 16): `stats` is a kStatWidth block in the context's
  // device memory (kernels/step_stats.h) that already holds the step's job-wide loss sum; the
  // gradients' square sum goes there, step_gate decides the clip factor and whether the update
  // happens (loss and norm finite), and the update kernels read both there. The gradients are
  // zeroed and the schedule moves on either way (as skip_step for a skipped step). Optimizers
  // whose update needs the factor on the host (Shampoo) read the block back: one wait.
  void step_deferred(Context& ctx, double* stats);
  // step_deferred in two halves, for a step whose kernels are captured once and replayed (a CUDA
  // graph): begin_deferred is the host's part (the schedule moves on; lr, Adam's bias
  // corrections and the step go into the block: kernels/optim.h StepScalars) and returns the
  // step's lr; enqueue_deferred only enqueues work that reads the block (norm, gate, update,
  // zeroing the gradients) and changes no host state, so its kernels are the same every step.
  // Optimizers that do not gate on the device read the block back there (one wait).
  double begin_deferred(Context& ctx, double* stats);
  void enqueue_deferred(Context& ctx, double* stats);
  // Counts a step without updating (its loss or gradients were not finite and the run skips
  // such steps): the gradients are zeroed, the schedule moves on, weights and state stay.
  void skip_step(Context& ctx);
  int64_t steps_done() const { return steps_done_; }
  double scheduled_lr_now() const { return scheduled_lr(schedule_, config_.lr, steps_done_); }
  const OptimizerConfig& config() const { return config_; }
  virtual const char* kind() const = 0;
  // Whether update() honours UpdateArgs::step_stats on a GPU (else step_deferred reads it back).
  virtual bool gates_on_device() const { return false; }

  // Data-parallel ranks, for optimizers that split work (Shampoo's roots); null: alone.
  virtual void set_communicator(Communicator* comm) {}
  // Extra values for the metrics lines ("shampoo_root_ms", ...).
  virtual std::vector<std::pair<std::string, double>> metrics() const { return {}; }

  // State under "optimizer.*" names (per parameter, in its file layout); load checks the kind,
  // and names any missing or wrong-shaped tensor.
  void save(SafetensorsWriter& out, Context& ctx) const;
  void load(const SafetensorsFile& file, Context& ctx);

 protected:
  Optimizer(ParamStore& params, const OptimizerConfig& config, const ScheduleConfig& schedule, Context& ctx);
  virtual void update(Context& ctx, const UpdateArgs& args) = 0;
  virtual void save_state(SafetensorsWriter& out, Context& ctx) const = 0;
  virtual void load_state(const SafetensorsFile& file, Context& ctx) = 0;

  // A zeroed buffer laid out as the store's values (one slice per parameter).
  Tensor make_flat_state(Context& ctx) const;
  // Saves `flat` as "optimizer.<state>.<parameter>" per parameter; loads it back (or from one
  // flat "optimizer.<state>" tensor in the first round's layout, as written before this round).
  void save_flat_state(SafetensorsWriter& out, Context& ctx, const std::string& state, const Tensor& flat) const;
  void load_flat_state(const SafetensorsFile& file, Context& ctx, const std::string& state, Tensor& flat) const;

  ParamStore& params_;
  OptimizerConfig config_;
  ScheduleConfig schedule_;
  int64_t steps_done_ = 0;
};

}  // namespace kd
