// Checkpoints: atomic writes that survive a kill in the middle of a save, `latest` falling back
// to the newest loadable file (a torn one, or one whose checksums fail), keeping only the last
// K, and metrics-style appends that survive a full device.
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

TEST(Checkpoint, AFlippedByteFailsItsChecksumAndLatestPassesOverTheFile) {
  test::TempDir dir;
  CheckpointManager m(dir.str(), 5);
  m.save(checkpoint_with(1.0f, 1000), 1);
  const std::string second = m.save(checkpoint_with(2.0f, 1000), 2);
  {
    std::fstream f(second, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-100, std::ios::end);  // inside the data of "w"
    f.put('\x7f');
  }
  try {
    SafetensorsFile::open(second);
    ADD_FAILURE() << "a corrupted tensor must not load";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(second + ": tensor 'w' fails its checksum"), std::string::npos) << e.what();
  }
  std::vector<std::string> unloadable;
  ASSERT_TRUE(m.latest(&unloadable).has_value());
  EXPECT_EQ(value_in(*m.latest()), 1.0f);
  ASSERT_EQ(unloadable.size(), 1u);
  EXPECT_NE(unloadable[0].find("fails its checksum"), std::string::npos) << unloadable[0];
}

TEST(Checkpoint, ChecksumsSeeEveryByte) {
  std::vector<uint8_t> bytes(77);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 37 + 1);
  const uint64_t base = content_checksum64(bytes.data(), bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i)
    for (uint8_t bit = 1; bit; bit = uint8_t(bit << 1)) {
      bytes[i] ^= bit;
      EXPECT_NE(content_checksum64(bytes.data(), bytes.size()), base) << "byte " << i << " bit " << int(bit);
      bytes[i] ^= bit;
    }
  EXPECT_NE(content_checksum64(bytes.data(), 76), content_checksum64(bytes.data(), 77)) << "the length counts";
}

TEST(Checkpoint, TemporaryFilesOfAKilledWriterAreRemovedWhenTheFolderOpens) {
  test::TempDir dir;
  test::write_text(dir.str() + "/step_000000004.safetensors.tmp.4242", "torn");
  test::write_text(dir.str() + "/keep.txt", "mine");
  CheckpointManager m(dir.str(), 2);
  EXPECT_FALSE(fs::exists(dir.str() + "/step_000000004.safetensors.tmp.4242"));
  EXPECT_TRUE(fs::exists(dir.str() + "/keep.txt"));
}

TEST(Checkpoint, AppendsToAFullDeviceFailWithTheErrorAndWait) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  AppendLog log("/dev/full", true, 2);
  const std::string error = log.append("{\"step\": 1}\n");
  EXPECT_NE(error.find("cannot append to /dev/full: No space left on device"), std::string::npos) << error;
  EXPECT_EQ(log.pending(), 1u);
  log.append("{\"step\": 2}\n");
  log.append("{\"step\": 3}\n");
  EXPECT_EQ(log.pending(), 2u) << "bounded";
  EXPECT_EQ(log.dropped(), 1);
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
