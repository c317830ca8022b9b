// The training step as a CUDA graph (issue 16 item 5). With no host waits left in the step,
// what remains of the host's time per step is enqueueing ~1,000 launches; a graph replays them
// in one. A step is split where the host's work ends:
//   host:  render every micro-batch (recipes, views, uploads: sizes and arguments change every
//          step) and copy the views, labels or cached logits into the graph's fixed inputs;
//          zero the graph's statistics block and write the step's schedule into it
//          (Optimizer::begin_deferred);
//   graph: for each micro-batch the teachers' and the student's forward, the loss, the backward
//          and the gradient sync, the loss's all-reduce over the ranks, then the optimizer
//          (Optimizer::enqueue_deferred; Shampoo's runs after the graph): the same kernels on the same addresses every
//          step;
//   host:  copy the block into the step's ledger row.
// The first `eager_steps` run the graph's part directly (they autotune and size the pool and the
// workspace), the next one captures it (engine/cuda_graph.h) and every later one replays it. A
// capture that fails says why once and the run goes on uncaptured. On the CPU nothing is
// captured: the split step runs as it is, which tests that it computes the plain step's weights.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/comm.h"
#include "engine/cuda_graph.h"
#include "train/step.h"

namespace kd {

// run.cuda_graph ("auto": on a GPU with one rank where the step can be captured; "on": also
// several ranks, and on the CPU the split step uncaptured; "off") as LoopSettings::step_graph.
// The step cannot be captured with its statistics read on the host, with several ranks on a GPU
// whose transport cannot capture its collectives (NCCL can: the gradient buckets' and the loss's
// all-reduces become graph nodes, and the timeout watches each launch as one), or with KD_FAULT's
// non-finite values (host-side, per step). Throws for another value and for "on" where the step
// cannot be captured, saying why; *why_not (may be null) says why "auto" leaves a GPU run
// uncaptured ("" otherwise). With Shampoo (its gate read back, its work varying between steps)
// the graph holds forward, loss and backward, and the optimizer runs after it, uncaptured.
bool step_graph_on(const std::string& setting, const Communicator& comm, const Context& ctx, bool stats_on_device,
                   std::string* why_not = nullptr);

class StepGraph {
 public:
  StepGraph(StepRunner& runner, Communicator& comm, Context& ctx, int64_t eager_steps = 2);
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // One step (forward_backward and update): its statistics land in `stats` (a ledger row in the
  // context's memory). StepResult holds rows, lr and the mixup lambda; the rest is in `stats`.
  StepResult run(Context& ctx, const RankBatch& batch, double* stats);
  // Whether steps are replayed now; what the capture said (once: "captured ..." or "... failed:
  // ..."), empty when there is nothing new.
  bool replaying() const { return graph_ != nullptr; }
  // Whether a step may run uncaptured beside the graph (a profiled step, timed phase by phase):
  // the graph keeps its activations to itself, so such a step needs as much memory again. True
  // before a capture and on the CPU; false (saying so once) when the device's free memory and the
  // pool's shared cache would not hold it, so the run replays that step instead of ending out of
  // memory.
  bool room_for_an_uncaptured_step(Context& ctx);
  std::string take_message();

 private:
  void enqueue_body(Context& ctx);                     // the graph's part of the step
  void launch(Context& ctx, const std::string& what);  // the graph, then its watch
  bool optimizer_in_graph() const;
  void keep(Context& ctx, Tensor& slot, const Tensor& value);

  StepRunner& runner_;
  Communicator& comm_;
  int64_t eager_steps_;
  int64_t steps_ = 0;  // since the inputs' shapes last changed
  bool capture_failed_ = false;
  bool told_no_room_ = false;
  std::unique_ptr<CudaGraph> graph_;
  std::vector<MicroBatchInputs> inputs_;  // per micro-batch, at fixed addresses
  Tensor block_;                          // kernels/step_stats.h, at a fixed address
  int64_t step_ = 0;                      // the step being run (host-side hooks)
  // What one step adds to the student's host-side counters (BatchNorm's num_batches_tracked,
  // counted by the forward's host code, which a replay does not run): added after each replay.
  std::vector<double> counters_per_step_;
  std::string message_;
};

}  // namespace kd
