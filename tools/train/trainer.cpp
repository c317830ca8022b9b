#include "tools/train/trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/sampler.h"
#include "engine/checkpoint.h"
#include "engine/safetensors.h"
#include "tools/train/pipeline.h"
#include "tools/train/run_log.h"
#include "tools/train/step.h"

namespace kd {

namespace {

std::atomic<int> g_stop_signal{0};

void on_stop_signal(int sig) {
  g_stop_signal.store(sig);
  std::signal(sig, SIG_DFL);  // a second signal stops at once
}

struct SignalGuard {
  using Handler = void (*)(int);
  Handler old_int, old_term;
  SignalGuard() {
    g_stop_signal.store(0);
    old_int = std::signal(SIGINT, on_stop_signal);
    old_term = std::signal(SIGTERM, on_stop_signal);
  }
  ~SignalGuard() {
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
  }
};

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  std::ostringstream o;
  o.precision(7);
  o << v;
  return o.str();
}

}  // namespace

int64_t total_steps(const TrainOptions& o, int64_t train_images) {
  if (o.run.steps > 0) return o.run.steps;
  return std::max<int64_t>(1, int64_t(std::ceil(o.run.epochs * double(train_images) / double(o.data.batch_size))));
}

TrainResult run_training(const TrainOptions& options_in, const std::string& resolved_config, bool resume) {
  TrainOptions o = options_in;
  o.validate();
  const auto started = std::chrono::steady_clock::now();
  TrainResult result;
  namespace fs = std::filesystem;
  result.run_dir = (fs::path(o.run.out_dir) / o.run.name).string();
  std::error_code ec;
  fs::create_directories(result.run_dir, ec);
  KD_CHECK(!ec, "cannot create the run folder ", result.run_dir, ": ", ec.message());

  auto ctx = make_context(o.run.device);
  const Datasets data = open_datasets(o.data);
  const int64_t total = total_steps(o, data.train->size());
  o.schedule.total_steps = total;
  if (o.schedule.warmup_steps == 0 && o.warmup_fraction > 0) o.schedule.warmup_steps = int64_t(o.warmup_fraction * double(total));

  CheckpointManager checkpoints(result.run_dir + "/checkpoints", int(o.checkpoint.keep));
  std::optional<std::string> resume_from = resume ? checkpoints.latest() : std::nullopt;
  RunLog log(result.run_dir, resume_from.has_value());
  const std::string config_path = result.run_dir + "/config.toml";
  if (resume_from) {
    std::ifstream old(config_path);
    std::stringstream previous;
    previous << old.rdbuf();
    if (old && previous.str() != resolved_config)
      log.line("note: the configuration differs from the one this run started with (" + config_path +
               "); resuming with the new one");
  }
  write_file_atomic(config_path, resolved_config);

  const ModelOptions& mo = o.trained_model();
  std::unique_ptr<Model> student =
      build_model(*ctx, mo.arch, data.num_classes, mo.zero_head, mo.weights, uint64_t(o.run.seed));
  std::vector<std::unique_ptr<Model>> teacher_models;
  std::vector<Model*> teachers;
  if (o.mode == RunMode::distill) {
    teacher_models = build_teachers(*ctx, o.teacher, data.num_classes);
    for (auto& t : teacher_models) teachers.push_back(t.get());
  }
  Optimizer optimizer(student->params(), o.optim, o.schedule, *ctx);
  int64_t start_step = 0;
  if (resume_from) {
    SafetensorsFile file = SafetensorsFile::open(*resume_from);
    student->params().load(file, *ctx);
    optimizer.load(file, *ctx);
    start_step = optimizer.steps_done();
    log.line("resuming " + result.run_dir + " from " + *resume_from + " at step " + std::to_string(start_step));
  } else if (resume) {
    log.line("no checkpoint in " + checkpoints.dir() + ": starting from step 0");
  }

  log.line(std::string(o.mode == RunMode::train ? "kd train: " : "kd distill: ") + student->summary() + " on " +
           ctx->describe());
  for (Model* t : teachers) log.line("  teacher " + t->summary());
  log.line("  data: " + data.train->describe() + "; eval: " + data.test->describe());
  log.line("  " + std::to_string(total) + " steps of " + std::to_string(o.data.batch_size) + " images (" +
           json_number(double(total) * double(o.data.batch_size) / double(data.train->size())) + " epochs), run folder " +
           result.run_dir);

  EpochSampler sampler(data.train->size(), o.data.batch_size, uint64_t(o.run.seed));
  LoaderOptions lo;
  lo.batch_size = int(o.data.batch_size);
  lo.num_threads = int(o.data.loader_threads);
  lo.prefetch_batches = int(o.data.prefetch);
  lo.first_step = start_step;
  lo.on_bad_image = [&log](const std::string& origin, const std::string& reason) {
    log.line("warning: skipping unreadable image " + origin + ": " + reason);
  };
  Loader loader(data.train, [&](int64_t step) { return step < total ? sampler.indices(step) : std::vector<int64_t>{}; },
                lo);

  StepRunner runner(o, *student, teachers, optimizer);
  const EvalSettings eval_cfg = eval_settings(o);
  TeacherEvalCache teacher_cache;
  SignalGuard signals;
  auto save_checkpoint = [&](int64_t steps_done) {
    SafetensorsWriter w;
    student->params().save(w, *ctx);
    optimizer.save(w, *ctx);
    w.set_metadata("arch", mo.arch);
    w.set_metadata("num_classes", std::to_string(data.num_classes));
    w.set_metadata("step", std::to_string(steps_done));
    w.set_metadata("mode", o.mode == RunMode::train ? "train" : "distill");
    w.set_metadata("config", resolved_config);
    return checkpoints.save(w, steps_done);
  };
  auto run_eval = [&](int64_t steps_done) {
    student->set_frozen(false);
    EvalResult e = evaluate(*ctx, *student, teachers, data.test, eval_cfg, &teacher_cache);
    log.line("step " + std::to_string(steps_done) + ": " + e.summary());
    log.metrics("{\"step\": " + std::to_string(steps_done) + ", \"epoch\": " +
                json_number(sampler.epoch_of(steps_done)) + ", \"eval\": " + e.json() + "}");
    return e;
  };

  // The training loop. Window sums feed the metrics lines; rates exclude evaluation time.
  double window_loss = 0, window_agree = 0, window_rows = 0, train_seconds = 0, window_seconds = 0;
  int64_t window_steps = 0, images_trained = 0;
  StepStats last{};
  for (int64_t step = start_step; step < total; ++step) {
    const auto step_start = std::chrono::steady_clock::now();
    std::optional<Batch> batch = loader.next();
    KD_CHECK(batch.has_value(), "the data loader ended early at step ", step);
    const PackedImages packed = pack_images(batch->images);
    StepInput in{step, &packed, &batch->labels, &batch->indices};
    const StepResult r = runner.run(*ctx, in);
    last = r.optim;
    if (!std::isfinite(r.loss) || !r.optim.finite) {
      const auto good = checkpoints.latest();
      log.line("error: " + std::string(!std::isfinite(r.loss) ? "the loss" : "the gradient norm") + " is " +
               (std::isnan(!std::isfinite(r.loss) ? r.loss : r.optim.grad_norm) ? "NaN" : "infinite") + " at step " +
               std::to_string(step) + " (lr " + json_number(r.optim.lr) + "); stopping. " +
               (good ? "The last good checkpoint is " + *good : std::string("No checkpoint was written yet.")) +
               " Lower optim.lr or check the data.");
      result.status = TrainResult::Status::diverged;
      result.steps = step;
      return result;
    }
    const double dt = seconds_since(step_start);
    train_seconds += dt, window_seconds += dt;
    window_loss += r.loss, window_agree += double(r.agree_top1), window_rows += double(r.rows), ++window_steps;
    images_trained += r.rows;
    const int64_t done = step + 1;
    const double rate = window_rows / std::max(window_seconds, 1e-9);
    const double eta = double(total - done) * train_seconds / double(done - start_step);
    const bool logged = done % o.run.log_every == 0 || done == total;
    log.progress(logged, done, total, sampler.epoch_of(done), rate, r.loss, r.optim.lr, eta);
    if (logged) {
      std::ostringstream m;
      m << "{\"step\": " << done << ", \"epoch\": " << json_number(sampler.epoch_of(done))
        << ", \"loss\": " << json_number(window_loss / double(window_steps)) << ", \"lr\": " << json_number(r.optim.lr)
        << ", \"grad_norm\": " << json_number(r.optim.grad_norm) << ", \"images_per_sec\": " << json_number(rate);
      if (o.mode == RunMode::distill)
        m << ", \"train_agreement\": " << json_number(window_agree / window_rows)
          << ", \"mixup_lambda\": " << json_number(r.mixup_lambda);
      m << ", \"bad_images\": " << loader.bad_images() << "}";
      log.metrics(m.str());
      window_loss = window_agree = window_rows = window_seconds = 0;
      window_steps = 0;
    }
    const bool budget_done = o.run.stop_after > 0 && done - start_step >= o.run.stop_after && done < total;
    const bool stopping = g_stop_signal.load() != 0 || budget_done;
    if (o.checkpoint.every > 0 && done % o.checkpoint.every == 0 && done < total && !stopping) save_checkpoint(done);
    if (o.eval.every > 0 && done % o.eval.every == 0 && done < total) run_eval(done);
    if (stopping) {
      const std::string path = save_checkpoint(done);
      const int sig = g_stop_signal.load();
      const std::string why = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "run.stop_after";
      log.line("stopped by " + why + " after step " + std::to_string(done) + "; checkpoint " + path +
               " (continue with --resume)");
      result.status = sig ? TrainResult::Status::interrupted : TrainResult::Status::paused;
      result.steps = done;
      return result;
    }
  }
  log.finish_progress();
  if (start_step < total || !resume_from) save_checkpoint(total);
  {
    // The trained weights alone, under timm's names, with what kd needs to rebuild the model.
    SafetensorsWriter w;
    student->params().save(w, *ctx);
    w.set_metadata("arch", mo.arch);
    w.set_metadata("num_classes", std::to_string(data.num_classes));
    w.set_metadata("step", std::to_string(total));
    w.set_metadata("mode", o.mode == RunMode::train ? "train" : "distill");
    w.set_metadata("config", resolved_config);
    w.write(result.run_dir + "/model.safetensors");
  }
  result.eval = run_eval(total);
  result.steps = total;
  result.wall_s = seconds_since(started);
  result.images_per_s = train_seconds > 0 ? double(images_trained) / train_seconds : 0;

  std::ostringstream s;
  s << "{\n  \"mode\": \"" << (o.mode == RunMode::train ? "train" : "distill") << "\",\n  \"steps\": " << total
    << ",\n  \"epochs\": " << json_number(sampler.epoch_of(total)) << ",\n  \"wall_s\": " << json_number(result.wall_s)
    << ",\n  \"images_per_sec\": " << json_number(result.images_per_s)
    << ",\n  \"student_top1\": " << json_number(result.eval.student_top1)
    << ",\n  \"student_top5\": " << json_number(result.eval.student_top5);
  if (result.eval.has_teacher)
    s << ",\n  \"teacher_top1\": " << json_number(result.eval.teacher_top1)
      << ",\n  \"agreement\": " << json_number(result.eval.agree_top1)
      << ",\n  \"agreement_top5\": " << json_number(result.eval.agree_top5) << ",\n  \"kl\": " << json_number(result.eval.kl);
  s << ",\n  \"final_lr\": " << json_number(last.lr) << ",\n  \"bad_images\": " << loader.bad_images()
    << ",\n  \"eval_images\": " << result.eval.images << "\n}\n";
  write_file_atomic(result.run_dir + "/summary.json", s.str());
  log.line("done: " + result.eval.summary() + "; " + std::to_string(total) + " steps in " +
           format_duration(result.wall_s) + ", summary in " + result.run_dir + "/summary.json");
  return result;
}

}  // namespace kd
