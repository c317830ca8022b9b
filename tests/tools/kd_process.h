// The real `kd` binary as a child process, for tests that kill it, signal it or inject faults
// into it (KD_FAULT, engine/fault_injection.h, is read once per process, so each run needs a
// process of its own). Also: a tiny distillation run on the stripes data, and checks on what a
// run folder holds.
#pragma once
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "tests/tools/tool_fixtures.h"

namespace kd::test {

struct KdProcess {
  int code = -1;     // exit status, or 128 + signal when a signal ended it
  std::string err;   // stderr and stdout together
};

// Runs `kd args...` with KD_FAULT=fault (none when empty). When the child stops itself
// (KD_FAULT <point>:<n>=stop), on_stop(pid) runs and the child is continued.
inline KdProcess run_kd_process(const std::vector<std::string>& args, const std::string& fault,
                                const std::string& log_path, const std::function<void(pid_t)>& on_stop = {}) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (fault.empty())
      unsetenv("KD_FAULT");
    else
      setenv("KD_FAULT", fault.c_str(), 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    FILE* log = std::fopen(log_path.c_str(), "w");
    if (!log) _exit(126);
    dup2(fileno(log), STDOUT_FILENO);
    dup2(fileno(log), STDERR_FILENO);
    std::vector<std::string> all = args;
    all.insert(all.begin(), KD_BINARY);
    std::vector<char*> argv;
    for (std::string& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(KD_BINARY, argv.data());
    _exit(127);
  }
  KdProcess p;
  int status = 0;
  while (waitpid(pid, &status, WUNTRACED) == pid) {
    if (WIFSTOPPED(status)) {
      if (on_stop) on_stop(pid);
      kill(pid, SIGCONT);
      continue;
    }
    p.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    break;
  }
  p.err = read_text(log_path);
  return p;
}

// Every step_N.safetensors in the folder opens (header, tiling and checksums), `latest` names
// one of them when it exists, and no temporary file is left (`temporaries_allowed`: a kill may
// have left one; the next start removes it).
inline void expect_only_loadable_checkpoints(const std::string& folder, bool temporaries_allowed,
                                             const std::string& when) {
  namespace fs = std::filesystem;
  if (!fs::exists(folder)) return;
  for (const auto& e : fs::directory_iterator(folder)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp.") != std::string::npos) {
      EXPECT_TRUE(temporaries_allowed) << when << ": " << name << " left behind";
      continue;
    }
    if (e.path().extension() == ".safetensors") {
      EXPECT_NO_THROW(SafetensorsFile::open(e.path().string())) << when << ": " << name << " does not load";
    }
  }
  if (fs::exists(folder + "/latest")) {
    const std::string named = read_text(folder + "/latest");
    ASSERT_FALSE(named.empty()) << when;
    EXPECT_TRUE(fs::exists(folder + "/" + named.substr(0, named.find('\n')))) << when << ": latest names " << named;
  }
}

// Every tensor of two safetensors files equal, bit for bit (`except`: names to leave out).
inline void expect_bitwise_equal(const std::string& a_path, const std::string& b_path,
                                 const std::vector<std::string>& except = {}) {
  SafetensorsFile a = SafetensorsFile::open(a_path), b = SafetensorsFile::open(b_path);
  ASSERT_EQ(a.names(), b.names());
  for (const std::string& name : a.names()) {
    if (std::find(except.begin(), except.end(), name) != except.end()) continue;
    const Tensor x = a.tensor(name), y = b.tensor(name);
    ASSERT_EQ(x.nbytes(), y.nbytes()) << name;
    EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0) << name << " differs: " << a_path << " vs " << b_path;
  }
}

// A teacher (2 steps of kd train) and an uninterrupted 12-step distillation ("straight") on the
// stripes data, made once per test process; run() starts more distillations beside them.
class KdRuns : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    write_stripes_dataset(*dir_, 8, 4);
    const auto teacher = run("train", "teacher", {"model.arch=resnetv2(depths=1-1, width=8, stem=conv3)", "run.steps=2"}, "");
    ASSERT_EQ(teacher.code, 0) << teacher.err;
    const auto straight = run("distill", "straight", {}, "");
    ASSERT_EQ(straight.code, 0) << straight.err;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  // 12 steps, checkpoints every 3, an evaluation at step 6 and at the end.
  static std::vector<std::string> distill_args(const std::string& name) {
    auto args = concat(tiny_run(*dir_, name, 12),
                       {"student.arch=resnetv2(depths=1-1, width=8, stem=conv3)", "checkpoint.every=3",
                        "checkpoint.keep=2", "eval.every=6", "eval.batch_size=8", "run.log_every=1",
                        "teacher.weights=" + dir_->str() + "/runs/teacher/model.safetensors"});
    return args;
  }
  static KdProcess run(const std::string& command, const std::string& name, const std::vector<std::string>& extra,
                             const std::string& fault, bool resume = false,
                             const std::function<void(pid_t)>& on_stop = {}) {
    std::vector<std::string> args = {command};
    if (resume) args.push_back("--resume");
    args = concat(args, command == "distill" ? distill_args(name) : tiny_run(*dir_, name, 1));
    args = concat(args, extra);
    return run_kd_process(args, fault, dir_->str() + "/" + name + ".log", on_stop);
  }
  static std::string run_dir(const std::string& name) { return dir_->str() + "/runs/" + name; }
  static inline TempDir* dir_ = nullptr;
};

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace kd::test
