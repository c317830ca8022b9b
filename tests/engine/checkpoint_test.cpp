// Checkpoints: atomic writes that survive a kill in the middle of a save, `latest` falling back
// to the newest loadable file, and keeping only the last K.
#include "engine/checkpoint.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/data/data_fixtures.h"

namespace kd {
namespace {

namespace fs = std::filesystem;

SafetensorsWriter checkpoint_with(float value, int64_t numel) {
  Tensor t = Tensor::zeros_cpu({numel}, DType::f32);
  std::fill(t.data<float>(), t.data<float>() + numel, value);
  SafetensorsWriter w;
  w.add("w", t);
  w.set_metadata("value", std::to_string(value));
  return w;
}

float value_in(const std::string& path) {
  return SafetensorsFile::open(path).tensor("w").data<float>()[0];
}

TEST(Checkpoint, LatestNamesTheNewestAndOnlyKeepAreKept) {
  test::TempDir dir;
  CheckpointManager m(dir.str() + "/ckpt", 2);
  EXPECT_FALSE(m.latest().has_value());
  for (int step = 1; step <= 4; ++step) m.save(checkpoint_with(float(step), 16), step * 10);
  ASSERT_TRUE(m.latest().has_value());
  EXPECT_EQ(value_in(*m.latest()), 4.0f);
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.str() + "/ckpt")) files += e.path().extension() == ".safetensors";
  EXPECT_EQ(files, 2);
}

TEST(Checkpoint, LatestFallsBackWhenItsFileIsDamaged) {
  test::TempDir dir;
  CheckpointManager m(dir.str(), 5);
  m.save(checkpoint_with(1.0f, 16), 1);
  const std::string second = m.save(checkpoint_with(2.0f, 16), 2);
  fs::resize_file(second, 20);  // torn by something outside kd
  ASSERT_TRUE(m.latest().has_value());
  EXPECT_EQ(value_in(*m.latest()), 1.0f);
}

TEST(Checkpoint, KillDuringSaveLeavesThePreviousCheckpointLoadable) {
  test::TempDir dir;
  const std::string folder = dir.str() + "/ckpt";
  {
    CheckpointManager m(folder, 3);
    m.save(checkpoint_with(7.0f, 16), 1);
  }
  // A child writes 64 MB checkpoints in a loop; it is killed at several moments, some of them
  // certainly inside a write. After every kill, `latest` must name a complete checkpoint.
  for (int round = 0; round < 6; ++round) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      CheckpointManager m(folder, 3);
      for (int step = 2;; ++step) m.save(checkpoint_with(float(step), int64_t(16) << 20), step);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(40 + 60 * round));
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
    CheckpointManager m(folder, 3);
    const auto latest = m.latest();
    ASSERT_TRUE(latest.has_value()) << "round " << round;
    SafetensorsFile f = SafetensorsFile::open(*latest);  // complete, valid file
    const Tensor w = f.tensor("w");
    EXPECT_EQ(w.data<float>()[0], w.data<float>()[w.numel() - 1]) << *latest;
  }
}

TEST(Checkpoint, AtomicTextWriteReplacesWholeFiles) {
  test::TempDir dir;
  const std::string path = dir.str() + "/note";
  write_file_atomic(path, "first\n");
  write_file_atomic(path, "second\n");
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "second");
  int leftovers = 0;
  for (const auto& e : fs::directory_iterator(dir.str())) leftovers += e.path().filename() != "note";
  EXPECT_EQ(leftovers, 0) << "no temporary files left behind";
  EXPECT_THROW(write_file_atomic(dir.str() + "/missing/folder/note", "x"), Error);
}

}  // namespace
}  // namespace kd
