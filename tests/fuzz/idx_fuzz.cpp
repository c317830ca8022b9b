// IDX images + labels (data/idx_source.cpp), raw or gzipped. The input holds both files: a
// 4-byte little-endian length, that many bytes of the images file, the rest is the labels file.
// Every image is then loaded.
#include <algorithm>
#include <cstring>

#include "data/source.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kd::fuzz::ScratchFile images_file("images-idx3-ubyte"), labels_file("labels-idx1-ubyte");
  uint32_t images_bytes = 0;
  if (size >= 4) std::memcpy(&images_bytes, data, 4);
  const size_t body = size >= 4 ? size - 4 : 0;
  const size_t split = std::min<size_t>(images_bytes, body);
  const std::string& images = images_file.write(data + size - body, split);
  const std::string& labels = labels_file.write(data + size - body + split, body - split);
  return kd::fuzz::expect_only_kd_errors([&] {
    const kd::SourcePtr source = kd::open_idx(images, labels);
    for (int64_t i = 0; i < source->size(); ++i) {
      const kd::Image image = source->load(i);
      if (image.pixels.size() != size_t(image.height) * image.width * kd::Image::channels) __builtin_trap();
    }
  });
}
