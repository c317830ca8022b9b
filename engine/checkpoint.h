// Checkpoint files of a run: <dir>/step_<N>.safetensors, each written atomically (temp file,
// fsync, rename), then <dir>/latest updated atomically to name it, then all but the newest
// `keep` removed. A crash or kill at any moment leaves `latest` naming a complete checkpoint;
// the temporary files a kill leaves behind are removed when the folder is next opened.
// A checkpoint holds the model under timm's names (loadable as plain weights), the optimizer
// state under "optimizer.*", and the training position in its metadata.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/file_write.h"
#include "engine/safetensors.h"

namespace kd {

class CheckpointManager {
 public:
  CheckpointManager(std::string dir, int keep);
  // Writes the checkpoint for `step` and returns its path.
  std::string save(const SafetensorsWriter& content, int64_t step);
  // The newest complete checkpoint: the one `latest` names, or, when `latest` is missing or
  // names a file that does not open (torn, or failing its checksums), the highest
  // step_N.safetensors that opens. `unloadable` collects the errors of the files passed over.
  std::optional<std::string> latest(std::vector<std::string>* unloadable = nullptr) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  int keep_;
};

}  // namespace kd
