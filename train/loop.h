// The training loop: steps from start_step to total over the loader's batches, with the
// job-wide decisions every rank must take together (stop on a signal, run.stop_after, a
// non-finite loss or gradient) agreed through one small host all-reduce per step (the loss on
// the device when the statistics stay there), and
// evaluation and checkpoints at the same steps on every rank. What it reports goes to
// observers; how a checkpoint is written and how evaluation runs are the caller's (hooks).
// A step whose job-wide loss or gradient is not finite stops the run (status diverged), or,
// while run.skip_nonfinite allows, is skipped without an update. A periodic checkpoint that
// cannot be written is reported and tried again at the next one (docs/reliability.md).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "data/loader.h"
#include "data/sampler.h"
#include "engine/comm.h"
#include "train/observer.h"
#include "train/step.h"

namespace kd {

struct TrainResult {
  // paused: run.stop_after reached (exit code 0: a planned stop)
  enum class Status { completed, paused, interrupted, diverged } status = Status::completed;
  std::string run_dir;
  int64_t steps = 0;  // steps done in total (across resumes)
  double wall_s = 0, images_per_s = 0;
  double final_lr = 0;
  int64_t bad_images = 0;
  std::vector<std::pair<std::string, int64_t>> bad_images_by_kind;  // "corrupt or truncated": 3, ...
  int64_t skipped_nonfinite = 0;    // steps skipped for a non-finite loss or gradient (whole run)
  int64_t checkpoint_failures = 0;  // periodic checkpoints that could not be written (this invocation)
  EvalResult eval;  // the final evaluation (completed runs)
  int exit_code() const { return status == Status::interrupted ? 130 : status == Status::diverged ? 3 : 0; }
};

struct LoopSettings {
  int64_t start_step = 0, total_steps = 1;
  int64_t log_every = 50, eval_every = 0, checkpoint_every = 0, stop_after = 0;
  // Per-phase times of the last step of every log window (PhaseTimer: CUDA events on a GPU, read
  // once per window), reported as ms_<phase> with the window's metrics.
  bool profile_phases = true;
  // run.step_stats: the step's loss, agreement and gradient norm stay on the device (a ledger
  // copied to the host at the end of each log window without a wait and accounted for when it
  // arrived; read with a wait before checkpoints, evaluations and stops); the step never waits for
  // the host. The optimizer skips a non-finite step on the device; the loop learns of it at the
  // read. False: read back every step.
  bool stats_on_device = false;
  // run.cuda_graph: the step's device work is captured once and replayed (train/step_graph.h)
  // except on profiled steps, which run uncaptured to time their phases. Needs stats_on_device.
  bool step_graph = false;
  int64_t skip_nonfinite = 0;  // run.skip_nonfinite: bad steps the whole run may skip
  // Counts the skipped steps, starting from the count of the checkpoint resumed from (the
  // checkpoint hook saves it); null: counted in the result only.
  int64_t* skipped_nonfinite = nullptr;
};

struct LoopHooks {
  // Collective: every rank calls it at the same step. Returns the path written (rank 0).
  std::function<std::string(int64_t steps_done)> save_checkpoint;
  std::function<std::optional<std::string>()> last_good_checkpoint;
  // Collective: the evaluation of the student (split over the ranks).
  std::function<EvalResult(int64_t steps_done)> evaluate;
};

// Asks the running loop to stop at the end of the current step (signal handlers set it).
void request_stop(int signal_number);
int stop_requested();  // the signal, or 0

// run.step_stats ("auto": on a GPU, when the collectives read its memory; "device"; "host") as
// LoopSettings::stats_on_device. Throws for another value, and for "device" with collectives that
// cannot read the context's memory.
bool step_stats_on_device(const std::string& setting, const Context& ctx, const Communicator& comm);

// Runs the loop. The result's eval is unset: the caller evaluates after a completed run.
TrainResult run_loop(Context& ctx, Communicator& comm, StepRunner& runner, Loader& loader, EpochSampler& sampler,
                     const LoopSettings& settings, const LoopHooks& hooks, const std::vector<LoopObserver*>& observers);

// A rank's share of a global batch as the loader delivers it (its slots, then the partner image
// when the step mixes across the rank boundary).
RankBatch rank_batch(Batch&& batch, int64_t slot0, bool has_partner);

}  // namespace kd
