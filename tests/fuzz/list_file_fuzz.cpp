// List files (data/source.h, open_list_file): `relative/path label` lines with comments, blank
// lines and paths holding spaces; then every entry's label and where-string. The listed images
// are not opened: image decoding has its own target.
#include "data/source.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kd::fuzz::ScratchFile file("list.txt");
  const std::string& path = file.write(data, size);
  return kd::fuzz::expect_only_kd_errors([&] {
    const kd::SourcePtr source = kd::open_list_file(path);
    for (int64_t i = 0; i < source->size(); ++i) {
      if (source->label(i) < 0 || source->label(i) >= source->num_classes()) __builtin_trap();
      source->where(i);
    }
    source->describe();
  });
}
