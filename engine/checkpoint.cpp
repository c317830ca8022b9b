#include "engine/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <vector>

#include "engine/fault_injection.h"

namespace kd {

namespace fs = std::filesystem;

CheckpointManager::CheckpointManager(std::string dir, int keep) : dir_(std::move(dir)), keep_(keep) {
  KD_CHECK(keep >= 1, "checkpoint.keep must be at least 1, got ", keep);
  std::error_code ec;
  fs::create_directories(dir_, ec);
  KD_CHECK(!ec, "cannot create the checkpoint folder ", dir_, ": ", ec.message());
  remove_temporary_files(dir_);
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
  fault::point("checkpoint.before_latest");
  write_file_atomic((fs::path(dir_) / "latest").string(), std::string(file) + "\n");
  fault::point("checkpoint.before_prune");
  auto all = checkpoints_in(dir_);
  for (size_t i = 0; i + size_t(keep_) < all.size(); ++i) {
    std::error_code ec;
    if (all[i].second != path) fs::remove(all[i].second, ec);
  }
  return path;
}

std::optional<std::string> CheckpointManager::latest(std::vector<std::string>* unloadable) const {
  auto loads = [&](const std::string& path) {
    try {
      SafetensorsFile::open(path);
      return true;
    } catch (const Error& e) {
      if (unloadable) unloadable->push_back(e.what());
      return false;
    }
  };
  std::ifstream in(fs::path(dir_) / "latest");
  std::string name;
  std::string named;
  if (in && std::getline(in, name) && !name.empty()) {
    named = (fs::path(dir_) / name).string();
    if (loads(named)) return named;
  }
  // `latest` is missing or names a damaged file: the newest file that loads.
  auto all = checkpoints_in(dir_);
  for (auto it = all.rbegin(); it != all.rend(); ++it)
    if (it->second != named && loads(it->second)) return it->second;
  return std::nullopt;
}

}  // namespace kd
