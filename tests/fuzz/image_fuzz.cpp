// Encoded images (data/image.h): JPEG, PNG, BMP and whatever else stb_image sniffs, through
// decode_image with stb_image and, when kd has libjpeg-turbo, with it as well (at a DCT scale
// that the input's size picks, so every scale gets inputs).
#include "data/image.h"
#include "tests/fuzz/fuzz_target.h"
#if KD_HAVE_JPEG
#include "data/jpeg.h"
#endif

namespace {
void check_shape(const kd::Image& image) {
  if (image.height <= 0 || image.width <= 0 ||
      image.pixels.size() != size_t(image.height) * image.width * kd::Image::channels)
    __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kd::fuzz::expect_only_kd_errors([&] { check_shape(kd::decode_image(data, size, "fuzz input")); });
#if KD_HAVE_JPEG
  kd::fuzz::expect_only_kd_errors(
      [&] { check_shape(kd::decode_image(data, size, "fuzz input", kd::JpegDecoder::turbo)); });
  kd::fuzz::expect_only_kd_errors([&] {
    kd::read_jpeg_info(data, size, "fuzz input");
    check_shape(kd::decode_jpeg(data, size, "fuzz input", 1 << (size % 3)));  // 1/8, 2/8, 4/8
  });
#endif
  return 0;
}
