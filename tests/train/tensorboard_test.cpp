// TensorBoard event files: CRC32C against the standard check value, the TFRecord framing read
// back byte by byte, metrics records as tagged scalars, and the resume rule that keeps each step
// once in metrics.jsonl. tests/tools/tensorboard_test.cpp reads real runs with TensorBoard itself.
#include "train/tensorboard.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tests/data/data_fixtures.h"
#include "train/run_log.h"

namespace kd {
namespace {

uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

template <typename T>
T read_le(const std::string& bytes, size_t at) {
  T v;
  std::memcpy(&v, bytes.data() + at, sizeof(T));
  return v;
}

// The data of every record of a TFRecord file, each CRC checked.
std::vector<std::string> read_records(const std::string& path) {
  const std::string file = test::read_text(path);
  std::vector<std::string> records;
  size_t at = 0;
  while (at < file.size()) {
    EXPECT_LE(at + 12, file.size()) << "a torn record header";
    const uint64_t length = read_le<uint64_t>(file, at);
    EXPECT_EQ(read_le<uint32_t>(file, at + 8), masked(crc32c(file.data() + at, 8)))
        << "length CRC of record " << records.size();
    EXPECT_LE(at + 12 + length + 4, file.size());
    records.push_back(file.substr(at + 12, length));
    EXPECT_EQ(read_le<uint32_t>(file, at + 12 + length), masked(crc32c(records.back().data(), length)))
        << "data CRC of record " << records.size() - 1;
    at += 12 + length + 4;
  }
  return records;
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (is_event_file_name(e.path().filename().string())) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

TEST(Crc32c, MatchesTheStandardCheckValue) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
}

TEST(TensorBoard, MetricsRecordsBecomeTaggedScalars) {
  const ScalarRecord train = scalars_of_record(R"({"step": 20, "epoch": 0.5, "loss": 1.25, "grad_norm": null})");
  EXPECT_EQ(train.step, 20);
  EXPECT_EQ(train.scalars, (TaggedScalars{{"train/epoch", 0.5}, {"train/loss", 1.25}}));
  const ScalarRecord eval = scalars_of_record(
      R"({"step": 30, "epoch": 1, "eval": {"images": 64, "student_top1": 0.75, "each_agreement": [0.5, 0.25]}})");
  EXPECT_EQ(eval.step, 30);
  EXPECT_EQ(eval.scalars, (TaggedScalars{{"eval/epoch", 1},
                                         {"eval/images", 64},
                                         {"eval/student_top1", 0.75},
                                         {"eval/each_agreement/0", 0.5},
                                         {"eval/each_agreement/1", 0.25}}));
  EXPECT_THROW(scalars_of_record(R"({"loss": 1})"), std::exception);
}

TEST(TensorBoard, EventFileIsTFRecordFramedWithTheVersionFirst) {
  test::TempDir dir;
  std::string path;
  {
    EventFileWriter w(dir.str());
    w.scalars(7, {{"train/loss", 0.5}});
    w.session_start(9);
    path = w.path();
  }
  EXPECT_NE(std::filesystem::path(path).filename().string().find("events.out.tfevents."), std::string::npos);
  const std::vector<std::string> events = read_records(path);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_NE(events[0].find("brain.Event:2"), std::string::npos);
  // Event{wall_time=1 (0x09 + 8 bytes), step=2 (0x10, varint 7), summary=5 (0x2a, len)}.
  EXPECT_EQ(events[1][0], '\x09');
  EXPECT_EQ(events[1].substr(9, 2), std::string("\x10\x07", 2));
  EXPECT_EQ(events[1][11], '\x2a');
  const size_t tag = events[1].find("train/loss");
  ASSERT_NE(tag, std::string::npos);
  EXPECT_EQ(events[1][tag + 10], '\x15');  // simple_value, fixed32
  EXPECT_EQ(read_le<float>(events[1], tag + 11), 0.5f);
  EXPECT_EQ(events[2].substr(9), std::string("\x10\x09\x3a\x02\x08\x01", 6));  // step 9, SessionLog START
}

TEST(TensorBoard, ANewFileSortsAfterTheFolderEventFilesEvenWithinTheSameSecond) {
  test::TempDir dir;
  const long long later =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count() +
      100;
  std::ofstream(dir.file("events.out.tfevents." + std::to_string(later) + ".zzz.1.kd")) << "";
  EventFileWriter w(dir.str());
  EXPECT_EQ(event_files(dir.str()).back(), w.path());
}

TEST(RunLog, AResumeKeepsEachStepOnceInMetricsAndStartsANewEventFile) {
  test::TempDir dir;
  {
    std::ofstream m(dir.file("metrics.jsonl"));
    m << R"({"step": 5, "loss": 3})"
      << "\n"
      << R"({"step": 10, "loss": 2})"
      << "\n"
      << R"({"step": 10, "epoch": 1, "eval": {"student_top1": 0.5}})"
      << "\n"
      << R"({"step": 15, "loss": 1})"
      << "\n"
      << R"({"step": 20, "lo)";  // the torn write of a killed run
  }
  RunLogStart start;
  start.resumed_step = 10;
  {
    RunLog log(dir.str(), start);
    log.metrics(R"({"step": 15, "loss": 1.5})");
  }
  EXPECT_EQ(test::read_text(dir.file("metrics.jsonl")),
            "{\"step\": 5, \"loss\": 3}\n{\"step\": 10, \"loss\": 2}\n"
            "{\"step\": 10, \"epoch\": 1, \"eval\": {\"student_top1\": 0.5}}\n{\"step\": 15, \"loss\": 1.5}\n");
  const auto files = event_files(dir.str());
  ASSERT_EQ(files.size(), 1u);
  // version, START at 10, the two kept records at step 10 again, then step 15.
  const std::vector<std::string> events = read_records(files[0]);
  ASSERT_EQ(events.size(), 5u);
  EXPECT_NE(events[1].find(std::string("\x10\x0a\x3a\x02\x08\x01", 6)), std::string::npos);
  EXPECT_NE(events[2].find("train/loss"), std::string::npos);
  EXPECT_NE(events[3].find("eval/student_top1"), std::string::npos);
  EXPECT_NE(events[4].find(std::string("\x10\x0f", 2)), std::string::npos);

  // Resumed after completing at step 10: the final evaluation is redone, so the old one goes.
  start.final_eval_again = true;
  { RunLog log(dir.str(), start); }
  EXPECT_EQ(test::read_text(dir.file("metrics.jsonl")), "{\"step\": 5, \"loss\": 3}\n{\"step\": 10, \"loss\": 2}\n");
  EXPECT_EQ(event_files(dir.str()).size(), 2u);

  // A fresh start begins both anew.
  { RunLog log(dir.str(), RunLogStart{}); }
  EXPECT_EQ(test::read_text(dir.file("metrics.jsonl")), "");
  EXPECT_EQ(event_files(dir.str()).size(), 1u);
}

}  // namespace
}  // namespace kd
