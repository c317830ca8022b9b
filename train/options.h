// Everything a training run is configured by, with defaults, bound to TOML keys. `kd train`
// (supervised) uses [model]; `kd distill` uses [teacher] and [student]. configs/*.toml are ready
// examples; every key can be overridden on the command line as section.key=value.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/recipe.h"
#include "engine/config.h"
#include "engine/grad_sync.h"
#include "engine/optim/optimizer.h"
#include "kernels/distill_loss.h"
#include "train/step_config.h"

namespace kd {

struct DataOptions {
  std::string kind = "fashion-mnist";  // fashion-mnist | idx | image_folder | list | images | shards
  std::string train_kind;              // the training source's kind when it differs ("" = kind)
  std::string train = "train";         // split name (fashion-mnist) or path
  std::string test = "test";
  std::string train_labels, test_labels;  // idx: labels files (default: derived from the names)
  std::string root;                        // list files: folder the paths are relative to
  int64_t train_subset = 0;                // use a class-balanced subset of this many images (0: all)
  int64_t subset_seed = 0;
  int64_t test_limit = 0;                  // evaluate on the first N test images (0: all)
  int64_t batch_size = 128;
  int64_t loader_threads = 2;
  int64_t prefetch = 4;
  std::string jpeg_decoder = "stb";        // stb | turbo (libjpeg-turbo): who decodes JPEG files
  bool jpeg_views_only = true;             // turbo: training decodes only what the views read, DCT-scaled
  double max_image_mpixels = 64;           // larger image headers are refused unread (skipped, counted)
  int64_t shuffle_shards = 4;              // shards: shards whose samples are shuffled together
  int64_t cached_shards = 0;               // shards: whole shards kept in memory (0: 2 x shuffle_shards)
  int cached_shard_count() const { return int(cached_shards > 0 ? cached_shards : 2 * shuffle_shards); }
};

struct AugmentOptions {
  int64_t resolution = 224;          // the trained model's (student's) input size
  int64_t teacher_resolution = 0;    // 0: the same as resolution
  double area_min = 0.05, area_max = 1.0, aspect_min = 0.75, aspect_max = 4.0 / 3.0;
  bool flip = true;
  double mixup_alpha = 1.0;
  bool mixup_per_sample = false;
  double eval_crop_fraction = 0.875;
  std::vector<double> mean{0.5, 0.5, 0.5}, std{0.5, 0.5, 0.5};

  RecipeConfig recipe() const;
  Normalization normalization() const;
};

struct ModelOptions {
  std::string arch;
  std::string weights;     // initial weights (timm-named safetensors or a kd checkpoint); "" = random
  bool zero_head = false;  // dense head initialised to zero (the paper's student)
  bool reset_head = false; // load weights but the head (another class count), which starts fresh
  bool sync_bn = false;    // BatchNorm batch statistics over every rank's images (else each rank's own)
};

struct TeacherOptions {
  std::vector<std::string> arch;     // one per ensemble member (one entry applies to all)
  std::vector<std::string> weights;  // one file per member
  std::vector<int64_t> resolution;   // input size per member (one applies to all; none: augment.teacher_resolution)
  std::string precision = "default";  // or "fp8" (engine/fp8_teacher.h)
  int64_t fp8_calibration_batches = 4;  // of data.batch_size training images, centre crops
  // The check after calibration (train/fp8_calibration.h): a run refuses a teacher whose FP8
  // top-1 agrees with its full-precision top-1 less often, or whose KL to it is larger.
  double fp8_min_agreement = 0.95, fp8_max_kl = 0.1;
};

struct DistillOptions {
  std::string strategy = "function_matching";
  std::string distance = "kl";
  double temperature = 1.0;
  double label_smoothing = 0.0;  // 'hard' distance only
  std::string ensemble = "softmax";  // softmax: the loss compares with the mean of the teachers' softmaxes; logits: of their logits
};

struct RunOptions {
  std::string name = "run";
  std::string out_dir = "runs";
  std::string device = "auto";
  int64_t seed = 0;
  int64_t steps = 0;     // total optimizer steps (or set epochs)
  double epochs = 0.0;
  int64_t log_every = 50;
  bool profile_phases = true;  // time the phases of the last step of every log window
  int64_t stop_after = 0;        // stop (with a checkpoint) after this many steps in this invocation
  double label_smoothing = 0.0;  // kd train only
  bool autotune = true;           // GPU: time cuDNN's candidate engines once per convolution shape
  std::string autotune_cache;     // where the choices persist ("": the default, "off": nowhere)
  bool groupnorm_one_pass = true;  // GPU: GroupNorm forward and backward in one pass where a span fits on chip
  bool copy_stream = true;          // GPU: pixel uploads on a copy stream, overlapping the previous step
  bool conv_pad_channels = false;
  bool conv_wgrad_im2col = false;  // GPU: weight gradients of patch convolutions as im2col + GEMM (off until measured)  // GPU: convolutions on < 8 channels padded to 8 (off until measured)
  int64_t skip_nonfinite = 0;     // steps with a non-finite loss/gradient skipped before the run stops
  std::string cuda_graph = "auto";  // auto | on | off: the step captured once and replayed (train/step_graph.h)
  std::string step_stats = "auto";  // auto | device | host: where the step's loss and norm are kept (train/loop.h)
  bool allow_data_change = false; // resume even when the training data differs from the checkpoint's
  bool tensorboard = true;        // TensorBoard event files beside metrics.jsonl
  std::string cpu_backend = "auto";  // CPU path: auto, onednn or reference (kernels/cpu_backend.h)
  int64_t threads = 0;               // CPU path's OpenMP threads (0: OMP_NUM_THREADS, else every core)
};

struct EvalOptions {
  int64_t every = 0;  // steps between evaluations (0: at the end only)
  int64_t batch_size = 256;
  std::string resize = "direct";  // direct | bilinear | bicubic | area (see train/evaluate.h)
};

// Data parallelism: how the ranks of a job (mpirun, srun or torchrun-style launches) talk.
struct ParallelOptions {
  std::string backend = "auto";  // auto | local | mpi | nccl
  double timeout_s = 300;        // a collective open longer than this ends the job, naming the rank
  double bucket_mb = 25;         // gradient bucket size, MiB
  double first_bucket_mb = 1;    // the first bucket (small: communication starts early)
  bool overlap = true;           // reduce buckets while backward runs
};

struct CheckpointOptions {
  int64_t every = 0;  // steps between checkpoints (0: at the end only)
  int64_t keep = 3;
};

struct TrainOptions {
  RunMode mode = RunMode::distill;
  RunOptions run;
  DataOptions data;
  AugmentOptions augment;
  ModelOptions model;    // kd train
  ModelOptions student;  // kd distill
  TeacherOptions teacher;
  DistillOptions distill;
  OptimizerConfig optim;
  int64_t accumulate = 1;       // optim.accumulate: micro-batches per rank and step
  ScheduleConfig schedule;      // total_steps is set from run.steps / run.epochs
  double warmup_fraction = 0;   // alternative to schedule.warmup_steps
  EvalOptions eval;
  CheckpointOptions checkpoint;
  ParallelOptions comm;

  explicit TrainOptions(RunMode m);
  // Declares every key of this mode in the schema.
  void bind(ConfigSchema& schema);
  // Checks values that the schema cannot (ranges, combinations); errors name the key.
  void validate() const;
  const ModelOptions& trained_model() const { return mode == RunMode::train ? model : student; }
  // What the training step needs of these options.
  StepConfig step_config() const;
  GradSyncOptions grad_sync() const;
};

}  // namespace kd
