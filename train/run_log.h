// What a run leaves behind and shows: <run>/metrics.jsonl (one JSON object per logged step or
// evaluation, appended across resumes), <run>/summary.json at the end, and on the console a
// single updating progress line (a plain line per log interval when stderr is not a terminal).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

#include "engine/file_write.h"

#include "train/observer.h"

namespace kd {

class RunLog final : public LoopObserver {
 public:
  // resume: append to an existing metrics.jsonl instead of starting it anew.
  RunLog(const std::string& run_dir, bool resume);
  // One line. A line that cannot be written (a full disk) is kept and written with the next one;
  // the run goes on, with a warning when writing starts and stops failing.
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
  AppendLog metrics_;
  int64_t metrics_failures_ = 0;
  bool metrics_failing_ = false;
  bool tty_;
  bool progress_open_ = false;
};

std::string format_duration(double seconds);  // "1h02m", "3m12s", "45s"
std::string json_number(double v);            // 7 significant digits; null when not finite

}  // namespace kd
