// kd's file writers, the one place where runs put bytes on disk: whole files replaced
// atomically (checkpoints, model files, config.toml, summary.json, `latest`) and append-only
// logs (metrics.jsonl). Errors name the path and the errno text. KD_FAULT
// (engine/fault_injection.h) can make any of these writes fail as a full disk does.
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>

namespace kd {

// A file replaced atomically: bytes go to <path>.tmp.<pid>; commit() fsyncs it, renames it over
// <path> and fsyncs the folder. A crash at any point leaves the old file or the new one, never a
// torn one; a failure (or destruction without commit) removes the temporary file.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);  // throws "cannot write P: cannot create T: ..."
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, size_t bytes);  // throws "cannot write P: write failed on T: ..."
  void commit();

 private:
  [[noreturn]] void fail(const char* step, int error);
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
  size_t written_ = 0;
  size_t fail_at_byte_ = SIZE_MAX;  // KD_FAULT
  int fail_error_ = 0;
};

// Writes a small text file atomically (AtomicFile).
void write_file_atomic(const std::string& path, const std::string& content);

// Removes the <name>.tmp.<pid> files a killed writer left in `dir` (a run's folders have one
// writer, so none of them is still being written). Returns how many were removed.
int remove_temporary_files(const std::string& dir);

// An append-only file of records (lines). A record lands whole or not at all: a failed write is
// cut back off the file. Records that could not be written wait (up to `max_pending`, the oldest
// dropped beyond that) and go out first on the next append, so a full disk costs no records
// once space returns.
class AppendLog {
 public:
  // keep_existing: append to what the file holds, else start it empty. Throws when it cannot open.
  AppendLog(std::string path, bool keep_existing, size_t max_pending = 10000);
  ~AppendLog();
  AppendLog(const AppendLog&) = delete;
  AppendLog& operator=(const AppendLog&) = delete;
  // Appends the waiting records, then this one. Returns "" or the error ("cannot append to P: ...").
  std::string append(const std::string& record);
  size_t pending() const { return pending_.size(); }
  int64_t dropped() const { return dropped_; }
  const std::string& path() const { return path_; }

 private:
  bool write_record(const std::string& record, std::string& error);
  std::string path_;
  int fd_ = -1;
  size_t max_pending_;
  std::deque<std::string> pending_;
  int64_t dropped_ = 0;
};

}  // namespace kd
