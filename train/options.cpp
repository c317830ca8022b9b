#include "train/options.h"

#include "kernels/check.h"
#include "kernels/cpu_backend.h"

namespace kd {

RecipeConfig AugmentOptions::recipe() const {
  RecipeConfig c;
  c.area_min = float(area_min), c.area_max = float(area_max);
  c.aspect_min = float(aspect_min), c.aspect_max = float(aspect_max);
  c.flip = flip;
  c.mixup_alpha = float(mixup_alpha);
  c.mixup_per_sample = mixup_per_sample;
  c.eval_crop_fraction = float(eval_crop_fraction);
  return c;
}

Normalization AugmentOptions::normalization() const {
  const float m[3] = {float(mean[0]), float(mean[1]), float(mean[2])};
  const float s[3] = {float(std[0]), float(std[1]), float(std[2])};
  return Normalization::from_mean_std(m, s);
}

TrainOptions::TrainOptions(RunMode m) : mode(m) {
  student.zero_head = true;
  optim.weight_decay = 1e-4;
}

void TrainOptions::bind(ConfigSchema& s) {
  s.bind("run.name", &run.name, "name of the run folder under run.out_dir");
  s.bind("run.out_dir", &run.out_dir, "folder that holds run folders");
  s.bind("run.device", &run.device, "cpu, cuda, cuda:N or auto");
  s.bind("run.seed", &run.seed, "seed of initialisation, sample order and augmentation");
  s.bind("run.steps", &run.steps, "optimizer steps (0: from run.epochs)");
  s.bind("run.epochs", &run.epochs, "epochs over the training set (used when run.steps is 0)");
  s.bind("run.log_every", &run.log_every, "steps between metrics lines");
  s.bind("run.profile_phases", &run.profile_phases,
         "time the phases (data wait, augment, teacher, student, loss, backward, communication, optimizer) of the "
         "last step of every log window: ms_<phase> in metrics.jsonl (one device synchronisation per window)");
  s.bind("run.stop_after", &run.stop_after,
         "stop with a checkpoint after this many steps of this invocation (0: run to the end); --resume continues");
  s.bind("run.tensorboard", &run.tensorboard,
         "write TensorBoard event files (events.out.tfevents.*) in the run folder: every number of metrics.jsonl "
         "as a scalar (tensorboard --logdir runs/)");
  s.bind("run.cpu_backend", &run.cpu_backend,
         "CPU path's convolutions and fp32 matrix products: auto (onednn when kd was built with it), onednn "
         "(oneDNN's JIT kernels) or reference (kd's im2col + OpenBLAS, what the tests compare with)");
  s.bind("run.threads", &run.threads,
         "OpenMP threads of the CPU path (0: OMP_NUM_THREADS, else every core). On a machine shared with another "
         "job, give kd the cores that are free: threads that wait for a core someone else holds cost more than they "
         "bring. Exact resume on the CPU needs the same count");
  if (mode == RunMode::train) s.bind("run.label_smoothing", &run.label_smoothing, "label smoothing of the loss");
  s.bind("run.autotune", &run.autotune,
         "GPU: time cuDNN's candidate engines once per convolution shape and keep the fastest");
  s.bind("run.groupnorm_one_pass", &run.groupnorm_one_pass,
         "GPU: GroupNorm's forward and backward in one pass over memory (each span of groups kept in shared memory "
         "where it fits); "
         "false: the two-pass path everywhere");
  s.bind("run.copy_stream", &run.copy_stream,
         "GPU: upload each batch's pixels on a copy stream of its own while the previous step computes (false: on "
         "the compute stream, after it)");
  s.bind("run.conv_wgrad_im2col", &run.conv_wgrad_im2col,
         "GPU: weight gradients of patch convolutions (not 1x1 stride 1; one group) as im2col and one long GEMM "
         "instead of cuDNN's engines; off until a GPU has measured it");
  s.bind("run.conv_pad_channels", &run.conv_pad_channels,
         "GPU: run convolutions with fewer than 8 input channels (the RGB stem) on inputs and weights zero-padded "
         "to 8 channels, which tensor cores take; off until a GPU has measured it");
  s.bind("run.autotune_cache", &run.autotune_cache,
         "file that keeps autotuning choices for later runs (empty: $KD_CACHE_DIR, $XDG_CACHE_HOME/kd or "
         "~/.cache/kd; off: none)");

  s.bind("data.kind", &data.kind, "dataset format", {"fashion-mnist", "idx", "image_folder", "list", "images", "shards"});
  s.bind("data.train_kind", &data.train_kind,
         "format of the training source when it differs from data.kind, e.g. images (a folder of unlabelled images "
         "to distill on, evaluated on data.test)",
         {"", "fashion-mnist", "idx", "image_folder", "list", "images", "shards"});
  s.bind("data.train", &data.train, "training split: a name (fashion-mnist) or a path");
  s.bind("data.test", &data.test, "evaluation split: a name (fashion-mnist) or a path");
  s.bind("data.train_labels", &data.train_labels, "idx: labels file of the training split");
  s.bind("data.test_labels", &data.test_labels, "idx: labels file of the evaluation split");
  s.bind("data.root", &data.root, "list files: folder the listed paths are relative to");
  s.bind("data.train_subset", &data.train_subset, "train on a class-balanced subset of this many images (0: all)");
  s.bind("data.subset_seed", &data.subset_seed, "seed that picks the subset");
  s.bind("data.test_limit", &data.test_limit, "evaluate on the first N test images (0: all)");
  s.bind("data.batch_size", &data.batch_size, "global batch size");
  s.bind("data.loader_threads", &data.loader_threads, "image decoding threads");
  s.bind("data.prefetch", &data.prefetch, "batches decoded ahead of the step");
  s.bind("data.jpeg_decoder", &data.jpeg_decoder,
         "who decodes JPEG files: stb (stb_image), turbo (libjpeg-turbo: the same pixels within 3 levels, faster) "
         "or nvjpeg (on the GPU, with its hardware engines where it has them; run.device=cuda); exact resume needs "
         "the same decoder",
         {"stb", "turbo", "nvjpeg"});
  s.bind("data.max_image_mpixels", &data.max_image_mpixels,
         "the most pixels an image may have, in Mpixel (2^20): a larger header is refused before anything is "
         "allocated, and the image skipped and counted like a corrupt one (one image costs at most 3 bytes a pixel)");
  s.bind("data.jpeg_views_only", &data.jpeg_views_only,
         "turbo: training decodes only the part of a JPEG its views read, at the smallest DCT scale (1/8, 1/4, 1/2, "
         "1) that keeps the output resolution (faster; pixels differ from a whole decode, so exact resume needs the "
         "same setting)");
  s.bind("data.shuffle_shards", &data.shuffle_shards,
         "shards (kd pack): each epoch takes the shards in a seeded order, this many at a time, and shuffles the "
         "samples of those shards together");
  s.bind("data.cached_shards", &data.cached_shards,
         "shards: whole shards kept in memory per source (0: twice data.shuffle_shards)");

  s.bind("augment.resolution", &augment.resolution, "input size of the trained model, px");
  if (mode == RunMode::distill)
    s.bind("augment.teacher_resolution", &augment.teacher_resolution, "teacher input size, px (0: the same)");
  s.bind("augment.area_min", &augment.area_min, "inception crop: smallest area fraction");
  s.bind("augment.area_max", &augment.area_max, "inception crop: largest area fraction");
  s.bind("augment.aspect_min", &augment.aspect_min, "inception crop: smallest aspect ratio");
  s.bind("augment.aspect_max", &augment.aspect_max, "inception crop: largest aspect ratio");
  s.bind("augment.flip", &augment.flip, "random horizontal flips");
  if (mode == RunMode::distill) {
    s.bind("augment.mixup_alpha", &augment.mixup_alpha, "mixup: Beta(alpha, alpha), folded to [0.5, 1]");
    s.bind("augment.mixup_per_sample", &augment.mixup_per_sample, "mixup: one coefficient per image (else per batch)");
  }
  s.bind("augment.eval_crop_fraction", &augment.eval_crop_fraction, "evaluation: centre crop / resized short side");
  s.bind("augment.mean", &augment.mean, "per-channel mean of pixels in [0, 1]");
  s.bind("augment.std", &augment.std, "per-channel std of pixels in [0, 1]");

  if (mode == RunMode::train) {
    s.bind("model.arch", &model.arch, "architecture, e.g. resnetv2_50x1_bit or resnetv2(depths=1-1-1, width=32, stem=conv3)");
    s.bind("model.weights", &model.weights, "initial weights (safetensors); empty: random");
    s.bind("model.zero_head", &model.zero_head, "initialise the dense head to zero");
    s.bind("model.reset_head", &model.reset_head,
           "load model.weights except the classifier (e.g. a teacher of another class count to fine-tune)");
    s.bind("model.sync_bn", &model.sync_bn,
           "BatchNorm: batch statistics over all ranks' images (else per rank and micro-batch; rank 0's running "
           "statistics are saved)");
  } else {
    s.bind("student.arch", &student.arch, "student architecture");
    s.bind("student.weights", &student.weights, "initial student weights; empty: from scratch");
    s.bind("student.zero_head", &student.zero_head, "initialise the student's dense head to zero (the paper)");
    s.bind("student.reset_head", &student.reset_head, "load student.weights except the classifier");
    s.bind("student.sync_bn", &student.sync_bn,
           "BatchNorm: batch statistics over all ranks' images (else per rank and micro-batch; rank 0's running "
           "statistics are saved)");
    s.bind("teacher.arch", &teacher.arch, "teacher architecture(s): one per member, one for all, or none (kd checkpoints know theirs)");
    s.bind("teacher.weights", &teacher.weights, "teacher weights: one file per ensemble member");
    s.bind("teacher.resolution", &teacher.resolution,
           "input size per teacher, px (one for all; none: augment.teacher_resolution); one member: "
           "teacher.N.resolution=384 (any teacher list: teacher.N.weights=...)");
    s.bind("teacher.precision", &teacher.precision,
           "default: the context's (bf16 on a GPU, fp32 on the CPU); fp8: E4M3 inputs and weights in the convolutions "
           "of >= 16 channels, per-tensor scales calibrated on training images (cuDNN's FP8 convolutions on "
           "GPUs that have them, emulated elsewhere: engine/fp8_teacher.h)",
           {"default", "fp8"});
    s.bind("teacher.fp8_calibration_batches", &teacher.fp8_calibration_batches,
           "fp8: batches of data.batch_size training images (centre crops) whose largest activations set the scales");
    s.bind("teacher.fp8_min_agreement", &teacher.fp8_min_agreement,
           "fp8: after calibration, each teacher's FP8 top-1 is compared with its full-precision top-1 on the first "
           "calibration images (up to 1,024); below this agreement the run refuses to start (a broken or unsuitable "
           "FP8 teacher), 0: never");
    s.bind("teacher.fp8_max_kl", &teacher.fp8_max_kl,
           "fp8: the same check's largest mean KL(full precision || FP8) at temperature 1 that a run accepts");
    s.bind("distill.strategy", &distill.strategy, "teaching strategy",
           {"fixed", "independent", "consistent", "function_matching"});
    s.bind("distill.distance", &distill.distance, "loss between student and teacher outputs",
           {"kl", "hard", "l2", "euclidean", "logsoftmax_euclidean"});
    s.bind("distill.temperature", &distill.temperature, "softmax temperature T of the kl distance (loss * T^2)");
    s.bind("distill.label_smoothing", &distill.label_smoothing, "label smoothing of the 'hard' distance");
    s.bind("distill.ensemble", &distill.ensemble,
           "several teachers: the loss against the mean of their softmaxes (kl, hard; l2 and euclidean average the "
           "per-teacher distances) or against the mean of their logits (every distance)",
           {"softmax", "logits"});
  }

  s.bind("optim.name", &optim.name, "optimizer (shampoo: docs/shampoo.md)", {"adam", "sgd", "shampoo"});
  s.bind("optim.lr", &optim.lr, "peak learning rate");
  s.bind("optim.weight_decay", &optim.weight_decay, "decoupled weight decay (x lr), conv/dense kernels only");
  s.bind("optim.beta1", &optim.beta1, "adam (and shampoo's adam grafting): first-moment decay");
  s.bind("optim.beta2", &optim.beta2, "adam (and shampoo's adam grafting): second-moment decay");
  s.bind("optim.eps", &optim.eps, "adam, adagrad grafting: epsilon");
  s.bind("optim.momentum", &optim.momentum, "sgd (and shampoo's sgd grafting): momentum");
  s.bind("optim.nesterov", &optim.nesterov, "sgd (and shampoo's sgd grafting): Nesterov momentum");
  s.bind("optim.clip_norm", &optim.clip_norm, "clip gradients to this global norm (0: off)");
  s.bind("optim.shampoo_graft", &optim.shampoo.graft, "shampoo: the optimizer whose step size each block takes",
         {"adam", "adagrad", "sgd"});
  s.bind("optim.shampoo_block_size", &optim.shampoo.block_size, "shampoo: largest side of a preconditioned block");
  s.bind("optim.shampoo_beta2", &optim.shampoo.beta2, "shampoo: decay of the statistics L, R (1: plain sums)");
  s.bind("optim.shampoo_eps", &optim.shampoo.eps, "shampoo: damping, relative to a statistic's largest eigenvalue");
  s.bind("optim.shampoo_statistics_every", &optim.shampoo.statistics_every, "shampoo: steps between statistics updates");
  s.bind("optim.shampoo_precondition_every", &optim.shampoo.precondition_every,
         "shampoo: steps between inverse-root computations");
  s.bind("optim.shampoo_start_step", &optim.shampoo.start_step,
         "shampoo: first step (1-based) that uses Shampoo's direction (before it: the grafted optimizer)");
  s.bind("optim.shampoo_root_delay", &optim.shampoo.root_delay,
         "shampoo: roots computed at step t are used from step t + delay (fixed: results never depend on timing)");
  s.bind("optim.shampoo_max_rejections", &optim.shampoo.max_rejections,
         "shampoo: root steps in a row with rejected roots before the run stops");
  s.bind("optim.accumulate", &accumulate,
         "micro-batches per rank and step: data.batch_size stays the global batch (ranks x accumulate must divide it)");
  s.bind("schedule.warmup_steps", &schedule.warmup_steps, "linear warmup steps");
  s.bind("schedule.warmup_fraction", &warmup_fraction, "warmup as a fraction of all steps (if warmup_steps is 0)");
  s.bind("schedule.decay", &schedule.decay, "after warmup", {"cosine", "linear", "constant"});
  s.bind("schedule.final_fraction", &schedule.final_fraction, "final lr as a fraction of the peak");

  s.bind("eval.every", &eval.every, "steps between evaluations (0: at the end only)");
  s.bind("eval.batch_size", &eval.batch_size, "evaluation batch size");
  s.bind("eval.resize", &eval.resize,
         "direct: the centre crop sampled bilinearly straight to the input size (as the training views); bilinear, "
         "bicubic, area: the short side resized to resolution / augment.eval_crop_fraction with that filter "
         "(antialiased, as timm's and big_vision's evals), then the centre crop",
         {"direct", "bilinear", "bicubic", "area"});
  s.bind("checkpoint.every", &checkpoint.every, "steps between checkpoints (0: at the end only)");
  s.bind("checkpoint.keep", &checkpoint.keep, "checkpoints kept in the run folder");

  s.bind("comm.backend", &comm.backend, "data-parallel transport (auto: local for one rank, nccl on GPUs, mpi on CPUs)",
         {"auto", "local", "mpi", "nccl"});
  s.bind("comm.timeout_s", &comm.timeout_s, "a collective open this long ends the job, naming the rank that hung");
  s.bind("comm.bucket_mb", &comm.bucket_mb, "gradient all-reduce bucket, MiB");
  s.bind("run.skip_nonfinite", &run.skip_nonfinite,
         "steps with a NaN/Inf loss or gradient to skip without an update before the run stops (0: stop at the first)");
  s.bind("run.step_stats", &run.step_stats,
         "where the step's loss, agreement and gradient norm are kept: device (read every run.log_every steps; the "
         "step never waits for the host), host (read every step), auto (device on a GPU)",
         {"auto", "device", "host"});
  s.bind("run.cuda_graph", &run.cuda_graph,
         "GPU: capture the step's device work (forward, loss, backward, optimizer) once as a CUDA graph and replay "
         "it, after two uncaptured steps; profiled steps run uncaptured; shampoo's update runs after the graph. auto: "
         "on where the run allows it (one rank, run.step_stats on the device); on: also several ranks over NCCL (its "
         "collectives captured), or an error saying why not (on the CPU the split step runs uncaptured); off",
         {"auto", "on", "off"});
  s.bind("run.allow_data_change", &run.allow_data_change,
         "resume even when the training data differs from what the checkpoint was trained on");

  s.bind("comm.first_bucket_mb", &comm.first_bucket_mb, "the first gradient bucket, MiB (small: starts early)");
  s.bind("comm.overlap", &comm.overlap, "all-reduce gradient buckets while backward runs (off: one after it)");
}

void TrainOptions::validate() const {
  KD_CHECK(run.steps > 0 || run.epochs > 0, "set run.steps or run.epochs to a positive value");
  KD_CHECK(run.log_every > 0, "run.log_every must be positive");
  KD_CHECK(run.threads >= 0, "run.threads must not be negative, got ", run.threads);
  parse_cpu_backend(run.cpu_backend);  // throws naming the value
  KD_CHECK(run.stop_after >= 0, "run.stop_after must not be negative");
  KD_CHECK(run.skip_nonfinite >= 0, "run.skip_nonfinite must not be negative, got ", run.skip_nonfinite);
  KD_CHECK(data.batch_size > 0, "data.batch_size must be positive, got ", data.batch_size);
  KD_CHECK(data.loader_threads > 0 && data.prefetch > 0, "data.loader_threads and data.prefetch must be positive");
  KD_CHECK(data.max_image_mpixels > 0, "data.max_image_mpixels must be positive, got ", data.max_image_mpixels);
  KD_CHECK(data.shuffle_shards >= 1, "data.shuffle_shards must be at least 1, got ", data.shuffle_shards);
  KD_CHECK(data.cached_shards >= 0, "data.cached_shards must not be negative (0: twice data.shuffle_shards)");
  KD_CHECK(augment.resolution > 0, "augment.resolution must be positive");
  KD_CHECK(augment.area_min > 0 && augment.area_min <= augment.area_max && augment.area_max <= 1,
           "augment.area_min/area_max must satisfy 0 < min <= max <= 1");
  KD_CHECK(augment.aspect_min > 0 && augment.aspect_min <= augment.aspect_max,
           "augment.aspect_min/aspect_max must satisfy 0 < min <= max");
  KD_CHECK(augment.mean.size() == 3 && augment.std.size() == 3, "augment.mean and augment.std need 3 values");
  for (double v : augment.std) KD_CHECK(v > 0, "augment.std values must be positive");
  KD_CHECK(augment.eval_crop_fraction > 0 && augment.eval_crop_fraction <= 1, "augment.eval_crop_fraction must be in (0, 1]");
  KD_CHECK(!trained_model().arch.empty(), mode == RunMode::train ? "model.arch" : "student.arch", " is required");
  if (mode == RunMode::distill) {
    KD_CHECK(!teacher.weights.empty(), "teacher.weights is required (one file per ensemble member)");
    KD_CHECK(teacher.arch.size() <= 1 || teacher.arch.size() == teacher.weights.size(), "teacher.arch has ",
             teacher.arch.size(), " entries for ", teacher.weights.size(),
             " teacher.weights (give none for kd checkpoints, one for all, or one each)");
    KD_CHECK(teacher.resolution.size() <= 1 || teacher.resolution.size() == teacher.weights.size(),
             "teacher.resolution has ", teacher.resolution.size(), " entries for ", teacher.weights.size(),
             " teacher.weights (give none, one for all, or one each)");
    for (int64_t r : teacher.resolution) KD_CHECK(r > 0, "teacher.resolution values must be positive, got ", r);
    KD_CHECK(teacher.fp8_calibration_batches >= 1, "teacher.fp8_calibration_batches must be >= 1, got ",
             teacher.fp8_calibration_batches);
    KD_CHECK(teacher.fp8_min_agreement >= 0 && teacher.fp8_min_agreement <= 1,
             "teacher.fp8_min_agreement must be in [0, 1], got ", teacher.fp8_min_agreement);
    KD_CHECK(teacher.fp8_max_kl > 0, "teacher.fp8_max_kl must be positive, got ", teacher.fp8_max_kl);
    KD_CHECK(distill.temperature > 0, "distill.temperature must be positive");
    KD_CHECK(augment.mixup_alpha > 0, "augment.mixup_alpha must be positive");
  }
  KD_CHECK(optim.lr > 0, "optim.lr must be positive");
  KD_CHECK(warmup_fraction >= 0 && warmup_fraction < 1, "schedule.warmup_fraction must be in [0, 1)");
  KD_CHECK(checkpoint.keep >= 1, "checkpoint.keep must be at least 1");
  KD_CHECK(eval.batch_size > 0, "eval.batch_size must be positive");
  KD_CHECK(accumulate >= 1, "optim.accumulate must be at least 1, got ", accumulate);
  KD_CHECK(data.batch_size % accumulate == 0, "data.batch_size = ", data.batch_size,
           " does not split into optim.accumulate = ", accumulate, " micro-batches");
  KD_CHECK(comm.timeout_s > 0, "comm.timeout_s must be positive");
  KD_CHECK(comm.bucket_mb > 0 && comm.first_bucket_mb > 0, "comm.bucket_mb and comm.first_bucket_mb must be positive");
}

StepConfig TrainOptions::step_config() const {
  StepConfig c;
  c.mode = mode;
  c.seed = uint64_t(run.seed);
  c.recipe = augment.recipe();
  c.norm = augment.normalization();
  c.student_resolution = augment.resolution;
  c.teacher_resolution = augment.teacher_resolution > 0 ? augment.teacher_resolution : augment.resolution;
  if (mode == RunMode::distill) {
    c.strategy = parse_teaching_strategy(distill.strategy);
    c.loss.distance = parse_distill_distance(distill.distance);
    c.loss.temperature = float(distill.temperature);
    c.loss.label_smoothing = float(distill.label_smoothing);
  } else {
    c.label_smoothing = float(run.label_smoothing);
  }
  if (mode == RunMode::distill && !teacher.resolution.empty())
    for (size_t k = 0; k < teacher.weights.size(); ++k)
      c.teacher_resolutions.push_back(teacher.resolution[teacher.resolution.size() == 1 ? 0 : k]);
  if (!c.teacher_resolutions.empty()) c.teacher_resolution = c.teacher_resolutions[0];
  c.ensemble_logits = distill.ensemble == "logits";
  c.global_batch = data.batch_size;
  c.accumulate = accumulate;
  return c;
}

GradSyncOptions TrainOptions::grad_sync() const {
  GradSyncOptions g;
  g.accumulate = accumulate;
  g.bucket_mb = comm.bucket_mb;
  g.first_bucket_mb = comm.first_bucket_mb;
  g.overlap = comm.overlap;
  return g;
}

}  // namespace kd
