#include "train/run_log.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "engine/checkpoint.h"
#include "kernels/check.h"

namespace kd {

namespace {

// The lines of metrics.jsonl that a run resumed at `step` keeps: those before it, and those at it
// that the resumed run does not write again (it redoes only a completed run's final evaluation).
// A line that does not parse is the torn last write of a killed run and goes too.
std::vector<std::string> records_kept_on_resume(const std::string& path, int64_t step, bool final_eval_again) {
  std::vector<std::string> kept;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!record.is_object() || !record.contains("step") || !record["step"].is_number_integer()) continue;
    const int64_t s = record["step"].get<int64_t>();
    if (s < step || (s == step && !(final_eval_again && record.contains("eval")))) kept.push_back(line);
  }
  return kept;
}

}  // namespace

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  const long long t = (long long)std::llround(s);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", t / 3600, (t % 3600) / 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%llds", t);
  return buf;
}

RunLog::RunLog(const std::string& run_dir, const RunLogStart& start) : tty_(::isatty(STDERR_FILENO) != 0) {
  const std::string path = run_dir + "/metrics.jsonl";
  std::vector<std::string> kept;
  if (start.resumed_step) {
    kept = records_kept_on_resume(path, *start.resumed_step, start.final_eval_again);
    std::string text;
    for (const std::string& line : kept) text += line + "\n";
    write_file_atomic(path, text);
  }
  metrics_ = std::make_unique<AppendLog>(path, start.resumed_step.has_value());
  if (!start.tensorboard) return;
  if (!start.resumed_step) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(run_dir, ec))
      if (is_event_file_name(entry.path().filename().string())) std::filesystem::remove(entry.path(), ec);
  }
  events_ = std::make_unique<EventFileWriter>(run_dir);
  if (!start.resumed_step) return;
  events_->session_start(*start.resumed_step);
  for (const std::string& line : kept) {
    ScalarRecord r = scalars_of_record(line);
    if (r.step == *start.resumed_step) events_->scalars(r.step, r.scalars);
  }
}

void RunLog::metrics(const std::string& json_object) {
  if (events_) {
    // A failing event file (a full disk) must not end a days-long run: metrics.jsonl, which
    // keeps lines until it can write them, stays the record, and the events stop.
    try {
      const ScalarRecord r = scalars_of_record(json_object);
      events_->scalars(r.step, r.scalars);
    } catch (const Error& e) {
      line(std::string("warning: ") + e.what() + "; TensorBoard events stop here, metrics.jsonl goes on");
      events_.reset();
    }
  }
  const size_t waiting = metrics_->pending();
  const std::string error = metrics_->append(json_object + "\n");
  if (!error.empty()) {
    ++metrics_failures_;
    if (!metrics_failing_)
      line("warning: " + error + "; the run goes on, keeping metrics lines in memory until they can be written");
    metrics_failing_ = true;
  } else if (metrics_failing_) {
    metrics_failing_ = false;
    line("note: " + metrics_->path() + " is written again (" + std::to_string(waiting + 1) + " line(s) caught up" +
         (metrics_->dropped() > 0 ? ", " + std::to_string(metrics_->dropped()) + " lost" : std::string()) + ")");
  }
}

void RunLog::progress(bool logged, int64_t step, int64_t total, double epoch, double images_per_s, double loss, double lr,
                      double eta_s) {
  if (!tty_ && !logged) return;
  char buf[256];
  std::snprintf(buf, sizeof buf, "step %lld/%lld | epoch %.2f | %.0f img/s | loss %.4f | lr %.2e | ETA %s",
                (long long)step, (long long)total, epoch, images_per_s, loss, lr, format_duration(eta_s).c_str());
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", buf);
    progress_open_ = true;
  } else {
    std::fprintf(stderr, "%s\n", buf);
  }
  std::fflush(stderr);
}

void RunLog::finish_progress() {
  if (progress_open_) std::fputc('\n', stderr);
  progress_open_ = false;
}

void RunLog::line(const std::string& text) {
  finish_progress();
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  std::ostringstream o;
  o.precision(7);
  o << v;
  return o.str();
}

void RunLog::step(const StepRecord& r) {
  if (tty_) progress(false, r.step, r.total, r.epoch, r.images_per_s, r.loss, r.lr, r.eta_s);
}

void RunLog::logged(const StepRecord& r) {
  progress(true, r.step, r.total, r.epoch, r.images_per_s, r.loss, r.lr, r.eta_s);
  // Backpressure: a loader that cannot keep up shows on the console, not only in the metrics.
  if (r.data_wait_share >= 0.1)
    line("  the step waited for data " + std::to_string(int(std::lround(100 * r.data_wait_share))) +
         "% of the time (raise data.loader_threads, or data.jpeg_decoder=turbo for JPEGs)");
  std::ostringstream m;
  m << "{\"step\": " << r.step << ", \"epoch\": " << json_number(r.epoch) << ", \"loss\": " << json_number(r.loss)
    << ", \"lr\": " << json_number(r.lr) << ", \"grad_norm\": " << json_number(r.grad_norm)
    << ", \"images_per_sec\": " << json_number(r.images_per_s);
  if (r.distill)
    m << ", \"train_agreement\": " << json_number(r.train_agreement)
      << ", \"mixup_lambda\": " << json_number(r.mixup_lambda);
  if (r.skipped_nonfinite > 0) m << ", \"skipped_nonfinite\": " << r.skipped_nonfinite;
  m << ", \"bad_images\": " << r.bad_images << ", \"data_wait_share\": " << json_number(r.data_wait_share);
  for (const auto& [key, value] : r.extra) m << ", \"" << key << "\": " << json_number(value);
  m << "}";
  metrics(m.str());
}

void RunLog::evaluated(int64_t step, double epoch, const EvalResult& e) {
  line("step " + std::to_string(step) + ": " + e.summary());
  metrics("{\"step\": " + std::to_string(step) + ", \"epoch\": " + json_number(epoch) + ", \"eval\": " + e.json() +
          "}");
}

}  // namespace kd
