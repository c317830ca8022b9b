// kd under kills and signals (docs/reliability.md, "Kills and signals"): a distillation run is
// killed at every named point of its file writes, at seeded random steps and during evaluation,
// resumed each time, and ends bit for bit where an uninterrupted run ends, with only loadable
// checkpoints in its folder at every moment. SIGTERM and SIGINT, sent for real, stop it cleanly
// with a checkpoint; a flipped byte in a checkpoint is found by its checksum.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "tests/tools/kd_process.h"

namespace kd {
namespace {

using test::concat;
using test::contains;

class Kills : public test::KdRuns {};

TEST_F(Kills, KilledAnywhereAndResumedEndsBitwiseWhereAnUninterruptedRunEnds) {
  // Kill specs, one process each; every next process resumes. The counts are hits within that
  // process: a run writes config.toml, per checkpoint the file and `latest`, then the final
  // checkpoint, model.safetensors and summary.json.
  std::vector<std::string> specs;
  for (const char* point : {"file.after_write", "file.after_fsync", "file.after_rename"})
    for (int n : {1, 2, 3, 5, 7, 9}) specs.push_back(std::string(point) + ":" + std::to_string(n));
  for (const char* point : {"checkpoint.before_latest", "checkpoint.before_prune"})
    for (int n : {1, 2, 4}) specs.push_back(std::string(point) + ":" + std::to_string(n));
  std::mt19937 rng(2024);
  for (int i = 0; i < 6; ++i) specs.push_back("loop.step:" + std::to_string(1 + rng() % 12));
  for (int n : {1, 2, 3}) specs.push_back("evaluate.batch:" + std::to_string(n));
  std::shuffle(specs.begin(), specs.end(), rng);

  // A chain of processes resumes one run folder until a process completes the run; its result
  // must equal the straight run's, and the next spec starts a new chain in a new folder.
  int kills = 0, misses = 0, chains = 0;
  auto chain_name = [&] { return "killed_" + std::to_string(chains); };
  auto finish_chain = [&] {
    test::expect_only_loadable_checkpoints(run_dir(chain_name()) + "/checkpoints", false, chain_name() + " at its end");
    test::expect_bitwise_equal(run_dir("straight") + "/model.safetensors", run_dir(chain_name()) + "/model.safetensors");
    test::expect_bitwise_equal(run_dir("straight") + "/checkpoints/step_000000012.safetensors",
                               run_dir(chain_name()) + "/checkpoints/step_000000012.safetensors");
    ++chains;
  };
  for (const std::string& spec : specs) {
    const auto r = run("distill", chain_name(), {}, spec, /*resume=*/true);
    ASSERT_TRUE(r.code == 137 || r.code == 0) << spec << ": exit " << r.code << "\n" << r.err;
    test::expect_only_loadable_checkpoints(run_dir(chain_name()) + "/checkpoints", true, "after " + spec);
    if (r.code == 137) {
      ++kills;
      EXPECT_TRUE(contains(r.err, "KD_FAULT: killed at")) << spec << "\n" << r.err;
    } else {
      ++misses;  // the point lies beyond what was left of the run
      finish_chain();
    }
  }
  const auto last = run("distill", chain_name(), {}, "", true);
  ASSERT_EQ(last.code, 0) << last.err;
  finish_chain();
  EXPECT_GE(kills, int(specs.size()) * 2 / 3) << "most specs must hit: " << kills << " kills, " << misses << " misses";
  std::printf("[ kill loop ] %zu specs: %d kills, %d runs that completed first, %d chains, all bitwise equal\n",
              specs.size(), kills, misses, chains);
}

TEST_F(Kills, SigtermAtAStepCheckpointsExitsCleanlyAndResumes) {
  for (int sig : {SIGTERM, SIGINT}) {
    const std::string name = sig == SIGTERM ? "sigterm" : "sigint";
    bool sent = false;
    // The child stops itself at its 5th step; the signal is sent for real while it is stopped.
    const auto r = run("distill", name, {}, "loop.step:5=stop", false, [&](pid_t pid) {
      kill(pid, sig);
      sent = true;
    });
    ASSERT_TRUE(sent);
    EXPECT_EQ(r.code, 130) << r.err;
    const std::string sig_name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
    EXPECT_TRUE(contains(r.err, "stopped by " + sig_name + " after step 5; checkpoint ")) << r.err;
    EXPECT_TRUE(std::filesystem::exists(run_dir(name) + "/checkpoints/step_000000005.safetensors"));
    test::expect_only_loadable_checkpoints(run_dir(name) + "/checkpoints", false, name);
    const auto resumed = run("distill", name, {}, "", true);
    ASSERT_EQ(resumed.code, 0) << resumed.err;
    EXPECT_TRUE(contains(resumed.err, "at step 5")) << resumed.err;
    test::expect_bitwise_equal(run_dir("straight") + "/model.safetensors", run_dir(name) + "/model.safetensors");
  }
}

TEST_F(Kills, SigtermDuringTheFinalEvaluationKeepsTheModelAndResumeEvaluates) {
  // eval.every=0: the only evaluation is the final one; it stops itself before its 2nd batch.
  const auto r = run("distill", "eval_term", {"eval.every=0"}, "evaluate.batch:2=stop", false,
                     [](pid_t pid) { kill(pid, SIGTERM); });
  EXPECT_EQ(r.code, 130) << r.err;
  EXPECT_TRUE(contains(r.err, "stopped by SIGTERM during the final evaluation")) << r.err;
  EXPECT_TRUE(std::filesystem::exists(run_dir("eval_term") + "/model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(run_dir("eval_term") + "/summary.json")) << "no summary of a partial evaluation";
  const auto resumed = run("distill", "eval_term", {"eval.every=0"}, "", true);
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_TRUE(std::filesystem::exists(run_dir("eval_term") + "/summary.json"));
  test::expect_bitwise_equal(run_dir("straight") + "/model.safetensors", run_dir("eval_term") + "/model.safetensors");
}

TEST_F(Kills, AFlippedByteIsACorruptionErrorAndResumeFallsBackPastIt) {
  const auto first = run("distill", "flipped", {"run.stop_after=6"}, "");
  ASSERT_EQ(first.code, 0) << first.err;
  const std::string newest = run_dir("flipped") + "/checkpoints/step_000000006.safetensors";
  SafetensorsFile before = SafetensorsFile::open(newest);
  const SafetensorsEntry entry = before.entry("head.fc.weight");
  const uint64_t header = [&] {
    uint64_t n = 0;
    std::ifstream(newest, std::ios::binary).read(reinterpret_cast<char*>(&n), 8);
    return n;
  }();
  {
    std::fstream f(newest, std::ios::in | std::ios::out | std::ios::binary);
    const std::streamoff at = std::streamoff(8 + header + entry.offset + entry.bytes / 2);
    f.seekg(at);
    char c = 0;
    f.read(&c, 1);
    c = char(c ^ 0x10);
    f.seekp(at);
    f.write(&c, 1);
  }
  try {
    SafetensorsFile::open(newest);
    ADD_FAILURE() << "a flipped byte must not load";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), newest)) << e.what();
    EXPECT_TRUE(contains(e.what(), "tensor 'head.fc.weight' fails its checksum")) << e.what();
  }
  const auto resumed = run("distill", "flipped", {}, "", true);
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_TRUE(contains(resumed.err, "passing over a checkpoint that does not load: " + newest)) << resumed.err;
  EXPECT_TRUE(contains(resumed.err, "at step 3")) << "resumed from the previous checkpoint: " << resumed.err;
  test::expect_bitwise_equal(run_dir("straight") + "/model.safetensors", run_dir("flipped") + "/model.safetensors");
}

}  // namespace
}  // namespace kd
