// Synthetic data and helpers for end-to-end tests of kd's commands: a small ImageFolder of four
// visually distinct, noisy classes (stripes in four orientations) that a tiny network learns in
// a few dozen steps, and a runner for the kd command line that captures its output.
#pragma once
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

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
