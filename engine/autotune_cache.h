// The autotuning results of earlier runs, in a small text file, so the second run of a job (or
// any run on the same kind of device) starts tuned. One line per key:
//   # kd autotune cache v1
//   <key> TAB <choice> TAB <milliseconds>
// The key names what the choice depends on (device name and compute capability, cuDNN version,
// op, shape, alignments), so a file may be shared by jobs, devices and library versions. Ranks of
// one job may write the same file: every write re-reads it, merges and replaces it atomically.
// A file that does not parse is ignored with one warning naming it and the line, and rewritten
// on the next put; a file that cannot be written costs the persistence, never the run.
#pragma once
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/cuda_handles.h"

namespace kd {

class AutotuneCache : public TuningStore {
 public:
  explicit AutotuneCache(std::string path);
  int64_t find(const std::string& key) override;
  void put(const std::string& key, int64_t choice, double ms) override;
  const std::string& path() const { return path_; }
  size_t size();
  // Warnings so far (also printed to stderr once each): a corrupt or unwritable file.
  std::vector<std::string> warnings();

 private:
  struct Entry {
    int64_t choice = -1;
    double ms = 0;
  };
  // The file's entries; false (and a warning) when it exists but does not parse.
  bool read_file(std::map<std::string, Entry>* out);
  void warn(const std::string& message);

  std::string path_;
  std::mutex mutex_;
  std::map<std::string, Entry> entries_;
  std::vector<std::string> warnings_;
};

// $KD_CACHE_DIR/autotune.tsv, else $XDG_CACHE_HOME/kd/..., else $HOME/.cache/kd/...; "" when
// none of them is set.
std::string default_autotune_cache_path();

}  // namespace kd
