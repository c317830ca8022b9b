// Bad data at scale: an image folder where about 7% of the files are broken in every way a
// scraped folder is (truncated, empty, not an image, CMYK, a 20000x20000 header, larger than
// data.max_image_mpixels), beside unusual but valid ones (grey JPEG, 16-bit PNG). The run
// completes, and the broken ones are skipped, reported and counted by kind in summary.json,
// each refused before its pixels are allocated where its header says it is too large.
#include <gtest/gtest.h>

#include <zlib.h>

#include <fstream>
#include <random>

#include "tests/support/testing.h"
#include "tests/tools/tool_fixtures.h"
#if KD_HAVE_JPEG
#include "tests/data/jpeg_fixtures.h"

namespace kd {
namespace {

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

void put_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(v >> s));
}

// A PNG chunk: length, type, data, CRC-32 over type and data (zlib's crc32 is PNG's).
void png_chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
  put_be32(out, uint32_t(data.size()));
  std::vector<uint8_t> body(type, type + 4);
  body.insert(body.end(), data.begin(), data.end());
  out.insert(out.end(), body.begin(), body.end());
  put_be32(out, uint32_t(crc32(0, body.data(), uInt(body.size()))));
}

// An RGB PNG of w x h at `bits` per channel (8 or 16), pixels from `value`; with no_data only the
// header (a file whose IHDR promises more than the decoder should ever allocate).
std::vector<uint8_t> make_png(uint32_t w, uint32_t h, int bits, bool no_data = false) {
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'}, ihdr;
  put_be32(ihdr, w), put_be32(ihdr, h);
  ihdr.insert(ihdr.end(), {uint8_t(bits), 2, 0, 0, 0});  // RGB, deflate, no filter, no interlace
  png_chunk(png, "IHDR", ihdr);
  if (!no_data) {
    std::vector<uint8_t> raw;
    for (uint32_t y = 0; y < h; ++y) {
      raw.push_back(0);  // filter: none
      for (uint32_t x = 0; x < w * 3; ++x)
        for (int b = 0; b < bits / 8; ++b) raw.push_back(uint8_t((x * 7 + y * 13 + b) & 0xFF));
    }
    uLongf size = compressBound(uLong(raw.size()));
    std::vector<uint8_t> z(size);
    compress(z.data(), &size, raw.data(), uLong(raw.size()));
    z.resize(size);
    png_chunk(png, "IDAT", z);
  }
  png_chunk(png, "IEND", {});
  return png;
}

// A valid JPEG whose frame header is rewritten to claim width x height.
std::vector<uint8_t> with_jpeg_size(std::vector<uint8_t> jpeg, int width, int height) {
  for (size_t i = 2; i + 9 < jpeg.size(); ++i)
    if (jpeg[i] == 0xFF && (jpeg[i + 1] == 0xC0 || jpeg[i + 1] == 0xC2)) {
      jpeg[i + 5] = uint8_t(height >> 8), jpeg[i + 6] = uint8_t(height);
      jpeg[i + 7] = uint8_t(width >> 8), jpeg[i + 8] = uint8_t(width);
      return jpeg;
    }
  ADD_FAILURE() << "no frame header";
  return jpeg;
}

TEST(BadData, TheRunCompletesAndCountsEveryBrokenFileByKind) {
  test::TempDir dir;
  test::write_stripes_dataset(dir, 48, 4);  // 192 good 16x16 PNGs in 4 classes
  const std::string cls = dir.str() + "/train/horizontal/";
  const std::vector<uint8_t> good_jpeg = encode(photo_like(16, 16, 3, 1), 16, 16, 3, 90, false, false);
  // Valid but unusual: decoded, not counted.
  write_bytes(cls + "grey.jpg", encode(photo_like(16, 16, 1, 2), 16, 16, 1, 90, true, false));
  write_bytes(cls + "deep.png", make_png(16, 16, 16));
  // Broken, one of each kind (14 files, ~7%):
  write_bytes(cls + "truncated.jpg", std::vector<uint8_t>(good_jpeg.begin(), good_jpeg.begin() + good_jpeg.size() / 2));
  write_bytes(cls + "empty.jpg", {});
  write_bytes(cls + "notes.png", {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e', '\n'});
  write_bytes(cls + "cmyk.jpg", encode(std::vector<uint8_t>(16 * 16 * 4, 90), 16, 16, 4, 90, false, false));
  write_bytes(cls + "huge.png", make_png(20000, 20000, 8, true));
  write_bytes(cls + "huge.jpg", with_jpeg_size(good_jpeg, 20000, 20000));
  write_bytes(cls + "big.png", make_png(64, 64, 8));  // valid, but over the bound set below
  for (int i = 0; i < 7; ++i) write_bytes(cls + "cut" + std::to_string(i) + ".jpg",
                                          std::vector<uint8_t>(good_jpeg.begin(), good_jpeg.begin() + 40 + 30 * i));
  const auto r = test::run_kd(test::concat(
      {"train"}, test::concat(test::tiny_run(dir, "bad", 14),
                              {"model.arch=resnetv2(depths=1, width=8, stem=conv3)", "data.jpeg_decoder=turbo",
                               "data.max_image_mpixels=0.002"})));  // 2,097 pixels: 16x16 passes, 64x64 not
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string summary = test::read_text(dir.str() + "/runs/bad/summary.json");
  for (const char* want : {"\"bad_images\": 14", "\"corrupt or truncated\": 8", "\"empty file\": 1",
                           "\"not an image\": 1", "\"unsupported format\": 1", "\"too large\": 3"})
    EXPECT_NE(summary.find(want), std::string::npos) << want << " in " << summary;
  EXPECT_NE(r.err.find("skipped 14 unreadable image(s), each replaced by the next readable one"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("huge.png: image of 20000x20000 pixels is over the bound of 2097 pixels "
                       "(data.max_image_mpixels); refused unread"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("cmyk.jpg: CMYK JPEG"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("grey.jpg"), std::string::npos) << "a grey JPEG is a good image";
  EXPECT_EQ(r.err.find("deep.png"), std::string::npos) << "a 16-bit PNG is a good image";
}

}  // namespace
}  // namespace kd
#endif
