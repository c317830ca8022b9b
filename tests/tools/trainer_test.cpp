// kd train / kd distill end to end on synthetic images: exact resume, agreement with the
// teacher rising far above chance, unreadable images skipped and counted, a diverging run
// stopped with its last good checkpoint kept, and clear errors for bad configurations.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "engine/safetensors.h"
#include "tests/support/testing.h"
#include "tests/tools/tool_fixtures.h"
#if KD_HAVE_JPEG
#include "tests/data/jpeg_fixtures.h"
#endif

namespace kd {
namespace {

using test::concat;
using test::expect_same_weights;
using test::json_value;
using test::logged_windows;
using test::on_gpu;
using test::run_kd;
using test::tiny_run;

const std::string kTeacherArch = "model.arch=resnetv2(depths=1-1, width=16, stem=conv3)";
const std::string kStudentArch = "student.arch=resnetv2(depths=1-1, width=8, stem=conv3)";

// One trained teacher shared by the tests of this file (built once, in a folder that lives as
// long as the test process).
class Distill : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    test::write_stripes_dataset(*dir_);
    const auto r = run_kd(concat({"train"}, concat(tiny_run(*dir_, "teacher", 60), {kTeacherArch, "optim.lr=0.01"})));
    ASSERT_EQ(r.code, 0) << r.err;
    teacher_ = dir_->str() + "/runs/teacher/model.safetensors";
    teacher_top1_ = json_value(test::read_text(dir_->str() + "/runs/teacher/summary.json"), "student_top1");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::vector<std::string> distill_run(const std::string& name, int steps) {
    return concat(tiny_run(*dir_, name, steps), {kStudentArch, "teacher.weights=" + teacher_});
  }
  static test::TempDir* dir_;
  static std::string teacher_;
  static double teacher_top1_;
};
test::TempDir* Distill::dir_ = nullptr;
std::string Distill::teacher_;
double Distill::teacher_top1_ = 0;

TEST_F(Distill, TeacherLearnsTheSyntheticClasses) { EXPECT_GE(teacher_top1_, 0.9); }

TEST_F(Distill, AgreementWithTheTeacherRisesFarAboveChance) {
  const auto before = run_kd(concat({"distill"}, concat(distill_run("fm_0", 1), {"optim.lr=1e-9"})));
  ASSERT_EQ(before.code, 0) << before.err;
  const auto after = run_kd(concat({"distill"}, concat(distill_run("fm", 150), {"optim.lr=0.01"})));
  ASSERT_EQ(after.code, 0) << after.err;
  const std::string summary = test::read_text(dir_->str() + "/runs/fm/summary.json");
  const double agreement = json_value(summary, "agreement");
  const double start = json_value(test::read_text(dir_->str() + "/runs/fm_0/summary.json"), "agreement");
  EXPECT_LE(start, 0.5) << "a zero-initialised head agrees with the teacher only by chance";
  EXPECT_GE(agreement, 0.8) << summary;
  EXPECT_GE(json_value(summary, "teacher_top1"), 0.9);
  EXPECT_TRUE(std::filesystem::exists(dir_->str() + "/runs/fm/metrics.jsonl"));
  EXPECT_TRUE(std::filesystem::exists(dir_->str() + "/runs/fm/config.toml"));
}

TEST_F(Distill, ResumeIsBitwiseIdentical) {
  // 10 steps straight vs 5 steps, stop, resume, 5 more: identical weights, bit for bit.
  const auto straight = run_kd(concat({"distill"}, distill_run("straight", 10)));
  ASSERT_EQ(straight.code, 0) << straight.err;
  const auto first = run_kd(concat({"distill"}, concat(distill_run("resumed", 10), {"run.stop_after=5"})));
  ASSERT_EQ(first.code, 0) << first.err;
  EXPECT_NE(first.err.find("stopped by run.stop_after after step 5"), std::string::npos) << first.err;
  EXPECT_FALSE(std::filesystem::exists(dir_->str() + "/runs/resumed/model.safetensors"));
  const auto second = run_kd(concat({"distill", "--resume"}, distill_run("resumed", 10)));
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_NE(second.err.find("at step 5"), std::string::npos) << second.err;
  expect_same_weights(dir_->str() + "/runs/straight/model.safetensors",
                      dir_->str() + "/runs/resumed/model.safetensors");
}

// teacher.precision = fp8 (engine/fp8_teacher.h, emulated): the teacher's calibration reads the
// same training images in every run, so a stopped and resumed run ends bit for bit where the
// straight one does; and `kd eval --precision fp8` measures the FP8 teacher against itself.
TEST_F(Distill, Fp8TeacherResumesBitwiseAndAgreesWithTheFullPrecisionOne) {
  const std::vector<std::string> fp8 = {"teacher.precision=fp8", "teacher.fp8_calibration_batches=2"};
  const auto straight = run_kd(concat({"distill"}, concat(distill_run("fp8_straight", 8), fp8)));
  ASSERT_EQ(straight.code, 0) << straight.err;
  EXPECT_NE(straight.err.find("teacher precision fp8: FP8 (E4M3) in 8 of 9 convolutions"), std::string::npos)
      << straight.err;
  // The check after calibration: the FP8 teacher against itself in full precision, on the 2 x 16
  // calibration images (train/fp8_calibration.h).
  const std::string check = "fp8 check: top-1 agreement with full precision ";
  const size_t at = straight.err.find(check);
  ASSERT_NE(at, std::string::npos) << straight.err;
  EXPECT_GE(std::stod(straight.err.substr(at + check.size())), 90.0) << straight.err.substr(at, 120);
  EXPECT_NE(straight.err.find("on 32 calibration images", at), std::string::npos) << straight.err.substr(at, 120);
  const auto first =
      run_kd(concat({"distill"}, concat(distill_run("fp8_resumed", 8), concat(fp8, {"run.stop_after=4"}))));
  ASSERT_EQ(first.code, 0) << first.err;
  const auto second = run_kd(concat({"distill", "--resume"}, concat(distill_run("fp8_resumed", 8), fp8)));
  ASSERT_EQ(second.code, 0) << second.err;
  expect_same_weights(dir_->str() + "/runs/fp8_straight/model.safetensors",
                      dir_->str() + "/runs/fp8_resumed/model.safetensors");
  const auto eval =
      run_kd({"eval", teacher_, "--teacher", teacher_, "--precision", "fp8", "--json", "--device", "cpu"});
  ASSERT_EQ(eval.code, 0) << eval.err;
  EXPECT_GE(json_value(eval.out, "agreement"), 0.95) << eval.out;
  EXPECT_LT(json_value(eval.out, "kl"), 0.01) << eval.out;
  EXPECT_GT(json_value(eval.out, "kl"), 0.0) << "FP8 rounding changes the function a little: " << eval.out;
}

// A teacher that FP8 moves beyond teacher.fp8_max_kl is refused before the first step, by a
// message that names the figures and the option; no checkpoint is written.
TEST_F(Distill, AnFp8TeacherBeyondTheLimitsIsRefusedBeforeTheFirstStep) {
  const auto r = run_kd(concat(
      {"distill"}, concat(distill_run("fp8_refused", 4),
                          {"teacher.precision=fp8", "teacher.fp8_calibration_batches=1", "teacher.fp8_max_kl=1e-12"})));
  EXPECT_NE(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("changes the teacher's function too much"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("above teacher.fp8_max_kl = 1e-12"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_->str() + "/runs/fp8_refused/model.safetensors"));
  const auto bad = run_kd(concat({"distill"}, concat(distill_run("fp8_bad_option", 4),
                                                     {"teacher.precision=fp8", "teacher.fp8_min_agreement=1.5"})));
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("teacher.fp8_min_agreement must be in [0, 1], got 1.5"), std::string::npos) << bad.err;
}

// An ensemble's summary.json carries each member's top-1 and the student's agreement with each.
TEST_F(Distill, EnsembleSummaryNamesEachTeacher) {
  const auto r = run_kd(concat({"distill"}, concat(tiny_run(*dir_, "ensemble", 2),
                                                   {kStudentArch, "teacher.weights=" + teacher_ + "," + teacher_})));
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string summary = test::read_text(dir_->str() + "/runs/ensemble/summary.json");
  EXPECT_NE(summary.find("\"each_teacher_top1\": ["), std::string::npos) << summary;
  EXPECT_NE(summary.find("\"each_agreement\": ["), std::string::npos) << summary;
  const auto one = run_kd(concat({"distill"}, distill_run("ensemble_of_one", 2)));
  ASSERT_EQ(one.code, 0) << one.err;
  EXPECT_EQ(test::read_text(dir_->str() + "/runs/ensemble_of_one/summary.json").find("each_agreement"),
            std::string::npos)
      << "one teacher: no per-member fields";
}

TEST_F(Distill, EveryTeachingStrategyRuns) {
  for (const char* s : {"fixed", "independent", "consistent"}) {
    const auto r = run_kd(
        concat({"distill"}, concat(distill_run(std::string("s_") + s, 4), {std::string("distill.strategy=") + s})));
    EXPECT_EQ(r.code, 0) << s << ": " << r.err;
  }
}

// Per-phase timing in real runs: the last step of every log window is profiled and its phases
// land in metrics.jsonl as ms_<phase> (positive, and together no longer than the whole window);
// run.profile_phases=false leaves them out. The same with the statistics on the device (read per
// window) and the split step of the CUDA graph (the profiled step runs plain).
TEST_F(Distill, MetricsCarryThePhasesOfOneStepPerLogWindow) {
  for (const std::string run : {"phases", "phases_device"}) {
    const std::vector<std::string> device = {"run.step_stats=device", "run.cuda_graph=on"};
    const auto r = run_kd(concat(
        {"distill"}, concat(distill_run(run, 6),
                            concat({"run.log_every=3"}, run == "phases" ? std::vector<std::string>{} : device))));
    ASSERT_EQ(r.code, 0) << r.err;
    std::istringstream log(test::read_text(dir_->str() + "/runs/" + run + "/metrics.jsonl"));
    int windows = 0;
    for (std::string line; std::getline(log, line);) {
      if (line.find("\"loss\"") == std::string::npos) continue;
      ++windows;
      double sum = 0;
      for (const char* phase : {"data_wait", "augment", "teacher_forward", "student_forward", "loss", "backward",
                                "grad_sync", "optimizer"}) {
        const double ms = json_value(line, std::string("ms_") + phase);
        EXPECT_TRUE(std::isfinite(ms) && ms >= 0) << phase << " in " << line;
        sum += std::isfinite(ms) ? ms : 0;
      }
      EXPECT_GT(json_value(line, "ms_student_forward"), 0) << line;
      const double window_ms = 3 * 16 / json_value(line, "images_per_sec") * 1e3;  // 3 steps of 16 images
      EXPECT_LT(sum, window_ms) << "one step's phases within its window's time: " << line;
    }
    EXPECT_EQ(windows, 2) << run;
  }
  const auto off = run_kd(concat({"distill"}, concat(distill_run("no_phases", 3), {"run.profile_phases=false"})));
  ASSERT_EQ(off.code, 0) << off.err;
  EXPECT_EQ(test::read_text(dir_->str() + "/runs/no_phases/metrics.jsonl").find("ms_"), std::string::npos);
}

#if KD_HAVE_JPEG
// Training on JPEGs decoded only where the views read them (data.jpeg_views_only, libjpeg-turbo):
// 64x48 photos of the stripes viewed at 16 px decode at 1/2 or 1/4 scale and only the crop's
// rows and columns. Every strategy, micro-batches and the mixup partner run; the step checks
// that each view lies inside what the loader decoded for its slot, so a disagreement between
// the loader's need and the step's recipe fails the run. The loss follows the whole decode's.
TEST_F(Distill, JpegsDecodeOnlyWhatTheViewsRead) {
  std::mt19937 rng(5);
  for (int i = 0; i < 32; ++i) {
    const int w = 64, h = 48, cls = i % 4;
    std::vector<uint8_t> px(size_t(w) * h * 3);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const int t = cls == 0 ? y : cls == 1 ? x : cls == 2 ? x + y : (x / 2 + y / 2);
        for (int c = 0; c < 3; ++c)
          px[size_t((y * w + x) * 3 + c)] = uint8_t((t / 6) % 2 ? 200 - 20 * c : 50 + int(rng() % 30));
      }
    const std::vector<uint8_t> jpeg = encode(px, w, h, 3, 90, i % 3 == 0, false);
    std::ofstream(dir_->file("jpegs/" + std::to_string(cls) + "/" + std::to_string(i) + ".jpg"), std::ios::binary)
        .write(reinterpret_cast<const char*>(jpeg.data()), std::streamsize(jpeg.size()));
  }
  const std::vector<std::string> jpegs = {"data.train=" + dir_->str() + "/jpegs", "data.jpeg_decoder=turbo",
                                          "run.log_every=1"};
  auto final_loss = [&](const std::string& name) {
    const std::string log = test::read_text(dir_->str() + "/runs/" + name + "/metrics.jsonl");
    return json_value(log.substr(log.rfind("\"loss\"") - 1), "loss");
  };
  for (const char* s : {"fixed", "independent", "consistent", "function_matching"}) {
    const std::string name = std::string("jpeg_") + s;
    const auto r = run_kd(concat(
        {"distill"},
        concat(distill_run(name, 6), concat(jpegs, {std::string("distill.strategy=") + s, "optim.accumulate=2"}))));
    EXPECT_EQ(r.code, 0) << s << ": " << r.err;
  }
  const auto whole =
      run_kd(concat({"distill"}, concat(distill_run("jpeg_whole", 6),
                                        concat(jpegs, {"optim.accumulate=2", "data.jpeg_views_only=false"}))));
  ASSERT_EQ(whole.code, 0) << whole.err;
  const double views_only = final_loss("jpeg_function_matching"), full = final_loss("jpeg_whole");
  EXPECT_NEAR(views_only, full, 0.1 * full)
      << "the views of reduced-scale decodes are slightly smoother, not different";
}
#endif

// The training loop on the GPU (bf16 activations, fp32 master weights): distillation from the
// CPU-trained teacher clears the CPU's agreement bar, across a stop and a resume on the GPU.
TEST_F(Distill, OnTheGpuAgreementRisesAcrossAResume) {
  KD_REQUIRE_CUDA();
  const auto first = run_kd(concat({"distill"}, on_gpu(concat(distill_run("gpu_fm", 150), {"run.stop_after=75"}))));
  ASSERT_EQ(first.code, 0) << first.err;
  const auto second = run_kd(concat({"distill", "--resume"}, on_gpu(distill_run("gpu_fm", 150))));
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_NE(second.err.find("at step 75"), std::string::npos) << second.err;
  const std::string summary = test::read_text(dir_->str() + "/runs/gpu_fm/summary.json");
  EXPECT_GE(json_value(summary, "agreement"), 0.8) << summary;
  EXPECT_GE(json_value(summary, "teacher_top1"), 0.9) << summary;
}

// The step without host waits (run.step_stats = device, the GPU default) against the step that
// reads its loss and gradient norm back every step: 20 steps with accumulation and clipping
// active run the same kernels in the same order (the gate's sqrt and division are IEEE on both
// sides), so weights and logged losses agree up to what cuDNN's own run-to-run differences
// (atomics in some weight-gradient engines) leave: 1e-3 relative.
TEST_F(Distill, OnTheGpuTheStepWithoutHostWaitsComputesThePlainStepsWeights) {
  KD_REQUIRE_CUDA();
  const std::vector<std::string> common = {"run.log_every=5", "optim.accumulate=2", "optim.clip_norm=0.05",
                                           "run.autotune=false"};
  const auto dev =
      run_kd(concat({"distill"}, on_gpu(concat(distill_run("gpu_stats_device", 20),
                                               concat(common, {"run.step_stats=device", "run.cuda_graph=off"})))));
  ASSERT_EQ(dev.code, 0) << dev.err;
  const auto host = run_kd(
      concat({"distill"}, on_gpu(concat(distill_run("gpu_stats_host", 20), concat(common, {"run.step_stats=host"})))));
  ASSERT_EQ(host.code, 0) << host.err;
  SafetensorsFile wa = SafetensorsFile::open(dir_->str() + "/runs/gpu_stats_host/model.safetensors");
  SafetensorsFile wb = SafetensorsFile::open(dir_->str() + "/runs/gpu_stats_device/model.safetensors");
  ASSERT_EQ(wa.names(), wb.names());
  for (const std::string& name : wa.names()) {
    const Tensor x = wa.tensor(name), y = wb.tensor(name);
    if (x.dtype() != DType::f32) continue;
    EXPECT_LE(test::rel_l2(x.data<float>(), y.data<float>(), size_t(x.numel())), 1e-3) << name;
  }
  const auto windows = logged_windows(dir_->str() + "/runs/gpu_stats_host", dir_->str() + "/runs/gpu_stats_device");
  for (const auto& [la, lb] : windows) {
    EXPECT_NEAR(json_value(la, "loss"), json_value(lb, "loss"), 1e-3 * std::fabs(json_value(la, "loss"))) << la;
    EXPECT_NEAR(json_value(la, "grad_norm"), json_value(lb, "grad_norm"), 1e-3 * json_value(la, "grad_norm")) << la;
  }
  EXPECT_EQ(windows.size(), 4u);
}

// End to end on the GPU: a short distillation with every optimisation of issue 16 on (the
// defaults: statistics on the device, the copy stream, autotuning, one-pass GroupNorm, the CUDA
// graph) follows the loss curve of the plain path (all five off) within bf16 noise: each 10-step window's mean loss
// within 5% (+0.01).
TEST_F(Distill, OnTheGpuEveryOptimisationFollowsThePlainPathsLossCurve) {
  KD_REQUIRE_CUDA();
  const auto fast = run_kd(concat({"distill"}, on_gpu(concat(distill_run("gpu_all_on", 40), {"run.log_every=10"}))));
  ASSERT_EQ(fast.code, 0) << fast.err;
  const auto plain = run_kd(concat(
      {"distill"}, on_gpu(concat(distill_run("gpu_all_off", 40),
                                 {"run.log_every=10", "run.step_stats=host", "run.copy_stream=false",
                                  "run.autotune=false", "run.groupnorm_one_pass=false", "run.cuda_graph=off"}))));
  ASSERT_EQ(plain.code, 0) << plain.err;
  const auto windows = logged_windows(dir_->str() + "/runs/gpu_all_off", dir_->str() + "/runs/gpu_all_on");
  for (const auto& [la, lb] : windows) {
    const double x = json_value(la, "loss"), y = json_value(lb, "loss");
    EXPECT_NEAR(x, y, 0.05 * std::max(x, y) + 0.01) << la << "\n" << lb;
  }
  EXPECT_EQ(windows.size(), 4u);
}

// The FP8 teacher's emulation on the GPU (bf16 arithmetic) against the CPU-trained teacher.
TEST_F(Distill, OnTheGpuTheFp8TeacherAgreesWithTheFullPrecisionOne) {
  KD_REQUIRE_CUDA();
  const auto eval =
      run_kd({"eval", teacher_, "--teacher", teacher_, "--precision", "fp8", "--json", "--device", "cuda"});
  ASSERT_EQ(eval.code, 0) << eval.err;
  EXPECT_GE(json_value(eval.out, "agreement"), 0.95) << eval.out;
  EXPECT_LT(json_value(eval.out, "kl"), 0.01) << eval.out;
}

TEST(Train, OnTheGpuTheTeacherLearnsTheSyntheticClasses) {
  KD_REQUIRE_CUDA();
  test::TempDir dir;
  test::write_stripes_dataset(dir);
  const auto r = run_kd(concat({"train"}, on_gpu(concat(tiny_run(dir, "gpu_teacher", 60), {kTeacherArch}))));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_GE(json_value(test::read_text(dir.str() + "/runs/gpu_teacher/summary.json"), "student_top1"), 0.9);
}

// A BatchNorm student (timm's resnet18): its running statistics and batch counters are in the
// checkpoints, a resumed run ends bit for bit where the straight one does, and the saved model
// carries timm's names for them (so timm's strict load accepts it).
TEST_F(Distill, BatchNormStudentResumesBitwiseWithItsRunningStatistics) {
  const std::vector<std::string> bn = {"student.arch=resnet18", "augment.resolution=32"};
  const auto straight = run_kd(concat({"distill"}, concat(distill_run("bn_straight", 8), bn)));
  ASSERT_EQ(straight.code, 0) << straight.err;
  const auto first =
      run_kd(concat({"distill"}, concat(distill_run("bn_resumed", 8), concat(bn, {"run.stop_after=4"}))));
  ASSERT_EQ(first.code, 0) << first.err;
  const auto second = run_kd(concat({"distill", "--resume"}, concat(distill_run("bn_resumed", 8), bn)));
  ASSERT_EQ(second.code, 0) << second.err;
  expect_same_weights(dir_->str() + "/runs/bn_straight/model.safetensors",
                      dir_->str() + "/runs/bn_resumed/model.safetensors");
  SafetensorsFile a = SafetensorsFile::open(dir_->str() + "/runs/bn_straight/model.safetensors");
  const Tensor count = a.tensor("bn1.num_batches_tracked");
  EXPECT_EQ(count.dtype(), DType::i64);
  EXPECT_TRUE(count.shape().empty()) << "0-d, as PyTorch saves it";
  EXPECT_EQ(count.data<int64_t>()[0], 8) << "one training forward per step";
  const Tensor var = a.tensor("layer1.0.bn1.running_var");
  double moved = 0;
  for (int64_t i = 0; i < var.numel(); ++i) moved += std::fabs(var.data<float>()[i] - 1.0f);
  EXPECT_GT(moved, 0.0) << "the running variance was updated";
}

// The paper's "random other data": the student distils on a folder of unlabelled images of
// another kind (here: the stripes turned 90 degrees and recoloured, with no class folders) and is
// evaluated on the labelled test split; kd train refuses unlabelled images.
TEST_F(Distill, DistillsOnAFolderOfUnlabelledImagesFromAnotherSource) {
  test::TempDir other;
  std::mt19937 rng(11);
  for (int i = 0; i < 48; ++i) {
    std::vector<uint8_t> px(16 * 16 * 3);
    for (int y = 0; y < 16; ++y)
      for (int x = 0; x < 16; ++x)
        for (int c = 0; c < 3; ++c)
          px[size_t((y * 16 + x) * 3 + c)] = uint8_t(((x * (i % 5 + 1) + y * (i % 3)) / 2 % 2 ? 220 : 30) - 10 * c);
    test::write_png(other.file("photos/" + std::to_string(i % 4) + "/img" + std::to_string(i) + ".png"), 16, 16, 3, px);
  }
  const std::vector<std::string> on_other = {"data.kind=image_folder", "data.train_kind=images",
                                             "data.train=" + other.str() + "/photos"};
  const auto r = run_kd(concat({"distill"}, concat(distill_run("other_data", 60), on_other)));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("images " + other.str() + "/photos (48 images, 0 classes)"), std::string::npos) << r.err;
  const std::string summary = test::read_text(dir_->str() + "/runs/other_data/summary.json");
  EXPECT_GE(json_value(summary, "agreement"), 0.3) << "some of the teacher's function transfers: " << summary;
  const auto bad =
      run_kd(concat({"train"}, concat(tiny_run(*dir_, "other_labels", 2), concat({kTeacherArch}, on_other))));
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("learns from labels"), std::string::npos) << bad.err;
}

// eval.resize: with images already at the input size and a crop fraction of 1, every filter is
// the identity, so bicubic and area evaluations equal the direct one exactly; a bad name fails.
TEST_F(Distill, EvalResizeFiltersAgreeWhereResizingIsTheIdentity) {
  const std::vector<std::string> data = {"data.kind=image_folder",
                                         "data.test=" + dir_->str() + "/test",
                                         "augment.resolution=16",
                                         "augment.eval_crop_fraction=1.0",
                                         "--device",
                                         "cpu",
                                         "--json"};
  std::vector<std::string> outs;
  for (const char* mode : {"direct", "bicubic", "area"}) {
    const auto r = run_kd(concat({"eval", teacher_}, concat(data, {std::string("eval.resize=") + mode})));
    ASSERT_EQ(r.code, 0) << mode << ": " << r.err;
    outs.push_back(r.out.substr(0, r.out.find("\"wall_s\"")));
  }
  EXPECT_EQ(outs[0], outs[1]);
  EXPECT_EQ(outs[0], outs[2]);
  const auto bad = run_kd(concat({"eval", teacher_}, concat(data, {"eval.resize=lanczos"})));
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("eval.resize"), std::string::npos) << bad.err;
}

TEST(Train, UnreadableImagesAreSkippedReportedAndCounted) {
  test::TempDir dir;
  test::write_stripes_dataset(dir, 8, 4);
  test::write_bytes(dir.file("train/vertical/broken.png"), test::random_bytes(300, 1));
  const auto r = run_kd(concat({"train"}, concat(tiny_run(dir, "bad", 6), {kTeacherArch})));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("broken.png"), std::string::npos) << "reported by path";
  EXPECT_EQ(r.err.find("broken.png"), r.err.rfind("broken.png")) << "reported once";
  EXPECT_EQ(json_value(test::read_text(dir.str() + "/runs/bad/summary.json"), "bad_images"), 1.0);
}

TEST(Train, DivergenceStopsAndKeepsTheLastGoodCheckpoint) {
  test::TempDir dir;
  test::write_stripes_dataset(dir, 8, 4);
  const auto r =
      run_kd(concat({"train"}, concat(tiny_run(dir, "nan", 30), {kTeacherArch, "optim.lr=1e30", "optim.clip_norm=0",
                                                                 "checkpoint.every=1", "schedule.warmup_steps=0"})));
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_NE(r.err.find("at step"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("last good checkpoint"), std::string::npos) << r.err;
  const std::string ckpt_dir = dir.str() + "/runs/nan/checkpoints";
  if (std::filesystem::exists(ckpt_dir + "/latest")) {
    std::string name;
    std::ifstream(ckpt_dir + "/latest") >> name;
    SafetensorsFile f = SafetensorsFile::open(ckpt_dir + "/" + name);  // loadable
    const Tensor w = f.tensor("head.fc.bias");
    for (int64_t i = 0; i < w.numel(); ++i) EXPECT_TRUE(std::isfinite(w.data<float>()[i]));
  }
  EXPECT_FALSE(std::filesystem::exists(dir.str() + "/runs/nan/model.safetensors"));
}

TEST(Train, ConfigErrorsNameTheKey) {
  test::TempDir dir;
  auto r = run_kd({"train", "run.stepz=5", kTeacherArch});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("run.stepz"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("run.steps"), std::string::npos) << "suggests the right key: " << r.err;
  r = run_kd({"train", "optim.lr=fast", kTeacherArch});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("optim.lr"), std::string::npos) << r.err;
  r = run_kd({"train", "-c", dir.str() + "/missing.toml"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("missing.toml"), std::string::npos) << r.err;
  r = run_kd(concat({"train"}, {"run.steps=2", kTeacherArch, "data.kind=image_folder",
                                "data.train=" + dir.str() + "/nothing", "run.out_dir=" + dir.str()}));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("nothing"), std::string::npos) << "names the missing dataset: " << r.err;
  r = run_kd({"distill", "run.steps=2", kStudentArch});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("teacher.weights"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kd
