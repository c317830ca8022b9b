// kd under a full disk, a changed dataset and non-finite values (docs/reliability.md): a
// checkpoint that cannot be written costs nothing but that checkpoint, a metrics file that
// cannot be written costs no lines, a resume on other data is refused naming what changed, and
// NaN/Inf injected in the teacher's logits, the student's gradients or the loss stops the run
// naming the step, the phase and the last good checkpoint, or is skipped without an update.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/tools/kd_process.h"

namespace kd {
namespace {

using test::contains;
namespace fs = std::filesystem;

class Faults : public test::KdRuns {};

std::string summary_of(const std::string& run_dir) { return test::read_text(run_dir + "/summary.json"); }

int64_t summary_count(const std::string& run_dir, const std::string& key) {
  return nlohmann::json::parse(summary_of(run_dir)).at(key).get<int64_t>();
}

TEST_F(Faults, AFailedPeriodicCheckpointIsRetriedAndTrainingIsUnharmed) {
  for (const char* fault : {"enospc:step_:2@1000", "eio:step_:1"}) {
    const std::string name = std::string("disk_") + fault[1];
    const auto r = run("distill", name, {}, fault);
    ASSERT_EQ(r.code, 0) << fault << "\n" << r.err;
    const std::string error = fault[1] == 'n' ? "No space left on device (errno 28)" : "Input/output error (errno 5)";
    const std::string failed = fault[1] == 'n' ? "step_000000006" : "step_000000003";
    EXPECT_TRUE(contains(r.err, "warning: the checkpoint of step " + std::to_string(fault[1] == 'n' ? 6 : 3) +
                                    " was not saved: cannot write " + run_dir(name) + "/checkpoints/" + failed +
                                    ".safetensors: write failed on "))
        << r.err;
    EXPECT_TRUE(contains(r.err, error)) << r.err;
    EXPECT_TRUE(contains(r.err, "training goes on and tries again at step")) << r.err;
    EXPECT_EQ(summary_count(run_dir(name), "checkpoint_failures"), 1);
    test::expect_only_loadable_checkpoints(run_dir(name) + "/checkpoints", false, fault);
    test::expect_bitwise_equal(run_dir("straight") + "/model.safetensors", run_dir(name) + "/model.safetensors");
  }
}

TEST_F(Faults, AFailedStopCheckpointExitsWithTheErrorAndKeepsThePreviousOne) {
  // Checkpoints at 3 (periodic) and 6 (the stop of run.stop_after): the second write fails.
  const auto r = run("distill", "disk_stop", {"run.stop_after=6"}, "eio:step_:2@64");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "cannot write " + run_dir("disk_stop") + "/checkpoints/step_000000006.safetensors")) << r.err;
  EXPECT_TRUE(contains(r.err, "Input/output error")) << r.err;
  test::expect_only_loadable_checkpoints(run_dir("disk_stop") + "/checkpoints", false, "after the failed stop");
  const auto resumed = run("distill", "disk_stop", {}, "", true);
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_TRUE(contains(resumed.err, "at step 3")) << resumed.err;
  test::expect_bitwise_equal(run_dir("straight") + "/model.safetensors", run_dir("disk_stop") + "/model.safetensors");
}

std::vector<std::string> lines_of(const std::string& path) {
  std::istringstream in(test::read_text(path));
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST_F(Faults, AFailedMetricsWriteWarnsCountsAndCatchesUpWithoutTornLines) {
  // The 2nd and 3rd records fail after 5 bytes (cut back off), the 4th writes all three.
  const auto r = run("distill", "metrics_gap", {}, "enospc:metrics.jsonl:2@5,enospc:metrics.jsonl:3@5");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "warning: cannot append to " + run_dir("metrics_gap") +
                                  "/metrics.jsonl: No space left on device (errno 28); the run goes on"))
      << r.err;
  EXPECT_TRUE(contains(r.err, "metrics.jsonl is written again (3 line(s) caught up)")) << r.err;
  EXPECT_EQ(summary_count(run_dir("metrics_gap"), "metrics_write_failures"), 2);
  const auto clean = lines_of(run_dir("straight") + "/metrics.jsonl");
  const auto gapped = lines_of(run_dir("metrics_gap") + "/metrics.jsonl");
  ASSERT_EQ(clean.size(), gapped.size());
  for (size_t i = 0; i < gapped.size(); ++i) {
    EXPECT_NO_THROW(nlohmann::json::parse(gapped[i])) << "line " << i << ": " << gapped[i];
    const auto a = nlohmann::json::parse(clean[i]), b = nlohmann::json::parse(gapped[i]);
    EXPECT_EQ(a.at("step"), b.at("step")) << "line " << i;
  }
  // A disk that stays full: every metrics write fails, the run still ends well.
  const auto full = run("distill", "metrics_full", {}, "eio:metrics.jsonl:1+");
  ASSERT_EQ(full.code, 0) << full.err;
  EXPECT_GT(summary_count(run_dir("metrics_full"), "metrics_write_failures"), 10);
  test::expect_bitwise_equal(run_dir("straight") + "/model.safetensors", run_dir("metrics_full") + "/model.safetensors");
}

TEST_F(Faults, AResumeOnChangedDataIsRefusedNamingTheChange) {
  // A copy of the training images; the run stops at step 3, then the data changes under it.
  const std::string data = dir_->str() + "/train_copy";
  fs::copy(dir_->str() + "/train", data, fs::copy_options::recursive);
  const std::vector<std::string> on_copy = {"data.train=" + data};
  ASSERT_EQ(run("distill", "changed", {"data.train=" + data, "run.stop_after=3"}, "").code, 0);

  fs::remove(data + "/vertical/0.png");
  fs::remove(data + "/vertical/1.png");
  auto r = run("distill", "changed", on_copy, "", true);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "the training data changed since " + run_dir("changed") +
                                  "/checkpoints/step_000000003.safetensors was written: 32 images then, 30 now; "
                                  "class 'vertical' had 8 images, now 6"))
      << r.err;
  EXPECT_TRUE(contains(r.err, "set run.allow_data_change=true if you mean it")) << r.err;

  fs::copy_file(dir_->str() + "/train/vertical/0.png", data + "/vertical/0.png");
  fs::copy_file(dir_->str() + "/train/vertical/1.png", data + "/vertical/renamed.png");  // same count, another path
  r = run("distill", "changed", on_copy, "", true);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "the same number of images per class, but image paths, labels or file sizes differ"))
      << r.err;

  r = run("distill", "changed", {"data.train=" + data, "run.allow_data_change=true"}, "", true);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "resuming anyway (run.allow_data_change)")) << r.err;
}

// Each injection site, first stopping the run, then skipped under run.skip_nonfinite.
TEST_F(Faults, NonFiniteValuesStopTheRunNamingStepPhaseAndCheckpointOrAreSkipped) {
  struct Site {
    const char* name;
    const char* fault;
    const char* value;  // what went non-finite, and where
    const char* phase;
  };
  const Site sites[] = {
      {"nf_teacher", "nan.teacher_logits:step=4", " is NaN at step 4 (lr ",
       "), in the teacher forward (the teachers' logits are not finite)"},
      {"nf_grads", "inf.student_grads:step=4", "the gradient norm is infinite at step 4 (lr ",
       "), in the backward pass (the student's gradients)"},
      {"nf_loss", "nan.loss:step=4", "the loss is NaN at step 4 (lr ", "), in the loss (its inputs are finite)"},
  };
  for (const Site& site : sites) {
    const std::string name = site.name;
    const auto stopped = run("distill", name, {}, site.fault);
    EXPECT_EQ(stopped.code, 3) << stopped.err;
    EXPECT_TRUE(contains(stopped.err, "error: the ")) << stopped.err;
    EXPECT_TRUE(contains(stopped.err, site.value)) << stopped.err;
    EXPECT_TRUE(contains(stopped.err, site.phase)) << stopped.err;
    EXPECT_TRUE(contains(stopped.err, "The last good checkpoint is " + run_dir(name) +
                                          "/checkpoints/step_000000003.safetensors"))
        << stopped.err;
    EXPECT_FALSE(fs::exists(run_dir(name) + "/model.safetensors"));

    // Skipped: the step after the bad one starts from the weights and optimizer state before it.
    const std::string skip = name + "_skip";
    const auto skipped = run("distill", skip, {"run.skip_nonfinite=1", "run.stop_after=5"}, site.fault);
    ASSERT_EQ(skipped.code, 0) << skipped.err;
    EXPECT_TRUE(contains(skipped.err, "warning: the ")) << skipped.err;
    EXPECT_TRUE(contains(skipped.err, site.value)) << skipped.err;
    EXPECT_TRUE(contains(skipped.err, "the step is skipped without an update (1 of run.skip_nonfinite = 1)"))
        << skipped.err;
    const auto resumed = run("distill", skip, {"run.skip_nonfinite=1"}, "", true);
    ASSERT_EQ(resumed.code, 0) << resumed.err;
    EXPECT_EQ(summary_count(run_dir(skip), "skipped_nonfinite_steps"), 1) << "counted across the resume";
    EXPECT_TRUE(contains(test::read_text(run_dir(skip) + "/metrics.jsonl"), "\"skipped_nonfinite\": 1"));
  }
  // The skipped step changed nothing: after steps 0-3 and a skipped step 4, the state equals the
  // checkpoint after 4 steps in everything but the step count.
  const auto four = run("distill", "nf_four", {"run.stop_after=4"}, "");
  ASSERT_EQ(four.code, 0) << four.err;
  const auto skip = run("distill", "nf_four_skip", {"run.stop_after=5", "run.skip_nonfinite=1"}, "nan.teacher_logits:step=4");
  ASSERT_EQ(skip.code, 0) << skip.err;
  test::expect_bitwise_equal(run_dir("nf_four") + "/checkpoints/step_000000004.safetensors",
                             run_dir("nf_four_skip") + "/checkpoints/step_000000005.safetensors", {"optimizer.step"});
}

// run.step_stats = device (the GPU default) on the CPU: the loss, agreement and gradient norm
// stay in the step's statistics block and are read once per log window (4 steps here). The run
// is the host-read run bit for bit, metrics included, and a non-finite step is still found (at
// the next read, before any checkpoint), named by its step and phase (the block's flags), and
// stopped or skipped.
TEST_F(Faults, StatisticsKeptOnTheDeviceGiveTheSameRunAndStillCatchNonFiniteSteps) {
  const std::vector<std::string> device = {"run.step_stats=device", "run.log_every=4"};
  const auto on_device = run("distill", "stats_device", device, "");
  ASSERT_EQ(on_device.code, 0) << on_device.err;
  EXPECT_TRUE(contains(on_device.err, "stay on the device, read every 4 steps (run.step_stats)")) << on_device.err;
  const auto on_host = run("distill", "stats_host", {"run.step_stats=host", "run.log_every=4"}, "");
  ASSERT_EQ(on_host.code, 0) << on_host.err;
  test::expect_bitwise_equal(run_dir("straight") + "/model.safetensors", run_dir("stats_device") + "/model.safetensors");
  const auto host_lines = lines_of(run_dir("stats_host") + "/metrics.jsonl");
  const auto device_lines = lines_of(run_dir("stats_device") + "/metrics.jsonl");
  ASSERT_EQ(host_lines.size(), device_lines.size());
  int logged = 0;
  for (size_t i = 0; i < host_lines.size(); ++i) {
    const auto a = nlohmann::json::parse(host_lines[i]), b = nlohmann::json::parse(device_lines[i]);
    for (const char* key : {"step", "loss", "lr", "grad_norm", "train_agreement", "top1"})
      EXPECT_EQ(a.value(key, nlohmann::json()), b.value(key, nlohmann::json())) << key << " in line " << i;
    logged += a.contains("grad_norm");
  }
  EXPECT_GE(logged, 3) << "steps 4, 8 and 12 logged";

  const auto stopped = run("distill", "stats_nf", device, "nan.teacher_logits:step=4");
  EXPECT_EQ(stopped.code, 3) << stopped.err;
  EXPECT_TRUE(contains(stopped.err, " is NaN at step 4 (lr ")) << stopped.err;
  EXPECT_TRUE(contains(stopped.err, "), in the teacher forward (the teachers' logits are not finite)")) << stopped.err;
  EXPECT_TRUE(contains(stopped.err, "The last good checkpoint is " + run_dir("stats_nf") +
                                        "/checkpoints/step_000000003.safetensors"))
      << stopped.err;
  EXPECT_FALSE(fs::exists(run_dir("stats_nf") + "/checkpoints/step_000000006.safetensors"));
  EXPECT_FALSE(fs::exists(run_dir("stats_nf") + "/model.safetensors"));

  const auto grads = run("distill", "stats_nf_grads", device, "inf.student_grads:step=4");
  EXPECT_EQ(grads.code, 3) << grads.err;
  EXPECT_TRUE(contains(grads.err, "the gradient norm is infinite at step 4 (lr ")) << grads.err;
  EXPECT_TRUE(contains(grads.err, "), in the backward pass (the student's gradients)")) << grads.err;

  // Skipped on the device: the state after steps 0-3 and a skipped step 4 is the state after 4 steps.
  ASSERT_EQ(run("distill", "stats_four", {"run.stop_after=4"}, "").code, 0);
  const auto skipped =
      run("distill", "stats_nf_skip", test::concat(device, {"run.skip_nonfinite=1", "run.stop_after=5"}), "nan.loss:step=4");
  ASSERT_EQ(skipped.code, 0) << skipped.err;
  EXPECT_TRUE(contains(skipped.err, "warning: the loss is NaN at step 4")) << skipped.err;
  EXPECT_TRUE(contains(skipped.err, "the step is skipped without an update (1 of run.skip_nonfinite = 1)"))
      << skipped.err;
  test::expect_bitwise_equal(run_dir("stats_four") + "/checkpoints/step_000000004.safetensors",
                             run_dir("stats_nf_skip") + "/checkpoints/step_000000005.safetensors", {"optimizer.step"});
}

}  // namespace
}  // namespace kd
