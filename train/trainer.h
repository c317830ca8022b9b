// `kd train` and `kd distill`: sets up a run (the ranks of the job, its context, data, models,
// optimizer, gradient sync, loader) and runs the loop. The run folder <out_dir>/<name> gets
// config.toml, metrics.jsonl, checkpoints/ (step_N.safetensors + latest), and at the end
// model.safetensors (the trained weights under timm's names, arch in the metadata) and
// summary.json; rank 0 writes them all. Also: exact resume from checkpoints (on any number of
// ranks that divides the global batch), periodic evaluation split over the ranks, a progress
// line, clean stops on SIGINT/SIGTERM, and a stop with a message (keeping the last good
// checkpoint) when the loss or the gradients go NaN/Inf.
#pragma once
#include <cstdint>
#include <string>

#include "train/loop.h"
#include "train/options.h"

namespace kd {

// resolved_config: the TOML of the whole configuration, saved as <run>/config.toml.
// resume: continue from the run folder's latest checkpoint when there is one.
TrainResult run_training(const TrainOptions& options, const std::string& resolved_config, bool resume);

// Steps a run takes: run.steps, or ceil(run.epochs * train images / batch).
int64_t total_steps(const TrainOptions& options, int64_t train_images);

}  // namespace kd
