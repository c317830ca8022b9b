#include "tools/cli/train.h"

#include <cstdio>

#include "engine/config.h"
#include "engine/safetensors.h"
#include "train/fp8_calibration.h"
#include "train/pipeline.h"
#include "train/trainer.h"

namespace kd::cli {

namespace {

struct TrainArgs {
  std::vector<std::string> configs;
  std::vector<std::string> overrides;
  bool resume = false, print_config = false, list_keys = false;
};

int run_train(RunMode mode, const TrainArgs& a) {
  TrainOptions options(mode);
  ConfigSchema schema;
  options.bind(schema);
  if (a.list_keys) {
    std::printf("%s", schema.help().c_str());
    return 0;
  }
  for (const std::string& path : a.configs) schema.load_file(path);
  for (const std::string& assignment : a.overrides) schema.apply_override(assignment);
  if (a.print_config) {
    std::printf("%s", schema.to_toml().c_str());
    return 0;
  }
  return run_training(options, schema.to_toml(), a.resume).exit_code();
}

void add_train_command(CLI::App& app, RunMode mode, int* exit_code) {
  auto args = std::make_shared<TrainArgs>();
  const bool distill = mode == RunMode::distill;
  CLI::App* cmd = app.add_subcommand(
      distill ? "distill" : "train",
      distill ? "Distill teacher(s) into a student by function matching (or another teaching strategy)"
              : "Train a model from labels (e.g. to make a teacher)");
  cmd->add_option("--config,-c", args->configs, "TOML config file(s), applied in order (repeat -c)")
      ->allow_extra_args(false)
      ->check(CLI::ExistingFile);
  cmd->add_option("overrides", args->overrides, "section.key=value overrides, applied after the config files");
  cmd->add_flag("--resume", args->resume, "continue from the run folder's latest checkpoint, if there is one");
  cmd->add_flag("--print-config", args->print_config, "print the resolved configuration and exit");
  cmd->add_flag("--list-keys", args->list_keys, "list every configuration key with its default and exit");
  cmd->footer("Example: kd " + std::string(distill ? "distill" : "train") +
              " -c configs/fashion_mnist_" + (distill ? "distill" : "teacher") + ".toml run.steps=1000 optim.lr=3e-3");
  cmd->callback([args, mode, exit_code] { *exit_code = run_train(mode, *args); });
}

struct EvalArgs {
  std::string checkpoint;
  std::vector<std::string> teachers, configs, overrides;
  std::string teacher_arch, device = "auto", precision = "default";
  bool json = false, list_keys = false;
};

int run_eval(const EvalArgs& a) {
  // kd eval reads kd train and kd distill configs alike: the keys of both modes, each bound once.
  // The checkpoint is the student; of the configuration, evaluation uses [data], [augment]
  // (augment.resolution is the student's input size, teacher.resolution and
  // augment.teacher_resolution the teachers') and [eval]; the teachers are --teacher's.
  TrainOptions options(RunMode::distill), train_only(RunMode::train);
  ConfigSchema schema, train_schema;
  options.bind(schema);
  train_only.bind(train_schema);
  schema.add_missing(train_schema);
  if (a.list_keys) {
    std::printf("%s", schema.help().c_str());
    return 0;
  }
  KD_CHECK(!a.checkpoint.empty(), "no checkpoint to evaluate: kd eval CHECKPOINT [-c CONFIG] [--teacher T]");
  // Data and preprocessing come from the checkpoint's own configuration, then --config, then
  // the overrides.
  {
    SafetensorsFile file = SafetensorsFile::open(a.checkpoint);
    auto it = file.metadata().find("config");
    if (it != file.metadata().end()) {
      // The stored config may belong to kd distill: read it with that schema and copy over what
      // evaluation needs.
      const auto mode = file.metadata().find("mode");
      const bool distilled = mode != file.metadata().end() ? mode->second == "distill"
                                                           : it->second.find("[student]") != std::string::npos;
      TrainOptions stored(distilled ? RunMode::distill : RunMode::train);
      ConfigSchema stored_schema;
      stored.bind(stored_schema);
      stored_schema.load_string(it->second, a.checkpoint + " (stored config)");
      options.data = stored.data;
      options.augment = stored.augment;
      options.eval = stored.eval;
    }
  }
  for (const std::string& path : a.configs) schema.load_file(path);
  for (const std::string& assignment : a.overrides) schema.apply_override(assignment);
  auto ctx = make_context(a.device);
  const bool fp8 = a.precision == "fp8";
  const Datasets data = open_datasets(options.data, /*need_train=*/fp8);
  std::unique_ptr<Model> student = load_checkpoint_model(*ctx, a.checkpoint, /*frozen=*/true);
  KD_CHECK(student->spec().num_classes == data.num_classes, a.checkpoint, " has ", student->spec().num_classes,
           " classes, the evaluation data ", data.num_classes);
  TeacherOptions& t = options.teacher;
  t.weights = a.teachers;
  t.arch = a.teacher_arch.empty() ? std::vector<std::string>{} : std::vector<std::string>{a.teacher_arch};
  KD_CHECK(t.resolution.size() <= 1 || t.resolution.size() == t.weights.size(), "teacher.resolution has ",
           t.resolution.size(), " entries for ", t.weights.size(), " --teacher(s) (give none, one for all, or one each)");
  auto teacher_models = build_teachers(*ctx, t, data.num_classes);
  std::vector<Model*> teachers;
  for (auto& m : teacher_models) teachers.push_back(m.get());
  EvalSettings settings = eval_settings(options);
  if (!teachers.empty() && options.augment.teacher_resolution == 0) settings.teacher_resolution = settings.student_resolution;
  if (fp8) {
    // The checkpoint as an FP8 teacher would run (engine/fp8_teacher.h); with --teacher T for the
    // same T, the agreement and KL measure what FP8 changes in its function.
    Fp8Check check;
    const Fp8Summary s =
        prepare_fp8_teachers(*ctx, {student.get()}, {settings.student_resolution}, data.train, settings,
                             options.teacher.fp8_calibration_batches, options.data.batch_size, &check);
    if (!a.json)
      std::printf("%s: %s, scales calibrated on %lld training images; %s\n%s: fp8 check: %s\n", a.checkpoint.c_str(),
                  s.describe().c_str(), (long long)s.calibration_images, fp8_path(*ctx).c_str(), a.checkpoint.c_str(),
                  check.describe().c_str());
  }
  const EvalResult r = evaluate(*ctx, *student, teachers, data.test, settings);
  if (a.json)
    std::printf("%s\n", r.json().c_str());
  else
    std::printf("%s: %s\n", a.checkpoint.c_str(), r.summary().c_str());
  return 0;
}

}  // namespace

void add_train_commands(CLI::App& app, int* exit_code) {
  add_train_command(app, RunMode::train, exit_code);
  add_train_command(app, RunMode::distill, exit_code);
}

void add_eval_command(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("eval", "Top-1/top-5 of a checkpoint and its agreement with teacher(s)");
  cmd->add_option("checkpoint", args->checkpoint, "kd checkpoint (safetensors): the student")->check(CLI::ExistingFile);
  cmd->add_option("--teacher,-t", args->teachers, "teacher checkpoint(s) to measure agreement with (repeat -t)")
      ->allow_extra_args(false)
      ->check(CLI::ExistingFile);
  cmd->add_option("--teacher-arch", args->teacher_arch, "architecture of the teachers when they are plain timm weights");
  cmd->add_option("--config,-c", args->configs,
                  "TOML config file(s), of kd train or kd distill: [data], [augment] and [eval] apply")
      ->allow_extra_args(false)
      ->check(CLI::ExistingFile);
  cmd->add_option("overrides", args->overrides, "section.key=value overrides (e.g. data.test=/path)");
  cmd->add_option("--device", args->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->add_option("--precision", args->precision,
                  "fp8: evaluate the checkpoint as an FP8 teacher (teacher.precision; scales calibrated on "
                  "teacher.fp8_calibration_batches batches of training images)")
      ->check(CLI::IsMember({"default", "fp8"}))
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "print the result as JSON");
  cmd->add_flag("--list-keys", args->list_keys, "list every configuration key kd eval accepts and exit");
  cmd->callback([args, exit_code] { *exit_code = run_eval(*args); });
}

}  // namespace kd::cli
