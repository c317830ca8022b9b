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

#if KD_HAVE_JPEG
#include "data/jpeg.h"
#endif

namespace kd {

namespace {

// Decoding a huge image would take gigabytes; anything above this is treated as unreadable.
constexpr int64_t kMaxPixels = int64_t(1) << 28;  // 268 M pixels, 16384 x 16384

struct StbFree {
  void operator()(stbi_uc* p) const { stbi_image_free(p); }
};

// stb_image grows its buffer for a PNG's IDAT chunk to the length the chunk claims before it
// reads the data, so 50 bytes could ask for 2 GiB (found by tests/fuzz/image_fuzz.cpp). PNG
// chunks follow each other with nothing between (length, type, data, CRC), as stb reads them up to
// IEND: a chunk claiming more than the rest of the file is refused first. Returns the reason or "".
std::string cut_off_png_chunk(const uint8_t* p, size_t n) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (n < 8 || std::memcmp(p, kSignature, 8) != 0) return "";
  for (size_t pos = 8; pos + 8 <= n;) {
    const uint64_t length = uint64_t(p[pos]) << 24 | uint64_t(p[pos + 1]) << 16 | uint64_t(p[pos + 2]) << 8 | p[pos + 3];
    const std::string type(reinterpret_cast<const char*>(p + pos + 4), 4);
    if (length + 12 > n - pos)
      return "truncated PNG: chunk '" + type + "' claims " + std::to_string(length) + " bytes, the file has " +
             std::to_string(n - pos - 8) + " after its header";
    if (type == "IEND") break;
    pos += 12 + size_t(length);
  }
  return "";
}

}  // namespace

JpegDecoder parse_jpeg_decoder(const std::string& name) {
  if (name == "stb") return JpegDecoder::stb;
  if (name == "turbo") {
    KD_CHECK(KD_HAVE_JPEG, "jpeg decoder 'turbo': kd was built without libjpeg-turbo (install libjpeg62-turbo-dev "
             "and rebuild), use 'stb'");
    return JpegDecoder::turbo;
  }
  KD_FAIL("unknown jpeg decoder '", name, "' (stb or turbo)");
}

const char* jpeg_decoder_name(JpegDecoder d) { return d == JpegDecoder::turbo ? "turbo" : "stb"; }

Image decode_image(const uint8_t* data, size_t size, const std::string& origin, JpegDecoder jpeg) {
#if KD_HAVE_JPEG
  if (jpeg == JpegDecoder::turbo && looks_like_jpeg(data, size)) return decode_jpeg(data, size, origin);
#else
  KD_CHECK(jpeg == JpegDecoder::stb, "decode_image: kd was built without libjpeg-turbo");
#endif
  if (size == 0) throw DecodeError(origin, "empty file");
  if (size > size_t(std::numeric_limits<int>::max()))
    throw DecodeError(origin, "file of " + std::to_string(size) + " bytes is too large to decode");
  const int len = int(size);

  const std::string cut_off = cut_off_png_chunk(data, size);
  if (!cut_off.empty()) throw DecodeError(origin, cut_off);
  int width = 0, height = 0, file_channels = 0;
  if (!stbi_info_from_memory(data, len, &width, &height, &file_channels)) {
    const char* why = stbi_failure_reason();
    throw DecodeError(origin, std::string("not a readable image (") + (why ? why : "unknown format") + ")");
  }
  if (int64_t(width) * height > kMaxPixels)
    throw DecodeError(origin, "image of " + std::to_string(width) + "x" + std::to_string(height) +
                                  " pixels is larger than the decoder accepts");
  // stb_image reads past the end of a cut-off BMP as zeros and decodes all of it, so 200 bytes
  // could cost 16384 x 16384 pixels of time and memory (found by tests/fuzz/image_fuzz.cpp). BMP
  // pixels are stored uncompressed (stb reads no RLE BMPs), at least one bit each.
  if (size >= 2 && data[0] == 'B' && data[1] == 'M' && uint64_t(width) * uint64_t(height) / 8 > size)
    throw DecodeError(origin, "truncated BMP: " + std::to_string(width) + "x" + std::to_string(height) +
                                  " pixels need more than the file's " + std::to_string(size) + " bytes");

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

Image read_image_file(const std::string& path, JpegDecoder jpeg) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw DecodeError(path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  size_t got = 0;
  while ((got = std::fread(chunk, 1, sizeof(chunk), file.get())) > 0) bytes.insert(bytes.end(), chunk, chunk + got);
  if (std::ferror(file.get())) throw DecodeError(path, "read error");
  return decode_image(bytes.data(), bytes.size(), path, jpeg);
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
