// TensorBoard event files written by kd itself, so `tensorboard --logdir runs/` shows a run live:
// <run>/events.out.tfevents.<unix time>.<host>.<pid>.kd, one scalar per numeric field of each
// metrics.jsonl record (train/loss, train/lr, eval/student_top1, ...; see scalars_of_record).
//
// File format (TFRecord framing, integers little-endian), one record per event:
//   uint64 length | uint32 masked_crc(length's 8 bytes) | data | uint32 masked_crc(data)
// crc is CRC32C (Castagnoli, reflected polynomial 0x82F63B78; not zlib's CRC32) and
// masked_crc = ((crc >> 15) | (crc << 17)) + 0xa282ead8.
// Each record's data is a serialized tensorflow.Event. kd encodes it by hand instead of depending
// on protobuf: the GPU machines have no protobuf, and kd needs three messages, a few fields each
// (field number, wire type):
//   Event      { wall_time 1 fixed64 double; step 2 varint;
//                one of: file_version 3 string | summary 5 Summary | session_log 7 SessionLog }
//   Summary    { value 1 repeated Value }      Value { tag 1 string; simple_value 2 fixed32 float }
//   SessionLog { status 1 varint (START = 1) }
// The first event of a file is file_version "brain.Event:2".
//
// Resume rule: a run resumed from the checkpoint at step S writes a new file that starts with a
// SessionLog START at step S. TensorBoard's reader (EventAccumulator, purge_orphaned_data) then
// drops every event with step >= S read from the older files: the steps the killed run logged
// after its checkpoint. The records at step S that metrics.jsonl keeps are written again after
// the START (train/run_log.h trims metrics.jsonl by the same rule), so each step shows once.
#pragma once
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace kd {

uint32_t crc32c(const void* data, size_t bytes);  // crc32c("123456789") = 0xE3069283

using TaggedScalars = std::vector<std::pair<std::string, double>>;

// A metrics.jsonl record as scalars: its "step", and every numeric field tagged train/<key>, or
// eval/<key> for an evaluation record ({"step", "epoch", "eval": {...}}: the nested fields lose
// the "eval" level); array elements get /<index>. Non-numeric and null fields are skipped.
struct ScalarRecord {
  int64_t step = 0;
  TaggedScalars scalars;
};
ScalarRecord scalars_of_record(const std::string& json_object);

class EventFileWriter {
 public:
  // Creates a new event file in `dir` whose name sorts after the event files already there
  // (TensorBoard reads a folder's files in name order), and writes the file_version event.
  explicit EventFileWriter(const std::string& dir);
  void scalars(int64_t step, const TaggedScalars& values);  // one event, flushed
  void session_start(int64_t step);                         // SessionLog START, flushed
  const std::string& path() const { return path_; }

 private:
  void write_event(const std::string& event_body);
  std::string path_;
  std::ofstream file_;
};

bool is_event_file_name(const std::string& file_name);  // contains "tfevents"

}  // namespace kd
