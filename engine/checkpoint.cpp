#include "engine/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <vector>

namespace kd {

namespace fs = std::filesystem;

void write_file_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  KD_CHECK(fd >= 0, "cannot create ", tmp, ": ", std::strerror(errno));
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      KD_FAIL("cannot write ", tmp, ": ", std::strerror(err));
    }
    done += size_t(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    KD_FAIL("cannot replace ", path, ": ", std::strerror(err));
  }
  const std::string folder = fs::path(path).parent_path().empty() ? "." : fs::path(path).parent_path().string();
  const int dfd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

CheckpointManager::CheckpointManager(std::string dir, int keep) : dir_(std::move(dir)), keep_(keep) {
  KD_CHECK(keep >= 1, "checkpoint.keep must be at least 1, got ", keep);
  std::error_code ec;
  fs::create_directories(dir_, ec);
  KD_CHECK(!ec, "cannot create the checkpoint folder ", dir_, ": ", ec.message());
}

static std::vector<std::pair<int64_t, std::string>> checkpoints_in(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  static const std::regex name(R"(step_(\d+)\.safetensors)");
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string file = e.path().filename().string();
    if (std::regex_match(file, m, name)) found.emplace_back(std::stoll(m[1]), e.path().string());
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::string CheckpointManager::save(const SafetensorsWriter& content, int64_t step) {
  char file[64];
  std::snprintf(file, sizeof file, "step_%09lld.safetensors", (long long)step);
  const std::string path = (fs::path(dir_) / file).string();
  content.write(path);
  write_file_atomic((fs::path(dir_) / "latest").string(), std::string(file) + "\n");
  auto all = checkpoints_in(dir_);
  for (size_t i = 0; i + size_t(keep_) < all.size(); ++i) {
    std::error_code ec;
    if (all[i].second != path) fs::remove(all[i].second, ec);
  }
  return path;
}

std::optional<std::string> CheckpointManager::latest() const {
  std::ifstream in(fs::path(dir_) / "latest");
  std::string name;
  if (in && std::getline(in, name) && !name.empty()) {
    const std::string path = (fs::path(dir_) / name).string();
    try {
      SafetensorsFile::open(path);
      return path;
    } catch (const Error&) {
      // fall through to scanning: `latest` names a damaged file
    }
  }
  auto all = checkpoints_in(dir_);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      SafetensorsFile::open(it->second);
      return it->second;
    } catch (const Error&) {
    }
  }
  return std::nullopt;
}

}  // namespace kd
