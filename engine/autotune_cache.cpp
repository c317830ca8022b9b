#include "engine/autotune_cache.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/checkpoint.h"
#include "kernels/check.h"

namespace kd {

namespace {

const char* const kHeader = "# kd autotune cache v1";

bool parse_line(const std::string& line, std::string* key, int64_t* choice, double* ms) {
  const size_t a = line.find('\t');
  if (a == std::string::npos || a == 0) return false;
  const size_t b = line.find('\t', a + 1);
  if (b == std::string::npos || line.find('\t', b + 1) != std::string::npos) return false;
  *key = line.substr(0, a);
  const std::string c = line.substr(a + 1, b - a - 1), t = line.substr(b + 1);
  char* end = nullptr;
  *choice = std::strtoll(c.c_str(), &end, 10);
  if (c.empty() || *end != '\0' || *choice < 0) return false;
  *ms = std::strtod(t.c_str(), &end);
  return !t.empty() && *end == '\0' && *ms >= 0;
}

}  // namespace

AutotuneCache::AutotuneCache(std::string path) : path_(std::move(path)) {
  std::lock_guard<std::mutex> lock(mutex_);
  read_file(&entries_);
}

bool AutotuneCache::read_file(std::map<std::string, Entry>* out) {
  std::ifstream in(path_);
  if (!in) return true;  // no file yet
  std::map<std::string, Entry> read;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (number == 1) {
      if (line != kHeader) {
        warn("autotune cache " + path_ + " does not start with '" + kHeader + "'; ignoring it (it is rewritten " +
             "with this run's results)");
        return false;
      }
      continue;
    }
    if (line.empty()) continue;
    std::string key;
    Entry e;
    if (!parse_line(line, &key, &e.choice, &e.ms)) {
      warn("autotune cache " + path_ + " is corrupt at line " + std::to_string(number) +
           "; ignoring it (it is rewritten with this run's results)");
      return false;
    }
    read[key] = e;
  }
  for (auto& [key, e] : read) (*out)[key] = e;
  return true;
}

int64_t AutotuneCache::find(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(key);
  return it == entries_.end() ? -1 : it->second.choice;
}

void AutotuneCache::put(const std::string& key, int64_t choice, double ms) {
  KD_CHECK(!key.empty() && key.find_first_of("\t\n") == std::string::npos,
           "autotune cache: a key must be one line without tabs, got '", key, "'");
  KD_CHECK(choice >= 0, "autotune cache: a choice is an index, got ", choice);
  std::lock_guard<std::mutex> lock(mutex_);
  entries_[key] = Entry{choice, ms};
  if (path_.empty()) return;
  // Another rank may have written since this one read: merge what is on disk, ours winning.
  std::map<std::string, Entry> merged;
  read_file(&merged);
  for (auto& [k, e] : entries_) merged[k] = e;
  entries_ = merged;
  std::ostringstream text;
  text << kHeader << "\n";
  for (const auto& [k, e] : merged) {
    char ms_text[32];
    std::snprintf(ms_text, sizeof ms_text, "%.6g", e.ms);
    text << k << "\t" << e.choice << "\t" << ms_text << "\n";
  }
  try {
    const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    write_file_atomic(path_, text.str());
  } catch (const std::exception& e) {
    warn(std::string("autotune cache: cannot write ") + path_ + " (" + e.what() +
         "); this run's choices are kept in memory only");
  }
}

size_t AutotuneCache::size() {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.size();
}

std::vector<std::string> AutotuneCache::warnings() {
  std::lock_guard<std::mutex> lock(mutex_);
  return warnings_;
}

void AutotuneCache::warn(const std::string& message) {
  for (const std::string& w : warnings_)
    if (w == message) return;
  warnings_.push_back(message);
  std::fprintf(stderr, "warning: %s\n", message.c_str());
}

std::string default_autotune_cache_path() {
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return v && *v ? std::string(v) : std::string();
  };
  if (!env("KD_CACHE_DIR").empty()) return env("KD_CACHE_DIR") + "/autotune.tsv";
  if (!env("XDG_CACHE_HOME").empty()) return env("XDG_CACHE_HOME") + "/kd/autotune.tsv";
  if (!env("HOME").empty()) return env("HOME") + "/.cache/kd/autotune.tsv";
  return "";
}

}  // namespace kd
