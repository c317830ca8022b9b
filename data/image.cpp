// Decoding with stb_image (its implementation is compiled in data/stb_image.cpp). stb_image keeps
// its failure reason in a thread-local variable (v2.27 on), and we never touch its global
// settings (vertical flip etc.), so decoding from several loader threads at once is safe.
#include "data/image.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>

#include <stb/stb_image.h>

#include "data/jpeg_header.h"
#if KD_HAVE_JPEG
#include "data/jpeg.h"
#endif

namespace kd {

const char* decode_error_kind_name(DecodeError::Kind kind) {
  switch (kind) {
    case DecodeError::Kind::unreadable_file: return "unreadable file";
    case DecodeError::Kind::empty: return "empty file";
    case DecodeError::Kind::not_an_image: return "not an image";
    case DecodeError::Kind::corrupt: return "corrupt or truncated";
    case DecodeError::Kind::unsupported: return "unsupported format";
    case DecodeError::Kind::too_large: return "too large";
  }
  return "?";
}

void check_image_pixels(int64_t width, int64_t height, int64_t max_pixels, const std::string& origin) {
  if (width * height > max_pixels)
    throw DecodeError(origin,
                      "image of " + std::to_string(width) + "x" + std::to_string(height) + " pixels is over the bound of " +
                          std::to_string(max_pixels) + " pixels (data.max_image_mpixels); refused unread",
                      DecodeError::Kind::too_large);
}

namespace {

struct StbFree {
  void operator()(stbi_uc* p) const { stbi_image_free(p); }
};

// PNG chunks follow each other with nothing between (length, type, data, CRC), as stb reads them
// up to IEND. Two things are checked before stb_image sees the file:
// - IHDR's size against the bound (stb refuses a header it deems too large with a reason that
//   its other format probes then overwrite, so kd says it);
// - no chunk may claim more than the rest of the file: stb grows its buffer for an IDAT chunk to
//   the length claimed before reading, so 50 bytes could ask for 2 GiB (found by
//   tests/fuzz/image_fuzz.cpp).
void check_png_chunks(const uint8_t* p, size_t n, int64_t max_pixels, const std::string& origin) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (n < 8 || std::memcmp(p, kSignature, 8) != 0) return;
  auto be32 = [](const uint8_t* q) { return uint64_t(q[0]) << 24 | uint64_t(q[1]) << 16 | uint64_t(q[2]) << 8 | q[3]; };
  for (size_t pos = 8; pos + 8 <= n;) {
    const uint64_t length = be32(p + pos);
    const std::string type(reinterpret_cast<const char*>(p + pos + 4), 4);
    if (type == "IHDR" && pos + 16 <= n)
      check_image_pixels(int64_t(be32(p + pos + 8)), int64_t(be32(p + pos + 12)), max_pixels, origin);
    if (length + 12 > n - pos)
      throw DecodeError(origin,
                        "truncated PNG: chunk '" + type + "' claims " + std::to_string(length) + " bytes, the file has " +
                            std::to_string(n - pos - 8) + " after its header",
                        DecodeError::Kind::corrupt);
    if (type == "IEND") break;
    pos += 12 + size_t(length);
  }
}

}  // namespace

JpegDecoder parse_jpeg_decoder(const std::string& name) {
  if (name == "stb") return JpegDecoder::stb;
  if (name == "turbo") {
    KD_CHECK(KD_HAVE_JPEG, "jpeg decoder 'turbo': kd was built without libjpeg-turbo (install libjpeg62-turbo-dev "
             "and rebuild), use 'stb'");
    return JpegDecoder::turbo;
  }
  if (name == "nvjpeg") {
    KD_CHECK(KD_HAVE_NVJPEG, "jpeg decoder 'nvjpeg': kd was built without nvJPEG (tools/install_deps.sh unpacks it into "
             ".deps/nvjpeg where CUDA is present; rebuild), use 'turbo' or 'stb'");
    return JpegDecoder::nvjpeg;
  }
  KD_FAIL("unknown jpeg decoder '", name, "' (stb, turbo or nvjpeg)");
}

const char* jpeg_decoder_name(JpegDecoder d) {
  return d == JpegDecoder::turbo ? "turbo" : d == JpegDecoder::nvjpeg ? "nvjpeg" : "stb";
}

namespace {
// A JPEG for the GPU: the header's size, checked as a decode would check it, and the bytes.
Image defer_jpeg(const uint8_t* data, size_t size, const std::string& origin, int64_t max_pixels) {
  JpegFrame frame;
  if (!read_jpeg_frame(data, size, &frame))
    throw DecodeError(origin, "not a readable JPEG (no frame header)", DecodeError::Kind::corrupt);
  check_image_pixels(int64_t(frame.width), int64_t(frame.height), max_pixels, origin);
  if (frame.components == 4)
    throw DecodeError(origin, "CMYK JPEG; convert it to RGB", DecodeError::Kind::unsupported);
  if (frame.components != 1 && frame.components != 3)
    throw DecodeError(origin, "JPEG with " + std::to_string(frame.components) + " components",
                      DecodeError::Kind::unsupported);
  if (frame.lossless) throw DecodeError(origin, "lossless JPEG (not supported)", DecodeError::Kind::unsupported);
  Image image;
  image.height = frame.height, image.width = frame.width;
  image.encoded.assign(data, data + size);
  image.origin = origin;
  return image;
}
}  // namespace

Image decode_image(const uint8_t* data, size_t size, const std::string& origin, JpegDecoder jpeg,
                   const ViewNeedFn* need, int64_t max_pixels) {
  if (jpeg == JpegDecoder::nvjpeg && looks_like_jpeg(data, size))
    return defer_jpeg(data, size, origin, max_pixels);
#if KD_HAVE_JPEG
  if (jpeg == JpegDecoder::turbo && looks_like_jpeg(data, size))
    return need && *need ? decode_jpeg_region(data, size, origin, *need, max_pixels)
                         : decode_jpeg(data, size, origin, 8, max_pixels);
#else
  (void)need;
  KD_CHECK(jpeg == JpegDecoder::stb, "decode_image: kd was built without libjpeg-turbo");
#endif
  if (size == 0) throw DecodeError(origin, "empty file", DecodeError::Kind::empty);
  if (size > size_t(std::numeric_limits<int>::max()))
    throw DecodeError(origin, "file of " + std::to_string(size) + " bytes is too large to decode",
                      DecodeError::Kind::too_large);
  const int len = int(size);

  check_png_chunks(data, size, max_pixels, origin);
  int width = 0, height = 0, file_channels = 0;
  if (!stbi_info_from_memory(data, len, &width, &height, &file_channels)) {
    const char* why = stbi_failure_reason();
    throw DecodeError(origin, std::string("not a readable image (") + (why ? why : "unknown format") + ")",
                      DecodeError::Kind::not_an_image);
  }
  check_image_pixels(width, height, max_pixels, origin);
  // stb_image reads past the end of a cut-off BMP as zeros and decodes all of it, so 200 bytes
  // could cost 16384 x 16384 pixels of time and memory (found by tests/fuzz/image_fuzz.cpp). BMP
  // pixels are stored uncompressed (stb reads no RLE BMPs), at least one bit each.
  if (size >= 2 && data[0] == 'B' && data[1] == 'M' && uint64_t(width) * uint64_t(height) / 8 > size)
    throw DecodeError(origin, "truncated BMP: " + std::to_string(width) + "x" + std::to_string(height) +
                                  " pixels need more than the file's " + std::to_string(size) + " bytes",
                      DecodeError::Kind::corrupt);

  // Asking for 3 components makes stb broadcast gray to RGB and drop alpha.
  std::unique_ptr<stbi_uc, StbFree> decoded(
      stbi_load_from_memory(data, len, &width, &height, &file_channels, Image::channels));
  if (!decoded) {
    const char* why = stbi_failure_reason();
    throw DecodeError(origin, std::string("corrupt image (") + (why ? why : "decoder failed") + ")");
  }
  Image image;
  image.width = width;
  image.height = height;
  const size_t bytes = size_t(width) * size_t(height) * Image::channels;
  image.pixels.assign(decoded.get(), decoded.get() + bytes);
  return image;
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw DecodeError(path, std::string("cannot open: ") + std::strerror(errno), DecodeError::Kind::unreadable_file);
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  size_t got = 0;
  while ((got = std::fread(chunk, 1, sizeof(chunk), file.get())) > 0) bytes.insert(bytes.end(), chunk, chunk + got);
  if (std::ferror(file.get())) throw DecodeError(path, "read error", DecodeError::Kind::unreadable_file);
  return bytes;
}

Image read_image_file(const std::string& path, JpegDecoder jpeg, const ViewNeedFn* need, int64_t max_pixels) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return decode_image(bytes.data(), bytes.size(), path, jpeg, need, max_pixels);
}

bool has_image_extension(const std::string& path) {
  const size_t dot = path.find_last_of('.');
  const size_t slash = path.find_last_of('/');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return false;
  std::string ext = path.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "bmp";
}

}  // namespace kd
