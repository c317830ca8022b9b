// Data parallelism on the CPU, end to end: `mpirun -np N kd distill` against one process.
//   - 2 ranks compute bit for bit what 1 rank with optim.accumulate = 2 computes (the same two
//     summands, added once) over 20 steps, weights and optimizer state, for Adam and SGD, a
//     2-teacher ensemble and every teaching strategy, and stay within 1e-5 (relative L2 of all
//     weights) of 1 rank with 1 micro-batch: after 20 steps with SGD, after 2 with Adam;
//   - 3 and 4 ranks stay within 1e-5 of 1 rank (SGD 20 steps, Adam 2).
//   Why 2 steps with Adam: a different summation order changes the weights by ~2e-10 after one
//   step, with either optimizer. SGD keeps that (7e-10 after 6 steps, measured). Adam's first
//   steps divide each gradient by its own magnitude, so a gradient that is rounding noise around
//   zero becomes a step of about lr * g / (|g| + eps) with a sign the rounding picks: measured
//   1.6e-7 after step 2, then 1e-3 to 2e-5 by steps 3-6 depending on the run. Later Adam steps
//   say nothing about kd; the bitwise comparisons cover all 20 steps with both optimizers;
//   - a run written by 2 ranks resumes on 1 rank (accumulate 2) and ends where 2 ranks end;
//   - a rank that stops (SIGSTOP: a hang mpirun does not see) ends the job within
//     comm.timeout_s, named in the error, and the last checkpoint still loads;
//   - ranks started with different configurations refuse to run;
//   - with student.sync_bn, a BatchNorm student on 2 ranks stays close to 1 rank (see the test).
// Every process runs one OpenMP thread (the CPU path is then deterministic); CTest runs these
// tests alone (RUN_SERIAL), so they never share the 2 cores with other tests.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/safetensors.h"
#include "tests/support/testing.h"
#include "tests/tools/tool_fixtures.h"

namespace kd {
namespace {

using test::concat;

const std::string kTeacherArch = "model.arch=resnetv2(depths=1-1, width=16, stem=conv3)";
const std::string kStudentArch = "student.arch=resnetv2(depths=1-1, width=8, stem=conv3)";

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct Proc {
  int code = -1;
  std::string out, err;
  double seconds = 0;
};

// `kd args...` on `ranks` processes: mpirun for more than one (or when `mpmd` gives a second
// argument list for the second rank), the binary itself for one.
Proc run_ranks(int ranks, const std::vector<std::string>& args, const std::string& dir, int timeout_s = 240,
               const std::vector<std::string>& second = {}, const std::string& env = "") {
  std::string cmd = "cd " + shell_quote(dir) + " && " + env + " timeout -s KILL " + std::to_string(timeout_s) + " ";
  auto kd_command = [&](const std::vector<std::string>& a) {
    std::string c = shell_quote(KD_BINARY);
    for (const std::string& x : a) c += " " + shell_quote(x);
    return c;
  };
  if (ranks > 1 || !second.empty()) {
    const std::string mpi =
        "mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 ";
    if (second.empty())
      cmd += mpi + "-np " + std::to_string(ranks) + " " + kd_command(args);
    else
      cmd += mpi + "-np 1 " + kd_command(args) + " : -np 1 " + kd_command(second);
  } else {
    cmd += "env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 " + kd_command(args);
  }
  cmd += " > " + shell_quote(dir + "/out.txt") + " 2> " + shell_quote(dir + "/err.txt");
  Proc p;
  const auto start = std::chrono::steady_clock::now();
  const int status = std::system(cmd.c_str());
  p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  p.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  p.out = test::read_text(dir + "/out.txt");
  p.err = test::read_text(dir + "/err.txt");
  return p;
}

// Relative L2 distance of all parameters of two model files; bitwise: every byte equal.
struct Distance {
  double relative = 0;
  bool bitwise = true;
};
// Every tensor counts for `bitwise`; only weights (not optimizer state) for the distance.
Distance model_distance(const std::string& a_path, const std::string& b_path) {
  SafetensorsFile a = SafetensorsFile::open(a_path), b = SafetensorsFile::open(b_path);
  EXPECT_EQ(a.names(), b.names());
  Distance d;
  double num = 0, den = 0;
  for (const std::string& name : a.names()) {
    const Tensor x = a.tensor(name), y = b.tensor(name);
    if (x.nbytes() != y.nbytes() || std::memcmp(x.raw(), y.raw(), x.nbytes()) != 0) d.bitwise = false;
    if (name.rfind("optimizer.", 0) == 0 || x.dtype() != DType::f32) continue;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double u = x.data<float>()[i], v = y.data<float>()[i];
      num += (u - v) * (u - v), den += v * v;
    }
  }
  d.relative = std::sqrt(num / std::max(den, 1e-300));
  return d;
}

class Parallel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    dir_ = new test::TempDir();
    test::write_stripes_dataset(*dir_);
    // Two teachers (different seeds) for the ensemble runs; a few steps make them non-trivial.
    for (const char* seed : {"1", "2"}) {
      const auto r = run_ranks(1,
                               concat({"train"}, concat(tiny_run("teacher" + std::string(seed), 20),
                                                        {kTeacherArch, "run.seed=" + std::string(seed)})),
                               dir_->str());
      ASSERT_EQ(r.code, 0) << r.err;
    }
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string teacher(int k) { return dir_->str() + "/runs/teacher" + std::to_string(k) + "/model.safetensors"; }
  static std::string model(const std::string& run) { return dir_->str() + "/runs/" + run + "/model.safetensors"; }
  static std::string checkpoint(const std::string& run, int step) {
    char name[64];
    std::snprintf(name, sizeof name, "/checkpoints/step_%09d.safetensors", step);
    return dir_->str() + "/runs/" + run + name;
  }
  // A tiny run on the stripes data: global batch 12 (divides over 1-4 ranks and 1-4 micro-batches).
  static std::vector<std::string> tiny_run(const std::string& name, int steps) {
    auto args = test::tiny_run(*dir_, name, steps);
    for (std::string& a : args)
      if (a == "data.batch_size=16") a = "data.batch_size=12";
    return concat(args, {"data.loader_threads=1", "comm.timeout_s=60"});
  }
  // Checkpoints every 2 steps, all kept (the Adam comparisons with 1 rank read step_2).
  static std::vector<std::string> distill(const std::string& name, int steps, const std::vector<std::string>& extra) {
    return concat(
        concat({"distill"}, tiny_run(name, steps)),
        concat({kStudentArch, "teacher.weights=" + teacher(1), "checkpoint.every=2", "checkpoint.keep=20"}, extra));
  }
  static Proc run(int ranks, const std::vector<std::string>& args) {
    Proc p = run_ranks(ranks, args, dir_->str());
    EXPECT_EQ(p.code, 0) << p.err;
    return p;
  }
  static test::TempDir* dir_;
};
test::TempDir* Parallel::dir_ = nullptr;

struct Variant {
  std::string name;
  std::vector<std::string> overrides;
  bool sgd = false;
};

// The step at which a run compares with 1 rank x 1 micro-batch (see the top of the file).
int close_step(bool sgd) { return sgd ? 20 : 2; }

TEST_F(Parallel, TwoRanksEqualOneRankWithTwoMicroBatchesBitForBit) {
  const std::string ensemble = "teacher.weights=" + teacher(1) + "," + teacher(2);
  const std::vector<std::string> sgd = {"optim.name=sgd", "optim.lr=0.05"};
  std::vector<Variant> variants = {{"adam_fm", {}},
                                   {"sgd_fm", sgd, true},
                                   {"adam_ensemble", {ensemble}},
                                   {"sgd_ensemble", concat(sgd, {ensemble}), true}};
  // Shampoo: its root jobs split over the ranks and exchanged (every 3 steps, used from step 4).
  const std::vector<std::string> shampoo = {"optim.name=shampoo", "optim.shampoo_precondition_every=3",
                                            "optim.shampoo_start_step=4", "optim.shampoo_block_size=16"};
  variants.push_back({"shampoo_fm", shampoo});
  for (const char* strategy : {"fixed", "independent", "consistent"}) {
    const std::string s = std::string("distill.strategy=") + strategy;
    variants.push_back({std::string("adam_") + strategy, {s}});
    variants.push_back({std::string("sgd_") + strategy, concat(sgd, {s}), true});
  }
  for (const Variant& v : variants) {
    const std::string& n = v.name;
    run(2, distill(n + "_np2", 20, v.overrides));
    run(1, distill(n + "_acc2", 20, concat(v.overrides, {"optim.accumulate=2"})));
    run(1, distill(n + "_one", 20, v.overrides));
    for (const std::string& file : {checkpoint(n + "_np2", 10), model(n + "_np2")}) {
      const std::string other = file == model(n + "_np2") ? model(n + "_acc2") : checkpoint(n + "_acc2", 10);
      const Distance same = model_distance(file, other);
      EXPECT_TRUE(same.bitwise) << n << ": 2 ranks vs 1 rank x 2 micro-batches differ by " << same.relative << " ("
                                << file << ")";
    }
    const int step = close_step(v.sgd);
    const Distance close = model_distance(checkpoint(n + "_np2", step), checkpoint(n + "_one", step));
    EXPECT_FALSE(close.bitwise) << n << ": a different summation order should show in the last bits";
    EXPECT_LT(close.relative, 1e-5) << n << ": 2 ranks vs 1 rank x 1 micro-batch after " << step << " steps";
    std::printf("[ ranks ] %s: 2 ranks vs 1 rank x 2 micro-batches bitwise over 20 steps; vs 1 rank x 1 after %d "
                "steps: %.2e\n",
                n.c_str(), step, close.relative);
  }
}

// run.step_stats = device over two ranks (the GPU default; here on the CPU over MPI): each rank's
// loss sum and agreement go through a data all-reduce instead of the host's, the optimizer's gate
// reads the job-wide sum, and the ledger is read every 5 steps. Weights and logged losses are the
// host-read run's, bit for bit. The same for the split step of the CUDA graph (run.cuda_graph = on;
// on the CPU nothing is captured), whose graph part does that all-reduce itself.
TEST_F(Parallel, StatisticsOnTheDeviceOverTwoRanksAreTheHostReadRunBitForBit) {
  const Proc on_device = run(2, distill("stats_device_np2", 10, {"run.step_stats=device", "run.log_every=5"}));
  EXPECT_NE(on_device.err.find("stay on the device, read every 5 steps"), std::string::npos) << on_device.err;
  const Proc split =
      run(2, distill("stats_graph_np2", 10, {"run.step_stats=device", "run.log_every=5", "run.cuda_graph=on"}));
  EXPECT_NE(split.err.find("the step runs split as for a CUDA graph"), std::string::npos) << split.err;
  run(2, distill("stats_host_np2", 10, {"run.step_stats=host", "run.log_every=5"}));
  const Distance d = model_distance(model("stats_device_np2"), model("stats_host_np2"));
  EXPECT_TRUE(d.bitwise) << d.relative;
  const Distance g = model_distance(model("stats_graph_np2"), model("stats_host_np2"));
  EXPECT_TRUE(g.bitwise) << g.relative;
  const auto lines = [](const std::string& run) {
    std::vector<std::string> out;
    std::istringstream in(test::read_text(dir_->str() + "/runs/" + run + "/metrics.jsonl"));
    for (std::string line; std::getline(in, line);)
      if (line.find("\"grad_norm\"") != std::string::npos) {
        const size_t agreement = line.find("\"train_agreement\"");  // (the rates between differ)
        out.push_back(line.substr(0, line.find("\"images_per")) +
                      line.substr(agreement, line.find(',', agreement) - agreement));
      }
    return out;
  };
  const std::vector<std::string> device = lines("stats_device_np2"), host = lines("stats_host_np2");
  const std::vector<std::string> graph = lines("stats_graph_np2");
  ASSERT_EQ(device.size(), 2u);
  ASSERT_EQ(graph.size(), 2u);
  for (size_t i = 0; i < device.size(); ++i) {
    EXPECT_EQ(device[i], host[i]);
    EXPECT_EQ(graph[i], host[i]);
  }
}

TEST_F(Parallel, ThreeAndFourRanksMatchOneRank) {
  for (bool sgd : {false, true}) {
    const std::vector<std::string> extra =
        sgd ? std::vector<std::string>{"optim.name=sgd", "optim.lr=0.05"} : std::vector<std::string>{};
    const std::string prefix = sgd ? "sgd_r" : "adam_r";
    run(1, distill(prefix + "_one", 20, extra));
    for (int ranks : {3, 4}) {
      const std::string name = prefix + "_np" + std::to_string(ranks);
      const Proc p = run(ranks, distill(name, 20, extra));
      EXPECT_NE(p.err.find(std::to_string(ranks) + " ranks (mpi: rank 0 of " + std::to_string(ranks)),
                std::string::npos)
          << p.err;
      const int step = close_step(sgd);
      const double d = model_distance(checkpoint(name, step), checkpoint(prefix + "_one", step)).relative;
      EXPECT_LT(d, 1e-5) << ranks << " ranks, " << prefix;
      std::printf("[ ranks ] %s: %d ranks vs 1 rank after %d steps: %.2e\n", prefix.c_str(), ranks, step, d);
    }
  }
  // A batch the ranks do not divide is refused with the values that would fit.
  const Proc bad = run_ranks(4, distill("r_bad", 20, {"optim.accumulate=2"}), dir_->str());
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("does not split over 4 rank(s)"), std::string::npos) << bad.err;
}

TEST_F(Parallel, ARunOfTwoRanksResumesOnOneRankWhereTwoRanksWouldBe) {
  run(2, distill("straight", 20, {}));
  const Proc first = run(2, distill("moved", 20, {"run.stop_after=10"}));
  EXPECT_NE(first.err.find("stopped by run.stop_after after step 10"), std::string::npos) << first.err;
  const Proc second = run(1, concat(distill("moved", 20, {"optim.accumulate=2"}), {"--resume"}));
  EXPECT_NE(second.err.find("at step 10"), std::string::npos) << second.err;
  const Distance d = model_distance(model("moved"), model("straight"));
  EXPECT_TRUE(d.bitwise) << "2 ranks -> 1 rank x 2 differs from 2 ranks by " << d.relative;
}

TEST_F(Parallel, AStoppedRankEndsTheJobNamingItAndTheLastCheckpointLoads) {
  const int timeout_s = 4;
  const Proc p =
      run_ranks(2, distill("hang", 40, {"checkpoint.every=2", "comm.timeout_s=" + std::to_string(timeout_s)}),
                dir_->str(), 120, {}, "KD_DEBUG_SIGSTOP=1:7");
  EXPECT_NE(p.code, 0) << p.err;
  EXPECT_LT(p.seconds, timeout_s + 30) << "the job did not end soon after the timeout";
  EXPECT_NE(p.err.find("rank(s) 1 never reached it"), std::string::npos) << p.err;
  EXPECT_NE(p.err.find("comm.timeout_s"), std::string::npos) << p.err;
  const std::string ckpt = dir_->str() + "/runs/hang/checkpoints";
  std::string latest;
  std::ifstream(ckpt + "/latest") >> latest;
  ASSERT_FALSE(latest.empty()) << "no checkpoint was written before the hang";
  SafetensorsFile f = SafetensorsFile::open(ckpt + "/" + latest);
  EXPECT_EQ(f.metadata().at("step"), "6");  // checkpoint.every=2: the last before step 7
  const Tensor w = f.tensor("head.fc.bias");
  for (int64_t i = 0; i < w.numel(); ++i) EXPECT_TRUE(std::isfinite(w.data<float>()[i]));
}

// A non-finite step over two ranks (KD_FAULT injects it on both) ends both at that step, with
// host-read statistics and with statistics on the device (read per window, accounted for at steps
// every rank reaches alike), naming the step, the phase and the first rank that saw it; no rank is
// left waiting in a collective (the job ends well before the timeout).
TEST_F(Parallel, ADivergenceOverTwoRanksEndsBothNamingStepPhaseAndRank) {
  for (const char* stats : {"host", "device"}) {
    const std::string name = std::string("diverge_") + stats;
    const Proc p = run_ranks(2, distill(name, 10, {std::string("run.step_stats=") + stats, "run.log_every=5",
                                                   "comm.timeout_s=30"}),
                             dir_->str(), 120, {}, "KD_FAULT=nan.teacher_logits:step=4");
    EXPECT_NE(p.code, 0) << p.err;
    EXPECT_LT(p.seconds, 30) << stats << ": a rank waited for the timeout";
    EXPECT_NE(p.err.find(" is NaN at step 4 (lr "), std::string::npos) << stats << p.err;
    EXPECT_NE(p.err.find("in the teacher forward (the teachers' logits are not finite) on rank 0"), std::string::npos)
        << stats << p.err;
    EXPECT_EQ(p.err.find("timeout"), std::string::npos) << stats << p.err;
    EXPECT_FALSE(std::filesystem::exists(dir_->str() + "/runs/" + name + "/model.safetensors")) << stats;
  }
}

TEST_F(Parallel, RanksWithDifferentConfigurationsRefuseToRun) {
  const Proc p = run_ranks(2, distill("mismatch", 10, {"optim.lr=0.01"}), dir_->str(), 120,
                           distill("mismatch", 10, {"optim.lr=0.02"}));
  EXPECT_NE(p.code, 0);
  EXPECT_NE(p.err.find("disagree"), std::string::npos) << p.err;
  EXPECT_NE(p.err.find("rank 1: config hash="), std::string::npos) << p.err;
  EXPECT_NE(p.err.find("rank 1 has 'lr = 0.02' where rank 0 has 'lr = 0.01'"), std::string::npos) << p.err;
  EXPECT_FALSE(std::ifstream(model("mismatch")).good()) << "a model was written";
}

// model.sync_bn: 2 ranks whose BatchNorm statistics are those of both ranks' images compute what
// 1 rank computes on the whole batch, all weights and running statistics: SGD within 1e-5 after
// 20 steps (measured 2.5e-8), Adam within 1e-4 after 2 (measured 8.2e-6). Adam's bound is wider
// than the GroupNorm runs' because a convolution ahead of a training-mode BatchNorm has
// gradient directions that are zero in exact arithmetic (the normalisation removes their
// effect), rounding noise there that Adam's first steps scale to lr each. Without sync_bn each
// rank normalises its half alone and the runs part by ~2e-2 (at least 100x the synced distance).
TEST_F(Parallel, SyncedBatchNormOnTwoRanksMatchesOneRankOnTheWholeBatch) {
  const std::string bn_student = "student.arch=resnet(depths=1-1, width=8, block=basic)";
  for (bool sgd : {false, true}) {
    const std::vector<std::string> extra =
        sgd ? std::vector<std::string>{"optim.name=sgd", "optim.lr=0.05", bn_student}
            : std::vector<std::string>{bn_student};
    const std::string prefix = sgd ? "bn_sgd" : "bn_adam";
    run(1, distill(prefix + "_one", 20, extra));
    const Proc synced = run(2, distill(prefix + "_sync", 20, concat(extra, {"student.sync_bn=true"})));
    EXPECT_NE(synced.err.find("BatchNorm statistics over all ranks (6 layers)"), std::string::npos) << synced.err;
    run(2, distill(prefix + "_local", 20, extra));
    const int step = close_step(sgd);
    const double d_sync = model_distance(checkpoint(prefix + "_sync", step), checkpoint(prefix + "_one", step)).relative;
    const double d_local =
        model_distance(checkpoint(prefix + "_local", step), checkpoint(prefix + "_one", step)).relative;
    EXPECT_LT(d_sync, sgd ? 1e-5 : 1e-4) << prefix << ": synced BatchNorm on 2 ranks vs 1 rank after " << step << " steps";
    EXPECT_GT(d_local, 100 * d_sync) << prefix << ": per-rank statistics should differ from the whole batch's";
    std::printf("[ ranks ] %s: BatchNorm on 2 ranks vs 1 rank after %d steps: synced %.2e, per rank %.2e\n",
                prefix.c_str(), step, d_sync, d_local);
  }
  const Proc gn = run(1, distill("gn_sync", 2, {"student.sync_bn=true", "optim.accumulate=2"}));
  EXPECT_NE(gn.err.find("has no BatchNorm layers; nothing to synchronise"), std::string::npos) << gn.err;
  EXPECT_NE(gn.err.find("2 micro-batches of 6 images per step"), std::string::npos) << "the note replaces nothing:\n"
                                                                                     << gn.err;
}

// The README's CPU launch examples, as written, with small-scale overrides appended: the two
// commands of the "Many GPUs" block that run on a CPU (mpirun on 2 processes, then the resume
// on 1 process), in a folder laid out like a checkout after the demo (configs/, build/kd and
// the demo's teacher).
TEST_F(Parallel, TheReadmesCpuLaunchExamplesRunAsWritten) {
  if (!std::ifstream("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").good())
    GTEST_SKIP() << "Fashion-MNIST (dataset-fashion-mnist) is not installed";
  const std::string readme = test::read_text(std::string(KD_SOURCE_DIR) + "/README.md");
  const size_t section = readme.find("## Many GPUs");
  ASSERT_NE(section, std::string::npos);
  const size_t block = readme.find("```sh\n", section) + 6;
  std::vector<std::string> commands;
  std::istringstream lines(readme.substr(block, readme.find("\n\n", block) - block));
  for (std::string line; std::getline(lines, line);)
    if (!line.empty() && line[0] != '#') commands.push_back(line);
  ASSERT_EQ(commands.size(), 2u) << "the README's CPU examples changed";
  test::TempDir work;
  const std::string d = work.str();
  ASSERT_EQ(std::system(("mkdir -p " + d + "/build && ln -s " + KD_SOURCE_DIR + "/configs " + d + "/configs && ln -s " +
                         KD_BINARY + " " + d + "/build/kd")
                            .c_str()),
            0);
  const std::string small = " run.steps=6 run.stop_after=3 data.train_subset=60 data.test_limit=40 data.batch_size=12";
  const Proc teacher = run_ranks(1,
                                 {"train", "-c", std::string(KD_SOURCE_DIR) + "/configs/fashion_mnist_teacher.toml",
                                  "run.steps=3", "data.test_limit=40", "data.batch_size=12"},
                                 d);
  ASSERT_EQ(teacher.code, 0) << teacher.err;
  for (size_t i = 0; i < commands.size(); ++i) {
    std::string cmd = commands[i];
    if (cmd.rfind("mpirun ", 0) == 0) cmd = "mpirun --allow-run-as-root --oversubscribe " + cmd.substr(7);
    // The second command finishes the run the first paused (run.stop_after=3 of run.steps=6).
    const std::string full = "cd " + d + " && timeout -s KILL 300 " + cmd + small +
                             (i == 1 ? " run.stop_after=0" : "") + " > out.txt 2> err.txt";
    const int status = std::system(full.c_str());
    EXPECT_EQ(status, 0) << cmd << "\n" << test::read_text(d + "/err.txt");
  }
  const std::string err = test::read_text(d + "/err.txt");
  EXPECT_NE(err.find("at step 3"), std::string::npos) << "the second command resumed the first's run:\n" << err;
  EXPECT_TRUE(std::ifstream(d + "/runs/demo/fm_2ranks/model.safetensors").good());
}

// kd bench under mpirun: the all-reduce table of the job's transport and the step with the
// buckets reduced during backward and with one all-reduce after it.
TEST_F(Parallel, BenchMeasuresAllReduceAndBothGradientPaths) {
  const Proc p = run(2, {"bench",
                         "--device",
                         "cpu",
                         "--comm",
                         "--compare-overlap",
                         "--teacher",
                         "resnetv2(depths=1, width=8, stem=conv3)",
                         "--student",
                         "resnetv2(depths=1, width=4, stem=conv3)",
                         "--teacher-res",
                         "16",
                         "--student-res",
                         "16",
                         "--batch",
                         "8",
                         "--steps",
                         "2",
                         "--warmup",
                         "1",
                         "--classes",
                         "10",
                         "--source-px",
                         "20"});
  EXPECT_NE(p.out.find("busbw GB/s"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("\"tool\": \"kd-allreduce\", \"transport\": \"mpi\", \"ranks\": 2"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("\"ranks\": 2, \"accumulate\": 1, \"overlap\": true"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("\"ranks\": 2, \"accumulate\": 1, \"overlap\": false"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("grad_sync"), std::string::npos) << "the phase table shows the communication";
}

}  // namespace
}  // namespace kd
