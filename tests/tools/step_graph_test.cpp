// run.cuda_graph (train/step_graph.h): the step split where the host's work ends (every
// micro-batch rendered into fixed inputs first, the schedule written into the statistics block,
// then forward, loss, backward and optimizer reading only device memory) computes the plain
// step's weights, bit for bit on the CPU, where nothing is captured and the split step runs as it
// is; on a GPU the split step is captured once and replayed, and must agree with the uncaptured
// one. Runs mix split and plain steps: the profiled step of each log window runs plain.
#include <gtest/gtest.h>

#include "tests/support/testing.h"
#include "tests/tools/tool_fixtures.h"

namespace kd {
namespace {

using test::concat;
using test::json_value;
using test::run_kd;
using test::tiny_run;

const std::string kTeacherArch = "model.arch=resnetv2(depths=1-1, width=16, stem=conv3)";
const std::string kStudentArch = "student.arch=resnetv2(depths=1-1, width=8, stem=conv3)";

class StepGraphRuns : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    test::write_stripes_dataset(*dir_);
    const auto r = run_kd(concat({"train"}, concat(tiny_run(*dir_, "teacher", 6), {kTeacherArch})));
    ASSERT_EQ(r.code, 0) << r.err;
    teacher_ = dir_->str() + "/runs/teacher/model.safetensors";
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  // Accumulation and clipping active, statistics on the device (the graph's precondition).
  static std::vector<std::string> distill_run(const std::string& name, int steps) {
    return concat(tiny_run(*dir_, name, steps), {kStudentArch, "teacher.weights=" + teacher_, "optim.accumulate=2",
                                                 "optim.clip_norm=0.05", "run.step_stats=device"});
  }
  static std::string run_dir(const std::string& name) { return dir_->str() + "/runs/" + name; }
  // Both runs logged the same windows with the same loss, agreement and gradient norm, exactly.
  static void expect_same_windows(const std::string& a, const std::string& b, size_t windows) {
    const auto rows = test::logged_windows(run_dir(a), run_dir(b));
    for (const auto& [la, lb] : rows) {
      for (const char* key : {"loss", "grad_norm", "lr", "train_agreement"}) {
        if (std::isnan(json_value(la, key))) continue;
        EXPECT_EQ(json_value(la, key), json_value(lb, key)) << key << "\n" << la << "\n" << lb;
      }
    }
    EXPECT_EQ(rows.size(), windows);
  }
  static test::TempDir* dir_;
  static std::string teacher_;
};
test::TempDir* StepGraphRuns::dir_ = nullptr;
std::string StepGraphRuns::teacher_;

TEST_F(StepGraphRuns, TheSplitDistillationStepIsThePlainStepBitForBit) {
  const auto split = run_kd(concat({"distill"}, concat(distill_run("graph_on", 12), {"run.cuda_graph=on"})));
  ASSERT_EQ(split.code, 0) << split.err;
  EXPECT_NE(split.err.find("the step runs split as for a CUDA graph"), std::string::npos) << split.err;
  const auto plain = run_kd(concat({"distill"}, concat(distill_run("graph_off", 12), {"run.cuda_graph=off"})));
  ASSERT_EQ(plain.code, 0) << plain.err;
  test::expect_same_weights(run_dir("graph_on") + "/model.safetensors", run_dir("graph_off") + "/model.safetensors");
  expect_same_windows("graph_on", "graph_off", 3);
}

// Supervised: the labels go up with the views (checked on the host there), the loss reads them
// on the device.
TEST_F(StepGraphRuns, TheSplitSupervisedStepIsThePlainStepBitForBit) {
  const std::vector<std::string> train = {"model.arch=resnetv2(depths=1-1, width=8, stem=conv3)", "optim.accumulate=2",
                                          "run.step_stats=device"};
  const auto split =
      run_kd(concat({"train"}, concat(tiny_run(*dir_, "train_graph_on", 12), concat(train, {"run.cuda_graph=on"}))));
  ASSERT_EQ(split.code, 0) << split.err;
  const auto plain =
      run_kd(concat({"train"}, concat(tiny_run(*dir_, "train_graph_off", 12), concat(train, {"run.cuda_graph=off"}))));
  ASSERT_EQ(plain.code, 0) << plain.err;
  test::expect_same_weights(run_dir("train_graph_on") + "/model.safetensors",
                            run_dir("train_graph_off") + "/model.safetensors");
  expect_same_windows("train_graph_on", "train_graph_off", 3);
}

// Shampoo: the graph's part ends with the backward, the optimizer (its gate read back, root steps
// every other step here) runs after it; still the plain step bit for bit.
TEST_F(StepGraphRuns, WithShampooTheSplitStepIsThePlainStepBitForBit) {
  const std::vector<std::string> shampoo = {"optim.name=shampoo", "optim.shampoo_start_step=3",
                                            "optim.shampoo_precondition_every=2"};
  const auto split =
      run_kd(concat({"distill"}, concat(distill_run("shampoo_graph_on", 12), concat(shampoo, {"run.cuda_graph=on"}))));
  ASSERT_EQ(split.code, 0) << split.err;
  const auto plain =
      run_kd(concat({"distill"}, concat(distill_run("shampoo_graph_off", 12), concat(shampoo, {"run.cuda_graph=off"}))));
  ASSERT_EQ(plain.code, 0) << plain.err;
  test::expect_same_weights(run_dir("shampoo_graph_on") + "/model.safetensors",
                            run_dir("shampoo_graph_off") + "/model.safetensors");
  expect_same_windows("shampoo_graph_on", "shampoo_graph_off", 3);
}

// `on` where the step cannot be captured is an error that says why.
TEST_F(StepGraphRuns, OnIsRefusedWhereTheStepCannotBeCaptured) {
  const auto host =
      run_kd(concat({"distill"}, concat(distill_run("graph_host", 2), {"run.cuda_graph=on", "run.step_stats=host"})));
  EXPECT_NE(host.code, 0);
  EXPECT_NE(host.err.find("run.cuda_graph = on, but the step's statistics are read on the host"), std::string::npos)
      << host.err;
  const auto typo = run_kd(concat({"distill"}, concat(distill_run("graph_typo", 2), {"run.cuda_graph=yes"})));
  EXPECT_NE(typo.code, 0);
  EXPECT_NE(typo.err.find("run.cuda_graph"), std::string::npos) << typo.err;
}

// On a GPU: 20 steps captured once (after two uncaptured ones) and replayed, with the profiled
// step of each window uncaptured in between, against the same run uncaptured: the same kernels on
// the same data, so weights and logged losses agree up to cuDNN's run-to-run differences (1e-3).
TEST_F(StepGraphRuns, OnTheGpuTheCapturedStepComputesTheUncapturedStepsWeights) {
  KD_REQUIRE_CUDA();
  const std::vector<std::string> common = {"run.autotune=false"};
  const auto graph = run_kd(concat(
      {"distill"}, test::on_gpu(concat(distill_run("gpu_graph_on", 20), concat(common, {"run.cuda_graph=on"})))));
  ASSERT_EQ(graph.code, 0) << graph.err;
  EXPECT_NE(graph.err.find("the step is a CUDA graph from step 2 on"), std::string::npos) << graph.err;
  const auto plain = run_kd(concat(
      {"distill"}, test::on_gpu(concat(distill_run("gpu_graph_off", 20), concat(common, {"run.cuda_graph=off"})))));
  ASSERT_EQ(plain.code, 0) << plain.err;
  SafetensorsFile wa = SafetensorsFile::open(run_dir("gpu_graph_off") + "/model.safetensors");
  SafetensorsFile wb = SafetensorsFile::open(run_dir("gpu_graph_on") + "/model.safetensors");
  ASSERT_EQ(wa.names(), wb.names());
  for (const std::string& name : wa.names()) {
    const Tensor x = wa.tensor(name), y = wb.tensor(name);
    if (x.dtype() != DType::f32) continue;
    EXPECT_LE(test::rel_l2(x.data<float>(), y.data<float>(), size_t(x.numel())), 1e-3) << name;
  }
  const auto windows = test::logged_windows(run_dir("gpu_graph_off"), run_dir("gpu_graph_on"));
  for (const auto& [la, lb] : windows) {
    EXPECT_NEAR(json_value(la, "loss"), json_value(lb, "loss"), 1e-3 * std::fabs(json_value(la, "loss"))) << la;
    EXPECT_NEAR(json_value(la, "grad_norm"), json_value(lb, "grad_norm"), 1e-3 * json_value(la, "grad_norm")) << la;
  }
  EXPECT_EQ(windows.size(), 4u);
}

// A BatchNorm student counts its training forwards on the host (num_batches_tracked), which a
// replay does not run: the graph adds what the capture counted after every replay, so 8 steps of
// 2 micro-batches count 16 as uncaptured, and the running statistics (device buffers, updated
// inside the graph) match the uncaptured run's.
TEST_F(StepGraphRuns, OnTheGpuABatchNormStudentCountsEveryReplayedStep) {
  KD_REQUIRE_CUDA();
  const std::vector<std::string> bn = {"student.arch=resnet18", "augment.resolution=32", "run.autotune=false"};
  const auto graph = run_kd(
      concat({"distill"}, test::on_gpu(concat(distill_run("gpu_bn_graph", 8), concat(bn, {"run.cuda_graph=on"})))));
  ASSERT_EQ(graph.code, 0) << graph.err;
  const auto plain = run_kd(
      concat({"distill"}, test::on_gpu(concat(distill_run("gpu_bn_plain", 8), concat(bn, {"run.cuda_graph=off"})))));
  ASSERT_EQ(plain.code, 0) << plain.err;
  SafetensorsFile a = SafetensorsFile::open(run_dir("gpu_bn_plain") + "/model.safetensors");
  SafetensorsFile b = SafetensorsFile::open(run_dir("gpu_bn_graph") + "/model.safetensors");
  EXPECT_EQ(a.tensor("bn1.num_batches_tracked").data<int64_t>()[0], 16);
  EXPECT_EQ(b.tensor("bn1.num_batches_tracked").data<int64_t>()[0], 16) << "every replayed forward counted";
  const Tensor x = a.tensor("layer1.0.bn1.running_var"), y = b.tensor("layer1.0.bn1.running_var");
  ASSERT_EQ(x.dtype(), DType::f32);
  EXPECT_LE(test::rel_l2(x.data<float>(), y.data<float>(), size_t(x.numel())), 1e-3);
}

}  // namespace
}  // namespace kd
