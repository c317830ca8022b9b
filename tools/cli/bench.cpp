// kd bench: a distillation step (function matching) on synthetic images, timed per phase with
// CUDA events (steady clock on the CPU). Prints images/s, model FLOPs utilisation against the
// matrix-product rate measured in the same run (bf16 on a GPU, fp32 sgemm on the CPU), the peak
// memory of kd's pool, and a RESULT line of JSON that tools/gpu_check.sh collects.
// Under a launcher (mpirun -np N kd bench ...) every rank runs its share of the global batch with
// the job's transport; --comm adds the all-reduce bandwidth table, --compare-overlap times the
// step with the bucketed all-reduce during backward and with one all-reduce after it.
#include "tools/cli/bench.h"

#include <chrono>
#include <cstdio>
#include <random>

#include "engine/autotune_cache.h"
#include "engine/comm.h"
#include "engine/fp8_teacher.h"
#include "engine/gemm_rate.h"
#include "engine/op_profile.h"
#include "engine/ops.h"
#include "engine/timer.h"
#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "kernels/step_stats.h"
#include "tools/cli/bench_comm.h"
#include "train/distributed.h"
#include "train/fp8_calibration.h"
#include "train/options.h"
#include "train/step.h"
#include "train/step_graph.h"
#if KD_HAVE_CUDA
#include "kernels/gemm_cuda.h"
#endif

namespace kd::cli {

namespace {

struct BenchArgs {
  std::string teacher = "resnetv2_152x2_bit", student = "resnetv2_50x1_bit", device = "auto", backend = "auto";
  int64_t teacher_res = 224, student_res = 160, batch = 128, steps = 10, warmup = 3, classes = 1000, source_px = 256;
  int64_t accumulate = 1, precondition_every = 20;
  std::string optimizer = "adam", cpu_backend = "auto", teacher_precision = "default", step_stats = "device";
  std::string cuda_graph = "auto";
  int threads = 0;
  bool comm = false, compare_overlap = false, no_overlap = false, no_autotune = false, no_groupnorm_one_pass = false, conv_pad_channels = false;
  bool no_copy_stream = false, conv_wgrad_im2col = false;
  int64_t ops = 0;  // --ops N: the N slowest ops of one step
};

// The rank's share of the global batch: random images, one per global slot (seeded by the slot,
// so every rank count sees the same batch), plus the mixup partner of its first slot.
RankBatch synthetic_share(const BenchArgs& a, const Communicator& comm) {
  const int64_t local = a.batch / comm.size(), slot0 = comm.rank() * local;
  RankBatch batch;
  batch.slot0 = slot0;
  batch.has_partner = true;
  for (int64_t j = 0; j <= local; ++j) {
    const int64_t slot = j < local ? slot0 + j : (slot0 + a.batch - 1) % a.batch;
    std::mt19937 rng(uint32_t(3 + slot));
    Image im;
    im.height = im.width = int(a.source_px);
    im.pixels.resize(size_t(a.source_px * a.source_px * 3));
    for (uint8_t& p : im.pixels) p = uint8_t(rng());
    batch.images.push_back(std::move(im));
    if (j < local) batch.labels.push_back(int32_t(slot % a.classes)), batch.indices.push_back(slot);
  }
  return batch;
}

struct StepTiming {
  double seconds = 0;  // the timed steps, slowest rank
  std::vector<std::pair<std::string, double>> phases;
  int64_t phase_steps = 0;  // steps the phases were summed over (1 with a CUDA graph: one uncaptured step)
  // The host's side (rank 0): seconds per step waited for the upload ring during the timed steps,
  // and the time to enqueue one more step after the device went idle (its host cost alone: what
  // a CUDA graph lowers while the device is the bottleneck).
  double ring_wait_s = 0, enqueue_s = 0;
  std::vector<OpProfile::Row> ops;  // --ops: one more step, op by op
  bool graphed = false;             // the timed steps were CUDA graph replays
};

StepTiming time_steps(const BenchArgs& a, Context& ctx, Communicator& comm, StepRunner& runner, RankBatch& batch) {
  PhaseTimer timer(ctx);
  // --step-stats device: the loop's device path (train/loop.h), one block of statistics per step,
  // zeroed on the device and never read: the step has no host wait.
  Tensor stats_block;
  if (a.step_stats == "device") stats_block = Tensor::empty({kStatWidth}, DType::f64, ctx);
  // --cuda-graph: the loop's graph path (train/step_graph.h); phases then come from one more,
  // uncaptured step, as the loop's profiled steps.
  std::string why_not;
  std::unique_ptr<StepGraph> graph;
  if (step_graph_on(a.cuda_graph, comm, ctx, stats_block.defined(), &why_not))
    graph = std::make_unique<StepGraph>(runner, comm, ctx);
  if (!why_not.empty() && comm.rank() == 0)
    std::fprintf(stderr, "kd bench: the step is not a CUDA graph: %s\n", why_not.c_str());
  auto one_step = [&](int64_t s, bool profiled) {
    batch.step = s;
    double* stats = stats_block.defined() ? stats_block.data<double>() : nullptr;
    if (stats) fill_zero(stats_block.raw(), ctx.device(), stats_block.nbytes(), &ctx);
    if (graph && !profiled) {
      graph->run(ctx, batch, stats);
      const std::string m = graph->take_message();
      if (!m.empty() && comm.rank() == 0) std::fprintf(stderr, "kd bench: %s\n", m.c_str());
    } else {
      runner.run(ctx, batch, profiled ? &timer : nullptr, stats);
    }
  };
  for (int64_t s = 0; s < a.warmup; ++s) one_step(s, false);
  ctx.synchronize();
  comm.barrier();
  timer.reset();
  ctx.pool().reset_peak();
  const double ring_wait_before = ctx.staging_wait_seconds();
  const auto started = std::chrono::steady_clock::now();
  for (int64_t s = a.warmup; s < a.warmup + a.steps; ++s) one_step(s, !graph);
  ctx.synchronize();
  StepTiming t;
  t.graphed = graph && graph->replaying();
  t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  comm.all_reduce_host(&t.seconds, 1, ReduceOp::max);
  t.ring_wait_s = (ctx.staging_wait_seconds() - ring_wait_before) / double(a.steps);
  int64_t next = a.warmup + a.steps;
  const auto enqueue_start = std::chrono::steady_clock::now();
  one_step(next++, false);
  t.enqueue_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - enqueue_start).count();
  ctx.synchronize();
  // The phases and ops beside the graph only where memory holds a second step's activations.
  const bool room = !graph || graph->room_for_an_uncaptured_step(ctx);
  if (graph && !room && comm.rank() == 0) std::fprintf(stderr, "kd bench: %s\n", graph->take_message().c_str());
  if (graph) {
    timer.reset();
    if (room) one_step(next++, true);
    ctx.synchronize();
  }
  t.phases = timer.totals_ms();
  t.phase_steps = graph ? 1 : a.steps;
  if (a.ops > 0 && room) {
    OpProfile profile(ctx);
    one_step(next++, true);
    t.ops = profile.rows();
  }
  return t;
}

// The slowest ops of one step: time, calls, share of the step's op time, and against the floor
// (FLOPs / the measured GEMM rate for convolutions; the achieved rate of the minimal bytes for
// normalisation, to read against bench_kernels' copy bandwidth).
void print_ops(const std::vector<OpProfile::Row>& rows, int64_t top, double gemm_rate) {
  double total = 0;
  for (const OpProfile::Row& r : rows) total += r.ms;
  std::printf("op (one step, by time)%58s %6s %9s %6s %12s\n", "", "calls", "ms", "share", "vs floor");
  for (size_t i = 0; i < rows.size() && int64_t(i) < top; ++i) {
    const OpProfile::Row& r = rows[i];
    char floor[48] = "";
    if (r.flops > 0 && r.ms > 0)
      std::snprintf(floor, sizeof floor, "%5.1f%% gemm", 100.0 * r.flops / (r.ms * 1e-3) / gemm_rate);
    else if (r.bytes > 0 && r.ms > 0)
      std::snprintf(floor, sizeof floor, "%6.0f GB/s", r.bytes / (r.ms * 1e-3) / 1e9);
    std::printf("%-80.80s %6lld %9.3f %5.1f%% %12s\n", r.label.c_str(), (long long)r.calls, r.ms,
                100.0 * r.ms / std::max(total, 1e-9), floor);
  }
  std::printf("(%zu distinct ops, %.2f ms in all)\n", rows.size(), total);
}

void run_bench(const BenchArgs& a) {
  configure_cpu_path(a.cpu_backend, a.threads);
  ParallelOptions po;
  po.backend = a.backend;
  Distributed dist = start_distributed(po, a.device);
  Context& ctx = *dist.ctx;
  Communicator& comm = *dist.comm;
  const bool root = comm.rank() == 0;
  // Autotuned convolutions as in training (run.autotune), the choices kept in the default cache.
  std::unique_ptr<AutotuneCache> tuning;
  if (ctx.is_cuda() && !a.no_autotune) tuning = std::make_unique<AutotuneCache>(default_autotune_cache_path());
  ctx.set_autotune(!a.no_autotune, tuning.get());
  ctx.set_groupnorm_one_pass(!a.no_groupnorm_one_pass);
  ctx.set_conv_pad_channels(a.conv_pad_channels);
  ctx.set_copy_stream(!a.no_copy_stream);
  ctx.set_conv_wgrad_im2col(a.conv_wgrad_im2col);
  if (a.comm) {
    std::vector<int64_t> sizes;
    for (int64_t b = 4 << 10; b <= (ctx.is_cuda() ? int64_t(1) << 30 : int64_t(64) << 20); b *= 4) sizes.push_back(b);
    print_all_reduce(comm, measure_all_reduce(comm, ctx, sizes, ctx.is_cuda() ? 20 : 5));
  }
  KD_CHECK(a.batch % (comm.size() * a.accumulate) == 0, "kd bench: --batch ", a.batch, " does not split over ",
           comm.size(), " rank(s) x --accumulate ", a.accumulate);
  TrainOptions o(RunMode::distill);
  o.augment.resolution = a.student_res;
  o.augment.teacher_resolution = a.teacher_res;
  o.data.batch_size = a.batch;
  o.accumulate = a.accumulate;
  o.schedule.total_steps = 2 * (a.warmup + a.steps);
  o.schedule.decay = "constant";
  o.optim.name = a.optimizer;
  o.optim.shampoo.precondition_every = a.precondition_every;
  o.optim.shampoo.start_step = 1;  // the timed steps precondition (the roots of warm-up step k come in)
  const size_t pool_before = ctx.pool().bytes_in_use();
  std::unique_ptr<Model> teacher = build_model(ctx, a.teacher, a.classes, false, "", 1, /*frozen=*/true);
  const size_t teacher_bytes = ctx.pool().bytes_in_use() - pool_before;
  // What the same teacher held before frozen models were released (round 1): fp32 values and
  // gradients, a bf16 compute copy (GPU), and the standardised-weight cache.
  int64_t std_numel = 0;
  for (const Param& p : teacher->params().params()) std_numel += p.frozen_reads == FrozenReads::nothing ? p.numel() : 0;
  const double act = double(dtype_size(ctx.activation_dtype()));
  const double teacher_bytes_before =
      double(teacher->params().numel()) * (8.0 + (ctx.is_cuda() ? 2.0 : 0.0)) + double(std_numel) * act;
  if (a.teacher_precision == "fp8") {
    // Calibrated on one batch of the synthetic images' centre crops (random weights: the scales
    // only need to be representative for timing).
    const Fp8Summary fp8 = enable_fp8(*teacher, 1);
    Tensor host = Tensor::zeros_cpu({a.batch, a.teacher_res, a.teacher_res, 3}, ctx.activation_dtype());
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    for (int64_t i = 0; i < host.numel(); ++i) {
      if (host.dtype() == DType::bf16)
        host.data<bf16>()[i] = float_to_bf16(u(rng));
      else
        host.data<float>()[i] = u(rng);
    }
    const Tensor x = host.to(ctx.device(), &ctx);
    const Tensor full = ops::to_host_f32(ctx, teacher->forward(ctx, x, Mode::eval));  // calibrating: full precision
    finish_fp8_calibration(*teacher);
    // The same batch through FP8: the check every FP8 run makes (train/fp8_calibration.h); on
    // random weights and inputs the figures only say that the FP8 path computes the same function.
    const Tensor rounded = ops::to_host_f32(ctx, teacher->forward(ctx, x, Mode::eval));
    Fp8Check check;
    check.images = a.batch;
    check.teachers = {compare_logits(full.data<float>(), rounded.data<float>(), a.batch, full.numel() / a.batch)};
    if (comm.rank() == 0)
      std::fprintf(stderr, "kd bench: teacher precision fp8: %s (%s); fp8 check on the synthetic batch: %s\n",
                   fp8.describe().c_str(), fp8_path(ctx).c_str(), check.describe().c_str());
  }
  std::unique_ptr<Model> student = build_model(ctx, a.student, a.classes, true, "", 2);
  std::unique_ptr<Optimizer> optimizer = Optimizer::create(student->params(), o.optim, o.schedule, ctx);
  optimizer->set_communicator(&comm);
  RankBatch batch = synthetic_share(a, comm);

  // The compute floor, measured here (engine/gemm_rate.h: the same definition as bench_kernels).
  const GemmRate gemm_rate = measure_gemm_rate(ctx);
  const double peak = gemm_rate.flops_per_s;
  if (root)
    std::fprintf(stderr, "kd bench: teacher %s @%lld px, student %s @%lld px, global batch %lld on %s (%s)\n",
                 a.teacher.c_str(), (long long)a.teacher_res, a.student.c_str(), (long long)a.student_res,
                 (long long)a.batch, ctx.describe().c_str(), comm.describe().c_str());
  // Model FLOPs per image: teacher forward 2 * MACs, student forward + backward 3 * 2 * MACs.
  const double flops = 2.0 * double(teacher->forward_macs(a.teacher_res, a.teacher_res)) +
                       6.0 * double(student->forward_macs(a.student_res, a.student_res));
  std::vector<bool> overlaps = {!a.no_overlap};
  if (a.compare_overlap) overlaps = {true, false};
  for (bool overlap : overlaps) {
    GradSyncOptions go = o.grad_sync();
    go.overlap = overlap;
    // A transport named explicitly is exercised even with one rank (e.g. NCCL on one GPU).
    go.reduce_single_rank = a.backend != "auto" && a.backend != "local";
    GradientSync sync(student->params(), comm, go, ctx);
    StepRunner runner(o.step_config(), *student, {teacher.get()}, *optimizer, sync);
    const StepTiming t = time_steps(a, ctx, comm, runner, batch);
    const double images_per_s = double(a.batch * a.steps) / t.seconds;
    const double mfu = flops * images_per_s / (peak * comm.size());
    const double peak_gib = double(ctx.pool().peak_bytes_in_use()) / double(1ull << 30);
    if (!root) continue;
    const std::string how = comm.size() == 1
                                ? std::string("1 rank")
                                : std::to_string(comm.size()) + " ranks, " +
                                      (overlap ? "buckets during backward" : "one all-reduce after backward");
    std::printf(
        "images/s %.1f | step %.2f ms | model %.4g GFLOP/image | MFU %.1f%% of %.1f TFLOP/s per rank (measured "
        "%s) | peak memory %.2f GiB | %s, %lld micro-batch(es)\n",
        images_per_s, 1e3 * t.seconds / double(a.steps), flops / 1e9, 100 * mfu, peak / 1e12,
        gemm_rate.what.c_str(), peak_gib, how.c_str(), (long long)a.accumulate);
    std::printf(
        "teacher weights: %.3f GiB held (%.3f GiB before frozen teachers dropped gradients and unread fp32 "
        "values)\n",
        double(teacher_bytes) / double(1ull << 30), teacher_bytes_before / double(1ull << 30));
    if (ctx.is_cuda())
      std::printf(
          "host: one step enqueued in %.2f ms after an idle device (--step-stats %s, %s); %.2f ms/step waited for "
          "the upload ring (the device behind)\n",
          1e3 * t.enqueue_s, a.step_stats.c_str(), t.graphed ? "a CUDA graph replay" : "uncaptured",
          1e3 * t.ring_wait_s);
    if (!t.ops.empty()) print_ops(t.ops, a.ops, peak);
#if KD_HAVE_CUDA
    // Which cuDNN engine each convolution runs (autotuned or cuDNN's first), beside the op times.
    if (a.ops > 0 && ctx.is_cuda()) std::printf("cuDNN plans:\n%s", conv2d_cuda_plan_report().c_str());
#endif
    double phase_total = 0;
    for (const auto& p : t.phases) phase_total += p.second;
    std::printf("%-16s %10s %7s   (rank 0)\n", "phase", "ms/step", "share");
    for (const auto& p : t.phases)
      std::printf("%-16s %10.2f %6.1f%%\n", p.first.c_str(), p.second / double(t.phase_steps),
                  100 * p.second / phase_total);
    std::printf(
        "RESULT {\"tool\": \"kd\", \"device\": \"%s\", \"images_per_sec\": %.2f, \"mfu\": %.4f, "
        "\"peak_tflops\": %.2f, \"peak_memory_gib\": %.3f, \"teacher_weights_gib\": %.3f, \"batch\": %lld, "
        "\"ranks\": %d, \"accumulate\": %lld, \"overlap\": %s, \"optimizer\": \"%s\", \"autotune\": %s, "
        "\"groupnorm_one_pass\": %s, \"conv_pad_channels\": %s, \"teacher_precision\": \"%s\", \"step_stats\": "
        "\"%s\", \"copy_stream\": %s, \"conv_wgrad_im2col\": %s, \"cuda_graph\": %s, \"enqueue_ms\": %.3f, \"ring_wait_ms\": %.3f}\n",
        ctx.describe().c_str(), images_per_s, mfu, peak / 1e12, peak_gib, double(teacher_bytes) / double(1ull << 30),
        (long long)a.batch, comm.size(), (long long)a.accumulate, overlap ? "true" : "false", a.optimizer.c_str(),
        a.no_autotune ? "false" : "true", a.no_groupnorm_one_pass ? "false" : "true",
        a.conv_pad_channels ? "true" : "false", a.teacher_precision.c_str(), a.step_stats.c_str(),
        a.no_copy_stream ? "false" : "true", a.conv_wgrad_im2col ? "true" : "false", t.graphed ? "true" : "false", 1e3 * t.enqueue_s,
        1e3 * t.ring_wait_s);
  }
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "Throughput of a distillation step on synthetic data, per phase");
  cmd->add_option("--teacher", args->teacher, "teacher architecture")->capture_default_str();
  cmd->add_option("--student", args->student, "student architecture")->capture_default_str();
  cmd->add_option("--teacher-res", args->teacher_res, "teacher input, px")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--student-res", args->student_res, "student input, px")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--batch", args->batch, "images per step (global: all ranks together)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--steps", args->steps, "timed steps")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", args->warmup, "untimed steps first")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--classes", args->classes, "classes of both heads")
      ->capture_default_str()
      ->check(CLI::Range(2, 100000));
  cmd->add_option("--source-px", args->source_px, "side of the synthetic source images")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--device", args->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->add_option("--accumulate", args->accumulate, "micro-batches per rank and step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--backend", args->backend, "data-parallel transport under a launcher: auto, local, mpi, nccl")
      ->capture_default_str();
  cmd->add_option("--optimizer", args->optimizer, "adam, sgd or shampoo")->capture_default_str();
  cmd->add_option("--precondition-every", args->precondition_every, "shampoo: steps between root computations")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--comm", args->comm, "also measure all-reduce bandwidth over message sizes (nccl-tests' busbw)");
  cmd->add_flag("--compare-overlap", args->compare_overlap,
                "time the step with gradient buckets reduced during backward and with one all-reduce after it");
  cmd->add_flag("--no-overlap", args->no_overlap, "one all-reduce after backward instead of buckets during it");
  cmd->add_option("--cpu-backend", args->cpu_backend,
                  "CPU path: auto, onednn (oneDNN convolutions and sgemm) or reference (im2col + OpenBLAS)")
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "OpenMP threads of the CPU path (0: OMP_NUM_THREADS or every core)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--no-autotune", args->no_autotune,
                "take cuDNN's first engine per convolution instead of the fastest of its candidates");
  cmd->add_flag("--conv-pad-channels", args->conv_pad_channels,
                "convolutions on < 8 channels (the stems) padded to 8 (run.conv_pad_channels)");
  cmd->add_option("--teacher-precision", args->teacher_precision,
                  "fp8: the teacher's convolutions in FP8 (teacher.precision; scales from one synthetic batch)")
      ->check(CLI::IsMember({"default", "fp8"}))
      ->capture_default_str();
  cmd->add_option("--step-stats", args->step_stats,
                  "device: loss and gradient norm stay on the device, no host wait in the step (run.step_stats); "
                  "host: read back every step, as before")
      ->check(CLI::IsMember({"device", "host"}))
      ->capture_default_str();
  cmd->add_option("--cuda-graph", args->cuda_graph,
                  "the timed steps as replays of one captured CUDA graph (run.cuda_graph; auto: on a GPU where the "
                  "run allows it); the phases then come from one more, uncaptured step")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  cmd->add_option("--ops", args->ops,
                  "after the timed steps, time one more op by op and print its N slowest ops (convolutions by "
                  "shape, with their share of the GEMM rate; GroupNorm with its minimal bytes' rate), then the cuDNN "
                  "engine of every convolution plan")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--conv-wgrad-im2col", args->conv_wgrad_im2col,
                "weight gradients of patch convolutions as im2col + one GEMM (run.conv_wgrad_im2col)");
  cmd->add_flag("--no-copy-stream", args->no_copy_stream,
                "upload the pixels on the compute stream after the previous step (run.copy_stream = false)");
  cmd->add_flag("--no-groupnorm-one-pass", args->no_groupnorm_one_pass,
                "GroupNorm (forward and backward) on the two-pass path (run.groupnorm_one_pass = false), for the comparison");
  cmd->footer(
      "Under a launcher every rank runs its share: mpirun -np 2 kd bench --device cpu --comm --compare-overlap");
  cmd->callback([args] { run_bench(*args); });
}

}  // namespace kd::cli
