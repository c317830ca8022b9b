// A decoded image as the loader hands it on: uint8, HWC, always three channels (RGB), any size.
// Grayscale sources are broadcast to three equal channels and alpha is dropped (not composited),
// so everything downstream (staging, the augment kernel) sees one pixel format.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
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
  // Where `pixels` sit in the image the file holds, for a decoder that read only part of it or
  // at libjpeg's M/8 scale (ViewNeed below): full-size coordinate u (continuous, pixel edges at
  // integers) is u * scale_num / 8 - offset in `pixels`. A whole, full-size decode has
  // full_* == 0 (meaning: the same as height/width), offsets 0 and scale 8.
  int full_height = 0, full_width = 0;
  int offset_y = 0, offset_x = 0;
  int scale_num = 8;
  // A JPEG left for the GPU to decode (data.jpeg_decoder=nvjpeg): the file's bytes, with
  // height and width from its header and `pixels` empty; `origin` names it in messages.
  std::vector<uint8_t> encoded;
  std::string origin;
  bool on_device() const { return !encoded.empty(); }

  bool empty() const { return pixels.empty(); }
  size_t bytes() const { return pixels.size(); }
  // The three channel values of pixel (y, x).
  const uint8_t* at(int y, int x) const { return pixels.data() + (size_t(y) * width + x) * channels; }
  uint8_t* at(int y, int x) { return pixels.data() + (size_t(y) * width + x) * channels; }
  // The size of the image in the file, which views are drawn on.
  int file_height() const { return full_height > 0 ? full_height : height; }
  int file_width() const { return full_width > 0 ? full_width : width; }
};

// What the views of one image will read of it, known before it is decoded (from the header's
// size): the union of their crop boxes in full-size pixels, [y0, y0 + h) x [x0, x0 + w), and the
// largest output they are rendered at. A JPEG decoder may then decode only that part (plus the
// bilinear filter's margin), at the smallest M/8 scale that keeps out_h x out_w pixels across it.
struct ViewNeed {
  float y0 = 0, x0 = 0, h = 0, w = 0;
  int out_h = 0, out_w = 0;
};
// Asked once per decode with the image's full size.
using ViewNeedFn = std::function<ViewNeed(int height, int width)>;

// An image that cannot be read or decoded (missing file, truncated or corrupt data, unknown
// format). It is a kd::Error, so a caller that does not care sees an ordinary error, but it is a
// distinct type so the loader can catch exactly this, report the image and skip it. Every other
// error (a bad index, a broken source) stays fatal.
class DecodeError : public Error {
 public:
  // What is wrong, for the run's count of skipped images by kind.
  enum class Kind : uint8_t { unreadable_file, empty, not_an_image, corrupt, unsupported, too_large };
  DecodeError(const std::string& origin, const std::string& reason, Kind kind = Kind::corrupt)
      : Error(origin + ": " + reason), origin_(origin), reason_(reason), kind_(kind) {}
  const std::string& origin() const { return origin_; }  // where the image came from (a path)
  const std::string& reason() const { return reason_; }  // what was wrong with it
  Kind kind() const { return kind_; }

 private:
  std::string origin_;
  std::string reason_;
  Kind kind_;
};
// "unreadable file", "empty file", "not an image", "corrupt or truncated", "unsupported format"
// (CMYK, lossless JPEG), "too large" (refused from the header, before any pixel is allocated).
const char* decode_error_kind_name(DecodeError::Kind kind);

// nvjpeg: JPEGs are decoded later, on the GPU (kernels/jpeg_device.h; the loader only reads the
// header), so it needs run.device=cuda and a build with nvJPEG.
enum class JpegDecoder : uint8_t { stb, turbo, nvjpeg };
// "stb", "turbo" or "nvjpeg" (an error naming them, or saying what kd was built without).
JpegDecoder parse_jpeg_decoder(const std::string& name);
const char* jpeg_decoder_name(JpegDecoder d);

// The most pixels an image may have (data.max_image_mpixels): a larger header is refused before
// anything is allocated, so one image never costs more than 3 bytes times this.
constexpr int64_t kDefaultMaxImagePixels = int64_t(64) << 20;  // 64 Mpixel: 192 MiB as RGB
// How a source decodes its images: the JPEG decoder and the pixel bound. Converts from a bare
// JpegDecoder (the default bound).
struct DecodeSettings {
  JpegDecoder jpeg = JpegDecoder::stb;
  int64_t max_pixels = kDefaultMaxImagePixels;
  DecodeSettings() = default;
  DecodeSettings(JpegDecoder j, int64_t max = kDefaultMaxImagePixels) : jpeg(j), max_pixels(max) {}  // NOLINT
};
// Throws a DecodeError (too large) naming origin when width x height exceeds max_pixels.
void check_image_pixels(int64_t width, int64_t height, int64_t max_pixels, const std::string& origin);


// Decodes an encoded image (JPEG, PNG or BMP; stb_image is built for these alone) to three channels.
// Throws DecodeError naming `origin` when the bytes are not a readable image. With `need` and
// libjpeg-turbo, a JPEG is decoded only where its views read it (Image's placement fields say
// where); stb_image and the other formats always decode the whole image. With nvjpeg a JPEG
// whose header reads is returned encoded (Image::on_device), anything else decoded by stb_image.
Image decode_image(const uint8_t* data, size_t size, const std::string& origin,
                   JpegDecoder jpeg = JpegDecoder::stb, const ViewNeedFn* need = nullptr,
                   int64_t max_pixels = kDefaultMaxImagePixels);

// Reads a whole file and decodes it; a missing or unreadable file is a DecodeError as well.
Image read_image_file(const std::string& path, JpegDecoder jpeg = JpegDecoder::stb,
                      const ViewNeedFn* need = nullptr, int64_t max_pixels = kDefaultMaxImagePixels);
// The whole file's bytes; DecodeError when it cannot be opened or read.
std::vector<uint8_t> read_file_bytes(const std::string& path);

// True for the file names ImageFolder picks up: .jpg .jpeg .png .bmp, any letter case.
bool has_image_extension(const std::string& path);

}  // namespace kd
