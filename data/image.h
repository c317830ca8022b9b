// A decoded image as the loader hands it on: uint8, HWC, always three channels (RGB), any size.
// Grayscale sources are broadcast to three equal channels and alpha is dropped (not composited),
// so everything downstream (staging, the augment kernel) sees one pixel format.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/check.h"

namespace kd {

struct Image {
  static constexpr int channels = 3;
  int height = 0;
  int width = 0;
  int label = -1;               // class index; -1 when the source has no label for it
  std::vector<uint8_t> pixels;  // height * width * 3 bytes, row-major, RGB interleaved

  bool empty() const { return pixels.empty(); }
  size_t bytes() const { return pixels.size(); }
  // The three channel values of pixel (y, x).
  const uint8_t* at(int y, int x) const { return pixels.data() + (size_t(y) * width + x) * channels; }
  uint8_t* at(int y, int x) { return pixels.data() + (size_t(y) * width + x) * channels; }
};

// An image that cannot be read or decoded (missing file, truncated or corrupt data, unknown
// format). It is a kd::Error, so a caller that does not care sees an ordinary error, but it is a
// distinct type so the loader can catch exactly this, report the image and skip it. Every other
// error (a bad index, a broken source) stays fatal.
class DecodeError : public Error {
 public:
  DecodeError(const std::string& origin, const std::string& reason)
      : Error(origin + ": " + reason), origin_(origin), reason_(reason) {}
  const std::string& origin() const { return origin_; }  // where the image came from (a path)
  const std::string& reason() const { return reason_; }  // what was wrong with it

 private:
  std::string origin_;
  std::string reason_;
};

// Which library decodes JPEGs (data.jpeg_decoder): stb_image (the default; also every PNG and
// BMP) or libjpeg-turbo (data/jpeg.h: the same pixels within 3 levels of 255, faster). A run's
// pixels, and so exact resume, depend on the choice; the run's config records it.
enum class JpegDecoder : uint8_t { stb, turbo };
// "stb" or "turbo" (an error naming both, or saying that kd was built without libjpeg-turbo).
JpegDecoder parse_jpeg_decoder(const std::string& name);
const char* jpeg_decoder_name(JpegDecoder d);

// Decodes an encoded image (JPEG, PNG or BMP; stb_image is built for these alone) to three channels.
// Throws DecodeError naming `origin` when the bytes are not a readable image.
Image decode_image(const uint8_t* data, size_t size, const std::string& origin,
                   JpegDecoder jpeg = JpegDecoder::stb);

// Reads a whole file and decodes it; a missing or unreadable file is a DecodeError as well.
Image read_image_file(const std::string& path, JpegDecoder jpeg = JpegDecoder::stb);

// True for the file names ImageFolder picks up: .jpg .jpeg .png .bmp, any letter case.
bool has_image_extension(const std::string& path);

}  // namespace kd
