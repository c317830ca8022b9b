// What every fuzz target shares: a scratch file for the parsers that read a path, and the rule
// that a parser may refuse bad bytes only with a kd::Error (DecodeError is one). Any other
// exception escapes LLVMFuzzerTestOneInput and aborts, so libFuzzer (or the replay) reports it,
// as it reports crashes, hangs and sanitizer findings.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "kernels/check.h"

namespace kd::fuzz {

// A file of this process that each input is written to, for parsers that read a path; in
// /dev/shm when there is one (no disk traffic per execution). Removed when the process ends.
class ScratchFile {
 public:
  explicit ScratchFile(const std::string& name)
      : path_(std::string(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : P_tmpdir) + "/kd_fuzz_" +
              std::to_string(getpid()) + "_" + name) {}
  ~ScratchFile() { std::remove(path_.c_str()); }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  // Replaces the file's contents; aborts when it cannot (a full disk is no finding to hide).
  const std::string& write(const uint8_t* data, size_t size) const {
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    const bool ok = f && std::fwrite(data, 1, size, f) == size;
    if (!(f && std::fclose(f) == 0 && ok)) {
      std::perror(path_.c_str());
      std::abort();
    }
    return path_;
  }

 private:
  std::string path_;
};

// Runs the parser; kd::Error means the input was refused as it should be.
template <typename Parse>
int expect_only_kd_errors(Parse&& parse) {
  try {
    parse();
  } catch (const kd::Error&) {
  }
  return 0;
}

}  // namespace kd::fuzz
