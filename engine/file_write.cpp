#include "engine/file_write.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <regex>

#include "engine/fault_injection.h"
#include "kernels/check.h"

namespace kd {

namespace {

std::string errno_text(int err) { return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")"; }

std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// write(2) until done; a KD_FAULT failure after `limit` bytes of the file. Returns 0 or errno.
int write_fully(int fd, const char* p, size_t n, size_t& written, size_t limit, int fault_error) {
  while (n > 0) {
    size_t chunk = std::min(n, size_t(1) << 30);
    if (written >= limit) return fault_error;
    chunk = std::min(chunk, limit - written);
    const ssize_t w = ::write(fd, p, chunk);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return errno;
    if (w == 0) return EIO;
    p += w, n -= size_t(w), written += size_t(w);
  }
  return 0;
}

}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp." + std::to_string(::getpid())) {
  if (const auto f = fault::next_write(path_)) fail_at_byte_ = f->at_byte, fail_error_ = f->error;
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot create", errno);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::fail(const char* step, int error) {
  KD_FAIL("cannot write ", path_, ": ", step, " ", tmp_, ": ", errno_text(error));
}

void AtomicFile::write(const void* data, size_t bytes) {
  const int err = write_fully(fd_, static_cast<const char*>(data), bytes, written_, fail_at_byte_, fail_error_);
  if (err) fail("write failed on", err);
}

void AtomicFile::commit() {
  fault::point("file.after_write");
  const bool synced = ::fsync(fd_) == 0;
  const int sync_err = errno;
  const bool closed = ::close(fd_) == 0;
  const int close_err = errno;
  fd_ = -1;
  if (!synced || !closed) fail("fsync/close failed on", synced ? close_err : sync_err);
  fault::point("file.after_fsync");
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("cannot rename over it", errno);
  committed_ = true;
  fault::point("file.after_rename");
  // Make the rename itself durable.
  const std::string dir = parent_dir(path_);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  KD_CHECK(dfd >= 0, "wrote ", path_, " but cannot open its folder ", dir, " to fsync: ", errno_text(errno));
  const bool dir_synced = ::fsync(dfd) == 0;
  const int err = errno;
  ::close(dfd);
  KD_CHECK(dir_synced, "wrote ", path_, " but fsync of its folder ", dir, " failed: ", errno_text(err));
}

void write_file_atomic(const std::string& path, const std::string& content) {
  AtomicFile file(path);
  file.write(content.data(), content.size());
  file.commit();
}

int remove_temporary_files(const std::string& dir) {
  static const std::regex temporary(R"(.+\.tmp\.\d+)");
  int removed = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::error_code gone;
    if (std::regex_match(e.path().filename().string(), temporary) && std::filesystem::remove(e.path(), gone)) ++removed;
  }
  return removed;
}

AppendLog::AppendLog(std::string path, bool keep_existing, size_t max_pending)
    : path_(std::move(path)), max_pending_(std::max<size_t>(1, max_pending)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (keep_existing ? 0 : O_TRUNC), 0644);
  KD_CHECK(fd_ >= 0, "cannot open ", path_, " for writing: ", errno_text(errno));
}

AppendLog::~AppendLog() {
  if (fd_ >= 0) ::close(fd_);
}

bool AppendLog::write_record(const std::string& record, std::string& error) {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    error = "cannot append to " + path_ + ": " + errno_text(errno);
    return false;
  }
  size_t limit = SIZE_MAX;
  int fault_error = 0;
  if (const auto f = fault::next_write(path_)) limit = f->at_byte, fault_error = f->error;
  size_t written = 0;
  const int err = write_fully(fd_, record.data(), record.size(), written, limit, fault_error);
  if (err == 0) return true;
  // Cut the torn record back off, so the file holds whole records only.
  const bool cut = written == 0 || ::ftruncate(fd_, st.st_size) == 0;
  error = "cannot append to " + path_ + ": " + errno_text(err) + (cut ? "" : " (and a partial record remains)");
  return false;
}

std::string AppendLog::append(const std::string& record) {
  pending_.push_back(record);
  std::string error;
  while (!pending_.empty()) {
    if (!write_record(pending_.front(), error)) break;
    pending_.pop_front();
  }
  while (pending_.size() > max_pending_) pending_.pop_front(), ++dropped_;
  return error;
}

}  // namespace kd
