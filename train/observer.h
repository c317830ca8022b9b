// What the training loop tells its listeners. Metrics sinks (metrics.jsonl and the console in
// RunLog; TensorBoard) implement LoopObserver; in a data-parallel job only rank 0 has them, so
// one process writes.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "train/evaluate.h"

namespace kd {

struct StepRecord {
  int64_t step = 0, total = 0;  // steps done, of total
  double epoch = 0;
  double loss = 0;  // mean over the global batch: this step (progress) or the log window (logged)
  double lr = 0, grad_norm = 0;
  double images_per_s = 0;  // the whole job's
  double eta_s = 0;
  bool distill = false;
  double train_agreement = 0;  // distill: student top-1 == teacher top-1 on the training views (log window)
  float mixup_lambda = 1;
  int64_t bad_images = 0;
  int64_t skipped_nonfinite = 0;  // steps skipped without an update so far (run.skip_nonfinite)
  double data_wait_share = 0;  // share of the step time spent waiting for the loader (log window)
  std::vector<std::pair<std::string, double>> extra;  // e.g. the optimizer's (Shampoo's root time)
};

class LoopObserver {
 public:
  virtual ~LoopObserver() = default;
  virtual void message(const std::string& line) {}  // a line of its own
  virtual void step(const StepRecord& record) {}    // every step
  virtual void logged(const StepRecord& record) {}  // every run.log_every steps and the last
  virtual void evaluated(int64_t step, double epoch, const EvalResult& eval) {}
  virtual void checkpointed(int64_t step, const std::string& path) {}
};

}  // namespace kd
