// safetensors: the header length, the JSON header and the tensor table it describes
// (engine/safetensors.h), then every tensor read and converted, so that the offsets the table
// promises are really followed.
#include "engine/safetensors.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kd::fuzz::ScratchFile file("model.safetensors");
  const std::string& path = file.write(data, size);
  return kd::fuzz::expect_only_kd_errors([&] {
    const kd::SafetensorsFile f = kd::SafetensorsFile::open(path);
    for (const std::string& name : f.names()) {
      f.tensor(name);
      f.tensor_as(name, f.shape_of(name), kd::DType::f64);
    }
  });
}
