// Runs a fuzz target once over each file of the given folders (or files), without libFuzzer: how
// CI, built with gcc, replays the committed corpora and regressions deterministically.
//   <target>_replay tests/fuzz/corpus/<target> tests/fuzz/regressions/<target>
// A finding aborts (sanitizers, an escaping exception) after the file's name has been printed.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  std::vector<fs::path> files;
  for (int a = 1; a < argc; ++a) {
    const fs::path root = argv[a];
    if (fs::is_regular_file(root)) {
      files.push_back(root);
    } else if (fs::is_directory(root)) {
      for (const auto& entry : fs::recursive_directory_iterator(root))
        if (entry.is_regular_file() && entry.path().filename().string()[0] != '.') files.push_back(entry.path());
    } else {  // a target without regressions has no folder for them
      std::printf("replay: %s does not exist, skipped\n", argv[a]);
    }
  }
  if (files.empty()) {  // a corpus that went missing must not pass silently
    std::fprintf(stderr, "replay: no inputs in the given paths\n");
    return 2;
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) {
    std::printf("replay %s\n", file.c_str());
    std::fflush(stdout);
    std::ifstream in(file, std::ios::binary);
    const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in), {}};
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  }
  std::printf("replayed %zu inputs\n", files.size());
  return 0;
}
