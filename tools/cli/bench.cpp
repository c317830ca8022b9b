// kd bench: a distillation step (function matching) on synthetic images, timed per phase with
// CUDA events (steady clock on the CPU). Prints images/s, model FLOPs utilisation against the
// matrix-product rate measured in the same run (bf16 on a GPU, fp32 sgemm on the CPU), the peak
// memory of kd's pool, and a RESULT line of JSON that tools/gpu_check.sh collects.
#include "tools/cli/bench.h"

#include <chrono>
#include <cstdio>
#include <random>

#include "engine/timer.h"
#include "kernels/gemm.h"
#include "kernels/random.h"
#include "engine/comm.h"
#include "train/options.h"
#include "train/step.h"
#if KD_HAVE_CUDA
#include "kernels/gemm_cuda.h"
#endif

namespace kd::cli {

namespace {

struct BenchArgs {
  std::string teacher = "resnetv2_152x2_bit", student = "resnetv2_50x1_bit", device = "auto";
  int64_t teacher_res = 224, student_res = 160, batch = 128, steps = 10, warmup = 3, classes = 1000, source_px = 256;
};

// n x n values uniform in [-1, 1), as `dtype` (bf16 or f32) on the host.
Tensor random_square(int64_t n, DType dtype) {
  Tensor t = Tensor::zeros_cpu({n, n}, dtype);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n * n; ++i) {
    const float v = 2.0f * random_uniform(7, 0x6d61746d756cull, uint64_t(i)) - 1.0f;
    if (dtype == DType::bf16)
      t.data<bf16>()[i] = float_to_bf16(v);
    else
      t.data<float>()[i] = v;
  }
  return t;
}

// Dense matrix-product rate of this device in FLOP/s: bf16 8192^3 on a GPU, fp32 1024^3 on the CPU,
// on random operands. (Zeros run faster than real data: on the first H100 run, this product on
// zeros gave 896-903 TFLOP/s, bench_kernels' on random values 725-740.)
double measured_matmul_rate(Context& ctx) {
  PhaseTimer timer(ctx);
  if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
    const int64_t n = 8192;
    const Tensor a = random_square(n, DType::bf16).to(Device::cuda, &ctx);
    Tensor c = Tensor::empty({n, n}, DType::bf16, ctx);
    const int reps = 10;
    gemm_cuda(ctx.cuda_handles(), false, true, n, n, n, 1.0f, a.data<bf16>(), n, a.data<bf16>(), n, 0.0f,
              c.data<bf16>(), n);  // warm-up, algorithm selection
    timer.mark("gemm");
    for (int i = 0; i < reps; ++i)
      gemm_cuda(ctx.cuda_handles(), false, true, n, n, n, 1.0f, a.data<bf16>(), n, a.data<bf16>(), n, 0.0f,
                c.data<bf16>(), n);
    timer.stop();
    return 2.0 * double(n) * n * n * reps / (timer.totals_ms()[0].second * 1e-3);
#endif
  }
  const int64_t n = 1024;
  const Tensor a = random_square(n, DType::f32);
  std::vector<float> c(size_t(n * n));
  const float* ap = a.data<float>();
  gemm_cpu<float>(false, true, n, n, n, 1.0f, ap, n, ap, n, 0.0f, c.data(), n);
  const int reps = 5;
  timer.mark("gemm");
  for (int i = 0; i < reps; ++i) gemm_cpu<float>(false, true, n, n, n, 1.0f, ap, n, ap, n, 0.0f, c.data(), n);
  timer.stop();
  return 2.0 * double(n) * n * n * reps / (timer.totals_ms()[0].second * 1e-3);
}

void run_bench(const BenchArgs& a) {
  auto ctx = make_context(a.device);
  TrainOptions o(RunMode::distill);
  o.augment.resolution = a.student_res;
  o.augment.teacher_resolution = a.teacher_res;
  o.data.batch_size = a.batch;
  o.schedule.total_steps = a.warmup + a.steps;
  o.schedule.decay = "constant";
  const size_t pool_before = ctx->pool().bytes_in_use();
  std::unique_ptr<Model> teacher = build_model(*ctx, a.teacher, a.classes, false, "", 1, /*frozen=*/true);
  const size_t teacher_bytes = ctx->pool().bytes_in_use() - pool_before;
  // What the same teacher held before frozen models were released (round 1): fp32 values and
  // gradients, a bf16 compute copy (GPU), and the standardised-weight cache.
  int64_t std_numel = 0;
  for (const Param& p : teacher->params().params()) std_numel += p.frozen_reads == FrozenReads::nothing ? p.numel() : 0;
  const double act = double(dtype_size(ctx->activation_dtype()));
  const double teacher_bytes_before =
      double(teacher->params().numel()) * (8.0 + (ctx->is_cuda() ? 2.0 : 0.0)) + double(std_numel) * act;
  std::unique_ptr<Model> student = build_model(*ctx, a.student, a.classes, true, "", 2);
  Optimizer optimizer(student->params(), o.optim, o.schedule, *ctx);
  auto comm = make_local_communicator();
  GradientSync sync(student->params(), *comm, o.grad_sync(), *ctx);
  StepRunner runner(o.step_config(), *student, {teacher.get()}, optimizer, sync);

  // One batch of random source images (the recipes change every step, so the work does too),
  // plus the mixup partner of its first slot.
  std::mt19937 rng(3);
  RankBatch batch;
  batch.has_partner = true;
  batch.images.resize(size_t(a.batch + 1));
  for (int64_t i = 0; i <= a.batch; ++i) {
    Image& im = batch.images[size_t(i)];
    im.height = im.width = int(a.source_px);
    im.pixels.resize(size_t(a.source_px * a.source_px * 3));
    for (uint8_t& p : im.pixels) p = uint8_t(rng());
    if (i < a.batch) batch.labels.push_back(int32_t(i % a.classes)), batch.indices.push_back(i);
  }
  auto at_step = [&batch](int64_t s) -> const RankBatch& {
    batch.step = s;
    return batch;
  };

  const double peak = measured_matmul_rate(*ctx);
  std::fprintf(stderr, "kd bench: teacher %s @%lld px, student %s @%lld px, batch %lld on %s\n", a.teacher.c_str(),
               (long long)a.teacher_res, a.student.c_str(), (long long)a.student_res, (long long)a.batch,
               ctx->describe().c_str());
  PhaseTimer timer(*ctx);
  for (int64_t s = 0; s < a.warmup; ++s) runner.run(*ctx, at_step(s), &timer);
  ctx->synchronize();
  timer.reset();
  ctx->pool().reset_peak();
  const auto started = std::chrono::steady_clock::now();
  for (int64_t s = a.warmup; s < a.warmup + a.steps; ++s) runner.run(*ctx, at_step(s), &timer);
  ctx->synchronize();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const auto phases = timer.totals_ms();

  // Model FLOPs per image: teacher forward 2 * MACs, student forward + backward 3 * 2 * MACs.
  const double flops = 2.0 * double(teacher->forward_macs(a.teacher_res, a.teacher_res)) +
                       6.0 * double(student->forward_macs(a.student_res, a.student_res));
  const double images_per_s = double(a.batch * a.steps) / seconds;
  const double mfu = flops * images_per_s / peak;
  const double peak_gib = double(ctx->pool().peak_bytes_in_use()) / double(1ull << 30);
  std::printf("images/s %.1f | step %.2f ms | model %.4g GFLOP/image | MFU %.1f%% of %.1f TFLOP/s (measured %s) | "
              "peak memory %.2f GiB\n",
              images_per_s, 1e3 * seconds / double(a.steps), flops / 1e9, 100 * mfu, peak / 1e12,
              ctx->is_cuda() ? "bf16 8192^3" : "fp32 sgemm 1024^3", peak_gib);
  std::printf("teacher weights: %.3f GiB held (%.3f GiB before frozen teachers dropped gradients and unread fp32 "
              "values)\n",
              double(teacher_bytes) / double(1ull << 30), teacher_bytes_before / double(1ull << 30));
  double phase_total = 0;
  for (const auto& p : phases) phase_total += p.second;
  std::printf("%-16s %10s %7s\n", "phase", "ms/step", "share");
  for (const auto& p : phases)
    std::printf("%-16s %10.2f %6.1f%%\n", p.first.c_str(), p.second / double(a.steps), 100 * p.second / phase_total);
  std::printf("RESULT {\"tool\": \"kd\", \"device\": \"%s\", \"images_per_sec\": %.2f, \"mfu\": %.4f, "
              "\"peak_tflops\": %.2f, \"peak_memory_gib\": %.3f, \"teacher_weights_gib\": %.3f, \"batch\": %lld}\n",
              ctx->describe().c_str(), images_per_s, mfu, peak / 1e12, peak_gib, double(teacher_bytes) / double(1ull << 30),
              (long long)a.batch);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "Throughput of a distillation step on synthetic data, per phase");
  cmd->add_option("--teacher", args->teacher, "teacher architecture")->capture_default_str();
  cmd->add_option("--student", args->student, "student architecture")->capture_default_str();
  cmd->add_option("--teacher-res", args->teacher_res, "teacher input, px")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--student-res", args->student_res, "student input, px")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--batch", args->batch, "images per step")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--steps", args->steps, "timed steps")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", args->warmup, "untimed steps first")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--classes", args->classes, "classes of both heads")->capture_default_str()->check(CLI::Range(2, 100000));
  cmd->add_option("--source-px", args->source_px, "side of the synthetic source images")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--device", args->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->callback([args] { run_bench(*args); });
}

}  // namespace kd::cli
