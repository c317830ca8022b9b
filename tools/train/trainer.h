// The training loop of `kd train` and `kd distill`. The run folder <out_dir>/<name> gets
// config.toml, metrics.jsonl, checkpoints/ (step_N.safetensors + latest), and at the end
// model.safetensors (the trained weights under timm's names, arch in the metadata) and
// summary.json. Also: exact resume from checkpoints,
// periodic evaluation, a progress line, clean stops on SIGINT/SIGTERM, and a stop with a
// message (keeping the last good checkpoint) when the loss or the gradients go NaN/Inf.
#pragma once
#include <cstdint>
#include <string>

#include "tools/train/evaluate.h"
#include "tools/train/options.h"

namespace kd {

struct TrainResult {
  // paused: run.stop_after reached (exit code 0: a planned stop)
  enum class Status { completed, paused, interrupted, diverged } status = Status::completed;
  std::string run_dir;
  int64_t steps = 0;  // steps done in total (across resumes)
  double wall_s = 0, images_per_s = 0;
  EvalResult eval;    // the final evaluation (completed runs)
  int exit_code() const {
    return status == Status::interrupted ? 130 : status == Status::diverged ? 3 : 0;
  }
};

// resolved_config: the TOML of the whole configuration, saved as <run>/config.toml.
// resume: continue from the run folder's latest checkpoint when there is one.
TrainResult run_training(const TrainOptions& options, const std::string& resolved_config, bool resume);

// Steps a run takes: run.steps, or ceil(run.epochs * train images / batch).
int64_t total_steps(const TrainOptions& options, int64_t train_images);

}  // namespace kd
