// NumPy .npz archives (engine/npz.h): the ZIP end records, the central directory, local headers,
// ZIP64 fields, each member's .npy header, and then every array inflated, CRC-checked and
// converted (Fortran-order ones transposed).
#include "engine/npz.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kd::fuzz::ScratchFile file("weights.npz");
  const std::string& path = file.write(data, size);
  return kd::fuzz::expect_only_kd_errors([&] {
    const kd::NpzFile f = kd::NpzFile::open(path);
    for (const std::string& name : f.names()) f.tensor_as(name, f.shape_of(name), kd::DType::f32);
  });
}
