// The frame-header reader the GPU decode path relies on (data/jpeg_header.h) against libjpeg's
// own header parse on the same files (baseline and progressive, colour and grey, odd sizes),
// and on broken input: every prefix of a file, markers with lengths past the end, a scan
// before the frame, random bytes. It never reads outside the buffer (the sanitizer build
// checks that) and says no where there is no frame header. And what data.jpeg_decoder=nvjpeg
// hands on: encoded JPEGs with the header's size, everything else decoded.
#include "data/jpeg_header.h"

#include <gtest/gtest.h>

#include <random>

#include "data/image.h"

#if KD_HAVE_JPEG
#include "data/jpeg.h"
#include "tests/data/jpeg_fixtures.h"

namespace kd {
namespace {

std::vector<std::vector<uint8_t>> encoded_files() {
  std::vector<std::vector<uint8_t>> files;
  uint64_t seed = 1;
  for (int channels : {3, 1})
    for (bool progressive : {false, true})
      for (auto [w, h] : {std::pair<int, int>{1, 1}, {301, 203}, {640, 17}}) {
        files.push_back(encode(photo_like(w, h, channels, seed++), w, h, channels, 85, progressive, false));
      }
  return files;
}

TEST(JpegHeader, AgreesWithLibjpegOnEveryFile) {
  for (const auto& f : encoded_files()) {
    JpegFrame frame;
    ASSERT_TRUE(read_jpeg_frame(f.data(), f.size(), &frame));
    const JpegInfo info = read_jpeg_info(f.data(), f.size(), "file");
    EXPECT_EQ(frame.width, info.width);
    EXPECT_EQ(frame.height, info.height);
    EXPECT_EQ(frame.components, info.components);
    EXPECT_FALSE(frame.lossless);
  }
  // jpeg_simple_progression makes SOF2 files.
  JpegFrame frame;
  const std::vector<uint8_t> progressive = encode(photo_like(40, 30, 3, 9), 40, 30, 3, 85, true, false);
  ASSERT_TRUE(read_jpeg_frame(progressive.data(), progressive.size(), &frame));
  EXPECT_TRUE(frame.progressive);
}

TEST(JpegHeader, SaysNoWhereThereIsNoFrameHeader) {
  const std::vector<uint8_t> f = encoded_files()[1];
  JpegFrame frame;
  // Every prefix that ends before the frame header's last byte is refused, every longer one read.
  size_t first_readable = 0;
  for (size_t n = 0; n <= f.size() && !first_readable; ++n)
    if (read_jpeg_frame(f.data(), n, &frame)) first_readable = n;
  ASSERT_GT(first_readable, 10u);
  for (size_t n = first_readable; n < first_readable + 64; ++n) EXPECT_TRUE(read_jpeg_frame(f.data(), n, &frame));
  // A segment length running past the end, a scan before the frame, no start of image.
  std::vector<uint8_t> bad = {0xFF, 0xD8, 0xFF, 0xE0, 0xFF, 0xF0, 0x00};
  EXPECT_FALSE(read_jpeg_frame(bad.data(), bad.size(), &frame));
  bad = {0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x08, 1, 2, 3, 4, 5, 6};
  EXPECT_FALSE(read_jpeg_frame(bad.data(), bad.size(), &frame));
  bad = {0x89, 'P', 'N', 'G', 0, 0, 0, 0};
  EXPECT_FALSE(read_jpeg_frame(bad.data(), bad.size(), &frame));
  // A frame of zero height (defined by a later DNL marker) or five components.
  bad = {0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 8, 0, 0, 0, 16, 1, 1, 0x11, 0};
  EXPECT_FALSE(read_jpeg_frame(bad.data(), bad.size(), &frame));
  bad = {0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 8, 0, 16, 0, 16, 5, 1, 0x11, 0};
  EXPECT_FALSE(read_jpeg_frame(bad.data(), bad.size(), &frame));
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<uint8_t> junk(size_t(rng() % 64));
    for (uint8_t& b : junk) b = uint8_t(rng() % 4 == 0 ? 0xFF : rng());
    if (junk.size() >= 2) junk[0] = 0xFF, junk[1] = 0xD8;
    read_jpeg_frame(junk.data(), junk.size(), &frame);  // any answer, no out-of-bounds read
  }
}

#if KD_HAVE_NVJPEG
TEST(JpegHeader, NvjpegLeavesJpegsEncodedWithTheHeadersSize) {
  const std::vector<uint8_t> f = encoded_files()[1];
  const Image im = decode_image(f.data(), f.size(), "a.jpg", JpegDecoder::nvjpeg);
  EXPECT_TRUE(im.on_device());
  EXPECT_EQ(im.width, 301);
  EXPECT_EQ(im.height, 203);
  EXPECT_TRUE(im.pixels.empty());
  EXPECT_EQ(im.encoded, f);
  EXPECT_EQ(im.origin, "a.jpg");
  EXPECT_EQ(parse_jpeg_decoder("nvjpeg"), JpegDecoder::nvjpeg);
  const std::vector<uint8_t> head(f.begin(), f.begin() + 8);
  EXPECT_THROW(decode_image(head.data(), head.size(), "cut.jpg", JpegDecoder::nvjpeg), DecodeError);
}
#endif

}  // namespace
}  // namespace kd
#endif
