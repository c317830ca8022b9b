// Synthetic data and helpers for end-to-end tests of kd's commands: a small ImageFolder of four
// visually distinct, noisy classes (stripes in four orientations) that a tiny network learns in
// a few dozen steps, and a runner for the kd command line that captures its output.
#pragma once
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "tests/data/data_fixtures.h"
#include "tools/cli/cli.h"

namespace kd::test {

// root/train/<class>/*.png and root/test/<class>/*.png, 16x16 RGB.
inline void write_stripes_dataset(const TempDir& dir, int train_per_class = 24, int test_per_class = 16) {
  const char* names[4] = {"horizontal", "vertical", "diagonal", "checker"};
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> noise(-40, 40), phase(0, 3);
  for (int split = 0; split < 2; ++split)
    for (int c = 0; c < 4; ++c) {
      const int count = split == 0 ? train_per_class : test_per_class;
      for (int i = 0; i < count; ++i) {
        const int p = phase(rng);
        std::vector<uint8_t> px(16 * 16 * 3);
        for (int y = 0; y < 16; ++y)
          for (int x = 0; x < 16; ++x) {
            const int t = c == 0 ? y : c == 1 ? x : c == 2 ? x + y : (x / 2 + y / 2);
            const bool on = ((t + p) / 2) % 2 == 0;
            for (int ch = 0; ch < 3; ++ch)
              px[size_t((y * 16 + x) * 3 + ch)] = uint8_t(std::clamp((on ? 200 : 60) + noise(rng), 0, 255));
          }
        write_png(dir.file(std::string(split == 0 ? "train/" : "test/") + names[c] + "/" + std::to_string(i) + ".png"),
                  16, 16, 3, px);
      }
    }
}

struct CliResult {
  int code = 0;
  std::string err, out;
};

// Runs `kd args...` in-process, capturing stdout and stderr.
inline CliResult run_kd(std::vector<std::string> args) {
  args.insert(args.begin(), "kd");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  testing::internal::CaptureStderr();
  testing::internal::CaptureStdout();
  CliResult r;
  r.code = kd::cli::run(int(argv.size()), argv.data());
  r.out = testing::internal::GetCapturedStdout();
  r.err = testing::internal::GetCapturedStderr();
  return r;
}

// Overrides for a tiny run on the stripes data in `dir`.
inline std::vector<std::string> tiny_run(const TempDir& dir, const std::string& name, int steps) {
  return {"run.out_dir=" + dir.str() + "/runs", "run.name=" + name, "run.device=cpu", "run.steps=" + std::to_string(steps),
          "run.log_every=5", "data.kind=image_folder", "data.train=" + dir.str() + "/train",
          "data.test=" + dir.str() + "/test", "data.batch_size=16", "data.loader_threads=2",
          "augment.resolution=16", "augment.area_min=0.5", "augment.eval_crop_fraction=1.0", "eval.batch_size=32",
          "optim.lr=0.01", "schedule.warmup_steps=2"};
}

// The number after "key": in a JSON text (NaN when the key is not there).
inline double json_value(const std::string& json, const std::string& key) {
  const size_t at = json.find("\"" + key + "\": ");
  if (at == std::string::npos) return NAN;
  return std::stod(json.substr(at + key.size() + 4));
}

// The two runs' model files hold the same tensors, bit for bit.
inline void expect_same_weights(const std::string& path_a, const std::string& path_b) {
  SafetensorsFile a = SafetensorsFile::open(path_a), b = SafetensorsFile::open(path_b);
  ASSERT_EQ(a.names(), b.names());
  for (const std::string& name : a.names()) {
    const Tensor x = a.tensor(name), y = b.tensor(name);
    ASSERT_EQ(x.nbytes(), y.nbytes()) << name;
    EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0) << name << " differs between " << path_a << " and " << path_b;
  }
}

// The same runs with run.device=cuda.
inline std::vector<std::string> on_gpu(std::vector<std::string> args) {
  for (std::string& a : args)
    if (a == "run.device=cpu") a = "run.device=cuda";
  return args;
}

// The metrics lines of two runs' log windows (the records with a gradient norm), side by side.
inline std::vector<std::pair<std::string, std::string>> logged_windows(const std::string& run_a, const std::string& run_b) {
  std::istringstream a(test::read_text(run_a + "/metrics.jsonl")), b(test::read_text(run_b + "/metrics.jsonl"));
  std::vector<std::pair<std::string, std::string>> out;
  for (std::string la, lb; std::getline(a, la) && std::getline(b, lb);)
    if (la.find("\"grad_norm\"") != std::string::npos) out.emplace_back(la, lb);
  return out;
}

// A shell command's exit code and its stdout and stderr together.
struct CommandResult {
  int code = -1;
  std::string out;
};
inline CommandResult run_command(const std::string& command) {
  CommandResult c;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return c;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) c.out.append(buf, n);
  const int status = ::pclose(p);
  c.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return c;
}

inline std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace kd::test
