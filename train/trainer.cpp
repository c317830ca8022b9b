#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/sampler.h"
#include "engine/autotune_cache.h"
#include "engine/checkpoint.h"
#include "engine/safetensors.h"
#include "engine/version.h"
#if KD_HAVE_CUDA
#include "kernels/conv_fp8.h"
#endif
#include "train/data_fingerprint.h"
#include "train/distributed.h"
#include "train/fp8_calibration.h"
#include "train/pipeline.h"
#include "train/run_log.h"
#include "train/step.h"
#include "train/step_graph.h"

namespace kd {

namespace {

void on_stop_signal(int sig) {
  request_stop(sig);
  std::signal(sig, SIG_DFL);  // a second signal stops at once
}

struct SignalGuard {
  using Handler = void (*)(int);
  Handler old_int, old_term;
  SignalGuard() {
    request_stop(0);
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

// Global batch, ranks and micro-batches must fit together; says how when they do not.
void check_batch_split(const TrainOptions& o, int ranks) {
  const int64_t b = o.data.batch_size, k = o.accumulate;
  if (b % (int64_t(ranks) * k) == 0) return;
  std::string fits;
  for (int64_t kk = 1; kk <= b && fits.size() < 40; ++kk)
    if (b % (int64_t(ranks) * kk) == 0) fits += (fits.empty() ? "" : ", ") + std::to_string(kk);
  KD_FAIL("data.batch_size = ", b, " (the global batch) does not split over ", ranks,
          " rank(s) x optim.accumulate = ", k, " micro-batches; ",
          fits.empty() ? "use a batch size that " + std::to_string(ranks) + " ranks divide"
                       : "optim.accumulate values that fit: " + fits);
}

// The metadata every kd model file carries (what `kd eval` and resumes need to rebuild it).
void describe_model(SafetensorsWriter& w, const TrainOptions& o, const std::string& arch, int64_t classes, int64_t step,
                    const std::string& resolved_config) {
  w.set_metadata("arch", arch);
  w.set_metadata("num_classes", std::to_string(classes));
  w.set_metadata("step", std::to_string(step));
  w.set_metadata("mode", o.mode == RunMode::train ? "train" : "distill");
  w.set_metadata("config", resolved_config);
  w.set_metadata("kd_version", kVersion);
}

// A resume on data other than the checkpoint's: an error naming what changed, unless allowed.
template <typename Message>
void check_same_data(const SafetensorsFile& checkpoint, const DataFingerprint& now, bool allowed, Message& message) {
  const auto stored = checkpoint.metadata().find("data_fingerprint");
  if (stored == checkpoint.metadata().end()) return;  // written before kd kept fingerprints
  const std::string change =
      describe_data_change(DataFingerprint::from_json(stored->second, checkpoint.path()), now);
  if (change.empty()) return;
  KD_CHECK(allowed, "the training data changed since ", checkpoint.path(), " was written: ", change,
           ". Resuming would not continue the same run; set run.allow_data_change=true if you mean it");
  message("warning: the training data changed since " + checkpoint.path() + " was written (" + change +
          "); resuming anyway (run.allow_data_change)");
}

}  // namespace

int64_t total_steps(const TrainOptions& o, int64_t train_images) {
  if (o.run.steps > 0) return o.run.steps;
  return std::max<int64_t>(1, int64_t(std::ceil(o.run.epochs * double(train_images) / double(o.data.batch_size))));
}

TrainResult run_training(const TrainOptions& options_in, const std::string& resolved_config, bool resume) {
  TrainOptions o = options_in;
  o.validate();
  configure_cpu_path(o.run.cpu_backend, o.run.threads);
  const auto started = std::chrono::steady_clock::now();
  Distributed dist = start_distributed(o.comm, o.run.device);
  Communicator& comm = *dist.comm;
  const bool writer = comm.rank() == 0;  // rank 0 writes every file and the console
  check_batch_split(o, comm.size());

  TrainResult result;
  namespace fs = std::filesystem;
  result.run_dir = (fs::path(o.run.out_dir) / o.run.name).string();
  if (writer) {
    std::error_code ec;
    fs::create_directories(result.run_dir, ec);
    KD_CHECK(!ec, "cannot create the run folder ", result.run_dir, ": ", ec.message());
    remove_temporary_files(result.run_dir);  // left by a kill in the middle of a write
  }
  Context* ctx = dist.ctx.get();
  // cuDNN autotuning on the GPU; the choices persist for the next run (engine/autotune_cache.h).
  std::unique_ptr<AutotuneCache> tuning;
  std::string tuning_note;
  if (ctx->is_cuda()) {
    const std::string& asked = o.run.autotune_cache;
    const std::string path = asked.empty() ? default_autotune_cache_path() : asked == "off" ? "" : asked;
    if (o.run.autotune) tuning = std::make_unique<AutotuneCache>(path);
    ctx->set_autotune(o.run.autotune, tuning.get());
    ctx->set_groupnorm_one_pass(o.run.groupnorm_one_pass);
    ctx->set_conv_pad_channels(o.run.conv_pad_channels);
    ctx->set_copy_stream(o.run.copy_stream);
    ctx->set_conv_wgrad_im2col(o.run.conv_wgrad_im2col);
    tuning_note = !o.run.autotune ? "cuDNN autotuning off (run.autotune)"
                  : path.empty()  ? "cuDNN autotuning on, choices not kept (run.autotune_cache)"
                                  : "cuDNN autotuning on, " + std::to_string(tuning->size()) +
                                       " earlier choice(s) in " + path;
  }
  const Datasets data = open_datasets(o.data);
  KD_CHECK(o.mode == RunMode::distill || data.train->num_classes() > 0, "kd train learns from labels, and ",
           data.train->describe(), " has none (data.train_kind = images is for kd distill)");
  const int64_t total = total_steps(o, data.train->size());
  o.schedule.total_steps = total;
  if (o.schedule.warmup_steps == 0 && o.warmup_fraction > 0)
    o.schedule.warmup_steps = int64_t(o.warmup_fraction * double(total));

  CheckpointManager checkpoints(result.run_dir + "/checkpoints", int(o.checkpoint.keep));
  std::vector<std::string> unloadable;
  std::optional<std::string> resume_from = resume ? checkpoints.latest(&unloadable) : std::nullopt;
  // The run log opens once the checkpoint is loaded (it starts where the checkpoint left off);
  // what is said before that waits for it.
  std::unique_ptr<RunLog> log;
  std::vector<LoopObserver*> observers;
  std::vector<std::string> before_log;
  auto message = [&](const std::string& line) {
    if (writer && !log)
      before_log.push_back(line);
    else
      for (LoopObserver* obs : observers) obs->message(line);
  };
  for (const std::string& why : unloadable) message("warning: passing over a checkpoint that does not load: " + why);
  const ModelOptions& mo = o.trained_model();
  std::unique_ptr<Model> student =
      build_model(*ctx, mo.arch, data.num_classes, mo.zero_head, mo.weights, uint64_t(o.run.seed), false,
                  mo.reset_head);
  // Synced BatchNorm: every rank normalises with the statistics of the whole global micro-batch.
  const int64_t synced_norms = mo.sync_bn ? student->sync_batch_statistics(&comm) : 0;
  std::vector<std::unique_ptr<Model>> teacher_models;
  std::vector<Model*> teachers;
  if (o.mode == RunMode::distill) {
    teacher_models = build_teachers(*ctx, o.teacher, data.num_classes);
    for (auto& t : teacher_models) teachers.push_back(t.get());
  }
  std::unique_ptr<Optimizer> optimizer_owner = Optimizer::create(student->params(), o.optim, o.schedule, *ctx);
  Optimizer& optimizer = *optimizer_owner;
  optimizer.set_communicator(&comm);
  int64_t start_step = 0;
  int64_t skipped_nonfinite = 0;
  const DataFingerprint data_fingerprint = fingerprint_data(*data.train, o.data.train);
  if (resume_from) {
    SafetensorsFile file = SafetensorsFile::open(*resume_from);
    check_same_data(file, data_fingerprint, o.run.allow_data_change, message);
    student->params().load(file, *ctx);
    optimizer.load(file, *ctx);
    start_step = optimizer.steps_done();
    const auto skipped = file.metadata().find("skipped_nonfinite_steps");
    if (skipped != file.metadata().end()) skipped_nonfinite = std::stoll(skipped->second);
  }
  // The run log starts where the checkpoint left off (metrics.jsonl and the event file keep each
  // step once; train/run_log.h).
  if (writer) {
    RunLogStart log_start;
    if (resume_from) log_start.resumed_step = start_step;
    log_start.final_eval_again = resume_from && start_step >= total;
    log_start.tensorboard = o.run.tensorboard;
    log = std::make_unique<RunLog>(result.run_dir, log_start);
    observers.push_back(log.get());
    for (const std::string& line : before_log) message(line);
  }
  const std::string config_path = result.run_dir + "/config.toml";
  if (writer) {
    if (resume_from) {
      std::ifstream old(config_path);
      std::stringstream previous;
      previous << old.rdbuf();
      if (old && previous.str() != resolved_config)
        message("note: the configuration differs from the one this run started with (" + config_path +
                "); resuming with the new one");
    }
    write_file_atomic(config_path, resolved_config);
  }
  if (resume_from)
    message("resuming " + result.run_dir + " from " + *resume_from + " at step " + std::to_string(start_step));
  else if (resume)
    message("no checkpoint in " + checkpoints.dir() + ": starting from step 0");
  // Every rank must run the same thing from the same place before the first collective of a step.
  RankFingerprint fingerprint;
  fingerprint.version = kVersion;
  fingerprint.config_hash = fnv1a64(resolved_config.data(), resolved_config.size());
  fingerprint.start_step = start_step;
  fingerprint.params_checksum = params_checksum(student->params(), *ctx);
  check_ranks_agree(comm, fingerprint, resolved_config);

  message(std::string(o.mode == RunMode::train ? "kd train: " : "kd distill: ") + student->summary() + " on " +
          ctx->describe());
  if (comm.size() > 1)
    message("  " + std::to_string(comm.size()) + " ranks (" + comm.describe() + ", launched by " +
            dist.launch.launcher + "), " + std::to_string(o.data.batch_size / comm.size()) + " images per rank in " +
            std::to_string(o.accumulate) + " micro-batch(es)" +
            (synced_norms > 0 ? "; BatchNorm statistics over all ranks (" + std::to_string(synced_norms) + " layers)"
                              : ""));
  else if (o.accumulate > 1)
    message("  " + std::to_string(o.accumulate) + " micro-batches of " +
            std::to_string(o.data.batch_size / o.accumulate) + " images per step");
  if (mo.sync_bn && synced_norms == 0)
    message("  note: sync_bn is set but " + mo.arch + " has no BatchNorm layers; nothing to synchronise");
  for (Model* t : teachers) message("  teacher " + t->summary());
  if (!tuning_note.empty()) message("  " + tuning_note);
  message("  data: " + data.train->describe() + "; eval: " + data.test->describe());
  message("  " + std::to_string(total) + " steps of " + std::to_string(o.data.batch_size) + " images (" +
          json_number(double(total) * double(o.data.batch_size) / double(data.train->size())) +
          " epochs), run folder " + result.run_dir);

  const StepConfig step_config = o.step_config();
  if (o.mode == RunMode::distill && o.teacher.precision == "fp8") {
#if KD_HAVE_CUDA
    KD_CHECK(!ctx->is_cuda() || cuda_device_has_fp8(ctx->cuda_handles().device),
             "teacher.precision = fp8 needs FP8 tensor cores (compute capability 8.9 or newer: Ada, Hopper); ",
             ctx->describe(), " has none. `kd eval --precision fp8` measures FP8's effect on a teacher anywhere");
#endif
    std::vector<int64_t> resolutions;
    for (size_t k = 0; k < teachers.size(); ++k) resolutions.push_back(step_config.teacher_res(k));
    Fp8Check check;
    const Fp8Summary fp8 = prepare_fp8_teachers(*ctx, teachers, resolutions, data.train, eval_settings(o),
                                                o.teacher.fp8_calibration_batches, o.data.batch_size, &check);
    message("  teacher precision fp8: " + fp8.describe() + ", scales calibrated on the centre crops of " +
            std::to_string(fp8.calibration_images) + " training images; " + fp8_path(*ctx));
    message("  fp8 check: " + check.describe());
    require_fp8_fidelity(check, o.teacher.fp8_min_agreement, o.teacher.fp8_max_kl);
  }
  EpochSampler sampler = make_sampler(*data.train, o.data, uint64_t(o.run.seed), comm.rank(), comm.size());
  if (data.train->shard(0) >= 0)
    message("  sample order: shard by shard, " + std::to_string(o.data.shuffle_shards) +
            " shards shuffled together (data.shuffle_shards), up to " + std::to_string(o.data.cached_shard_count()) +
            " in memory");
  LoaderOptions lo;
  lo.batch_size = int(sampler.local_batch() + 1);
  lo.num_threads = int(o.data.loader_threads);
  lo.prefetch_batches = int(o.data.prefetch);
  lo.first_step = start_step;
  lo.on_bad_image = [&](const std::string& origin, const std::string& reason) {
    if (writer) message("warning: skipping unreadable image " + origin + ": " + reason);
  };
  if (o.data.jpeg_views_only) {
    // Slot j < local batch is global slot first_slot + j; the extra last slot is the mixup
    // partner, global slot first_slot - 1 (cyclically).
    lo.view_need = [&step_config, &sampler](int64_t step, size_t slot, int height, int width) {
      const int64_t global = sampler.global_batch(), local = sampler.local_batch();
      const int64_t g = int64_t(slot) < local ? sampler.first_slot() + int64_t(slot)
                                              : (sampler.first_slot() + global - 1) % global;
      return step_config.view_need(step, g, ImageSize{int32_t(height), int32_t(width)});
    };
  }
  const bool partner = step_config.needs_partner();
  Loader loader(
      data.train,
      [&sampler, total, partner](int64_t step) {
        if (step >= total) return std::vector<int64_t>{};
        std::vector<int64_t> indices = sampler.indices(step);
        if (partner) indices.push_back(sampler.partner_index(step));
        return indices;
      },
      lo);

  GradientSync sync(student->params(), comm, o.grad_sync(), *ctx);
  StepRunner runner(step_config, *student, teachers, optimizer, sync);
  FixedTeacherTable fixed_teacher;
  if (o.mode == RunMode::distill && step_config.strategy == TeachingStrategy::fixed) {
    message("  fixed teacher: computing the teachers' logits on the centre crops of " +
            std::to_string(data.train->size()) + " training images");
    std::vector<int64_t> resolutions;
    for (size_t k = 0; k < teachers.size(); ++k) resolutions.push_back(step_config.teacher_res(k));
    fixed_teacher.compute(*ctx, teachers, data.train, resolutions, step_config.recipe.eval_crop_fraction,
                          step_config.norm, int(o.data.loader_threads));
    runner.set_fixed_teacher(&fixed_teacher);
  }
  const EvalSettings eval_cfg = eval_settings(o);
  TeacherEvalCache teacher_cache;
  SignalGuard signals;

  LoopHooks hooks;
  hooks.save_checkpoint = [&](int64_t steps_done) -> std::string {
    // Parameters and optimizer state are the same on every rank: rank 0 writes them.
    if (!writer) return std::string();
    SafetensorsWriter w;
    student->params().save(w, *ctx);
    optimizer.save(w, *ctx);
    describe_model(w, o, mo.arch, data.num_classes, steps_done, resolved_config);
    w.set_metadata("ranks", std::to_string(comm.size()));
    w.set_metadata("data_fingerprint", data_fingerprint.to_json());
    w.set_metadata("skipped_nonfinite_steps", std::to_string(skipped_nonfinite));
    return checkpoints.save(w, steps_done);
  };
  hooks.last_good_checkpoint = [&] { return checkpoints.latest(); };
  // Per-rank BatchNorm (no sync_bn): the ranks' running statistics differ; rank 0's are the ones
  // saved, and every rank evaluates with them, so the evaluated model is the saved one.
  auto share_rank0_buffers = [&] {
    if (comm.size() == 1 || synced_norms > 0) return;
    for (Param& p : student->params().buffers())
      if (!p.host && comm.accepts(p.value.device()))
        comm.wait(comm.broadcast(p.value.raw(), p.numel(), p.value.dtype(), 0, *ctx), *ctx);
  };
  hooks.evaluate = [&](int64_t) {
    student->set_frozen(false);
    share_rank0_buffers();
    return evaluate(*ctx, *student, teachers, data.test, eval_cfg, &teacher_cache, &comm);
  };
  LoopSettings ls;
  ls.start_step = start_step, ls.total_steps = total;
  ls.profile_phases = o.run.profile_phases;
  ls.log_every = o.run.log_every, ls.eval_every = o.eval.every, ls.checkpoint_every = o.checkpoint.every;
  ls.stop_after = o.run.stop_after;
  ls.skip_nonfinite = o.run.skip_nonfinite, ls.skipped_nonfinite = &skipped_nonfinite;
  ls.stats_on_device = step_stats_on_device(o.run.step_stats, *ctx, comm);
  if (ls.stats_on_device)
    message("  the step's loss and gradient norm stay on the device, read every " + std::to_string(o.run.log_every) +
            " steps (run.step_stats)");
  {
    std::string why_not;
    ls.step_graph = step_graph_on(o.run.cuda_graph, comm, *ctx, ls.stats_on_device, &why_not);
    if (!why_not.empty()) message("  the step is not a CUDA graph: " + why_not + " (run.cuda_graph)");
    if (ls.step_graph && !ctx->is_cuda())
      message("  the step runs split as for a CUDA graph, uncaptured on the CPU (run.cuda_graph = on)");
  }

  const TrainResult loop = run_loop(*ctx, comm, runner, loader, sampler, ls, hooks, observers);
  result.status = loop.status, result.steps = loop.steps, result.images_per_s = loop.images_per_s;
  result.final_lr = loop.final_lr, result.bad_images = loop.bad_images;
  result.bad_images_by_kind = loop.bad_images_by_kind;
  result.skipped_nonfinite = skipped_nonfinite, result.checkpoint_failures = loop.checkpoint_failures;
  if (result.status != TrainResult::Status::completed) return result;

  if (log) log->finish_progress();
  if (start_step < total || !resume_from) hooks.save_checkpoint(total);
  if (writer) {
    // The trained weights alone, under timm's names, with what kd needs to rebuild the model.
    SafetensorsWriter w;
    student->params().save(w, *ctx);
    describe_model(w, o, mo.arch, data.num_classes, total, resolved_config);
    w.write(result.run_dir + "/model.safetensors");
  }
  result.eval = hooks.evaluate(total);
  if (result.eval.interrupted) {
    message(std::string("stopped by ") + (stop_requested() == SIGINT ? "SIGINT" : "SIGTERM") +
            " during the final evaluation; the final checkpoint and " + result.run_dir +
            "/model.safetensors are saved (continue with --resume to evaluate)");
    result.status = TrainResult::Status::interrupted;
    return result;
  }
  for (LoopObserver* obs : observers) obs->evaluated(total, sampler.epoch_of(total), result.eval);
  result.wall_s = seconds_since(started);

  if (writer) {
    std::ostringstream s;
    s << "{\n  \"mode\": \"" << (o.mode == RunMode::train ? "train" : "distill") << "\",\n  \"steps\": " << total
      << ",\n  \"epochs\": " << json_number(sampler.epoch_of(total)) << ",\n  \"ranks\": " << comm.size()
      << ",\n  \"wall_s\": " << json_number(result.wall_s)
      << ",\n  \"images_per_sec\": " << json_number(result.images_per_s)
      << ",\n  \"student_top1\": " << json_number(result.eval.student_top1)
      << ",\n  \"student_top5\": " << json_number(result.eval.student_top5);
    if (result.eval.has_teacher)
      s << ",\n  \"teacher_top1\": " << json_number(result.eval.teacher_top1)
        << ",\n  \"agreement\": " << json_number(result.eval.agree_top1)
        << ",\n  \"agreement_top5\": " << json_number(result.eval.agree_top5)
        << ",\n  \"kl\": " << json_number(result.eval.kl);
    if (result.eval.each_teacher_top1.size() > 1) {  // an ensemble: each member's top-1 and agreement too
      auto list = [](const std::vector<double>& v) {
        std::string out;
        for (size_t m = 0; m < v.size(); ++m) out += (m ? ", " : "") + json_number(v[m]);
        return "[" + out + "]";
      };
      s << ",\n  \"each_teacher_top1\": " << list(result.eval.each_teacher_top1)
        << ",\n  \"each_agreement\": " << list(result.eval.each_agree_top1);
    }
    s << ",\n  \"final_lr\": " << json_number(result.final_lr) << ",\n  \"bad_images\": " << result.bad_images
      << ",\n  \"bad_images_by_kind\": {";
    for (size_t k = 0; k < result.bad_images_by_kind.size(); ++k)
      s << (k ? ", " : "") << "\"" << result.bad_images_by_kind[k].first << "\": " << result.bad_images_by_kind[k].second;
    s << "}"
      << ",\n  \"skipped_nonfinite_steps\": " << result.skipped_nonfinite
      << ",\n  \"checkpoint_failures\": " << result.checkpoint_failures
      << ",\n  \"metrics_write_failures\": " << (log ? log->metrics_write_failures() : 0);
    if (o.data.jpeg_decoder == "nvjpeg") {
      const DeviceJpegCounts d = device_jpeg_counts();
      s << ",\n  \"gpu_decoded_jpegs\": " << d.decoded_on_gpu << ",\n  \"gpu_jpeg_host_fallbacks\": " << d.host_fallbacks
        << ",\n  \"undecodable_jpegs\": " << d.undecodable;
    }
    s << ",\n  \"eval_images\": " << result.eval.images << "\n}\n";
    write_file_atomic(result.run_dir + "/summary.json", s.str());
  }
  if (result.bad_images > 0) {
    std::string kinds;
    for (const auto& [kind, count] : result.bad_images_by_kind)
      kinds += (kinds.empty() ? "" : ", ") + std::to_string(count) + " " + kind;
    message("skipped " + std::to_string(result.bad_images) + " unreadable image(s), each replaced by the next readable "
            "one: " + kinds);
  }
  message("done: " + result.eval.summary() + "; " + std::to_string(total) + " steps in " +
          format_duration(result.wall_s) + ", summary in " + result.run_dir + "/summary.json");
  return result;
}

}  // namespace kd
