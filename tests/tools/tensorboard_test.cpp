// kd's TensorBoard event files read by TensorBoard itself (tests/tools/check_tensorboard.py, with
// the EventAccumulator that `tensorboard --logdir` uses): every scalar equals its metrics.jsonl
// field, and a run killed after its last checkpoint and resumed shows each step once, with the
// uninterrupted run's values.
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/tools/tool_fixtures.h"

namespace kd::test {
namespace {

const std::string kPython = KD_PYTHON;

CommandResult check_run(const std::string& run, const std::string& same_as = "") {
  return run_command(kPython + " " + KD_SOURCE_DIR + "/tests/tools/check_tensorboard.py " + run +
                     (same_as.empty() ? "" : " --same-as " + same_as));
}

class TensorBoardRun : public ::testing::Test {
 protected:
  void SetUp() override {
    const CommandResult probe = run_command(kPython + " -c 'import tensorboard'");
    if (probe.code != 0)
      GTEST_SKIP() << kPython << " cannot import tensorboard (tools/install_deps.sh --test installs it): " << probe.out;
    write_stripes_dataset(dir_);
  }
  // 20 steps, a metrics line every 2 and an evaluation every 6, a checkpoint every 4 (a multiple
  // of the log interval, so a resumed run's log windows are the straight run's).
  std::vector<std::string> run(const std::string& name) {
    return concat(tiny_run(dir_, name, 20), {"model.arch=resnetv2(depths=1, width=8, stem=conv3)", "run.log_every=2",
                                             "eval.every=6", "checkpoint.every=4"});
  }
  std::string run_dir(const std::string& name) const { return dir_.str() + "/runs/" + name; }
  TempDir dir_;
};

TEST_F(TensorBoardRun, EveryMetricsFieldIsAScalarWithItsValue) {
  const auto r = run_kd(concat({"train"}, run("straight")));
  ASSERT_EQ(r.code, 0) << r.err;
  const CommandResult check = check_run(run_dir("straight"));
  EXPECT_EQ(check.code, 0) << check.out;
  for (const char* tag : {"train/loss", "train/lr", "train/grad_norm", "train/images_per_sec", "train/epoch",
                          "train/data_wait_share", "eval/student_top1", "eval/student_top5"})
    EXPECT_NE(check.out.find(tag), std::string::npos) << tag << " missing:\n" << check.out;
}

TEST_F(TensorBoardRun, AResumeAfterAKillShowsEachStepOnceWithTheStraightRunsValues) {
  const auto straight = run_kd(concat({"train"}, run("straight")));
  ASSERT_EQ(straight.code, 0) << straight.err;
  // A kill after step 14 whose last checkpoint is step 12: stop at 14, then take away the
  // checkpoint of step 14. Steps 13 and 14 are in metrics.jsonl and the first event file, and the
  // resumed run logs them again.
  const auto first = run_kd(concat({"train"}, concat(run("killed"), {"run.stop_after=14"})));
  ASSERT_EQ(first.code, 0) << first.err;
  ASSERT_TRUE(std::filesystem::remove(run_dir("killed") + "/checkpoints/step_000000014.safetensors"));
  const auto second = run_kd(concat({"train", "--resume"}, run("killed")));
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_NE(second.err.find("at step 12"), std::string::npos) << second.err;
  int event_files = 0;
  for (const auto& e : std::filesystem::directory_iterator(run_dir("killed")))
    event_files += e.path().filename().string().find("tfevents") != std::string::npos;
  EXPECT_EQ(event_files, 2) << "the resumed run writes a file of its own";
  const CommandResult check = check_run(run_dir("killed"), run_dir("straight"));
  EXPECT_EQ(check.code, 0) << check.out;
}

}  // namespace
}  // namespace kd::test
