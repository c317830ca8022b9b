// What a run leaves behind and shows: <run>/metrics.jsonl (one JSON object per logged step or
// evaluation, each step once across resumes), the same numbers as TensorBoard scalars in
// <run>/events.out.tfevents.* (train/tensorboard.h), <run>/summary.json at the end, and on the
// console a single updating progress line (a plain line per log interval when stderr is not a
// terminal).
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "engine/file_write.h"

#include "train/observer.h"
#include "train/tensorboard.h"

namespace kd {

// Where the records start. A fresh run starts metrics.jsonl anew and removes the folder's old
// event files. A run resumed from its checkpoint at step S keeps the records up to S: metrics.jsonl
// is rewritten (atomically) without the records after S, which a killed run logged after its last
// checkpoint and the resumed run logs again; a new event file starts with TensorBoard's restart
// marker at S and repeats the kept records at S (the resume rule in train/tensorboard.h).
struct RunLogStart {
  std::optional<int64_t> resumed_step;
  bool final_eval_again = false;  // resumed after it had completed: the evaluation at S is redone
  bool tensorboard = true;        // run.tensorboard
};

class RunLog final : public LoopObserver {
 public:
  RunLog(const std::string& run_dir, const RunLogStart& start);
  // One record: a line of metrics.jsonl and an event of scalars, both flushed (a killed run
  // loses at most the current log interval). A line that cannot be written (a full disk) is kept
  // and written with the next one; the run goes on, with a warning when writing starts and stops
  // failing.
  void metrics(const std::string& json_object);
  int64_t metrics_write_failures() const { return metrics_failures_; }
  // The progress line: step/total, epoch, images/s, loss, lr, ETA. `logged` marks a step that
  // also went to metrics.jsonl: without a terminal only those steps are printed.
  void progress(bool logged, int64_t step, int64_t total, double epoch, double images_per_s, double loss, double lr,
                double eta_s);
  // A line of its own (ends any progress line first).
  void line(const std::string& text);
  void finish_progress();

  // LoopObserver: the console's progress line and metrics.jsonl.
  void message(const std::string& text) override { line(text); }
  void step(const StepRecord& r) override;
  void logged(const StepRecord& r) override;
  void evaluated(int64_t step, double epoch, const EvalResult& eval) override;

 private:
  std::unique_ptr<AppendLog> metrics_;
  int64_t metrics_failures_ = 0;
  bool metrics_failing_ = false;
  std::unique_ptr<EventFileWriter> events_;  // null when run.tensorboard is off
  bool tty_;
  bool progress_open_ = false;
};

std::string format_duration(double seconds);  // "1h02m", "3m12s", "45s"
std::string json_number(double v);            // 7 significant digits; null when not finite

}  // namespace kd
