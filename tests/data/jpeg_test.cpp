// The libjpeg-turbo path (data/jpeg.h) against stb_image on the same files: photo-like content
// (gradients, texture, edges, mild noise) encoded by libjpeg at several qualities, 4:2:0 and
// 4:4:4 chroma, baseline and progressive, colour and grey. Full-size decodes agree within JPEG's
// decoder tolerance (mean |difference| <= 2 levels of 255; the two libraries upsample chroma
// differently: measured 0.2 mean, 3 max; bound max <= 8); DCT-scaled decodes have
// libjpeg's sizes and look like the full decode box-downscaled (mean <= 4 levels); broken files
// are DecodeErrors that say what is wrong.
#include "data/jpeg.h"

#include <gtest/gtest.h>

#if KD_HAVE_JPEG
#include <cmath>
#include <cstdio>
#include <random>

#include <jpeglib.h>

#include "data/source.h"
#include "tests/data/data_fixtures.h"
#include "tests/data/jpeg_fixtures.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

TEST(Jpeg, FullSizeDecodeMatchesStbImage) {
  const int w = 301, h = 203;  // not multiples of the 8 or 16 pixel blocks
  for (int channels : {3, 1})
    for (int quality : {75, 90, 98})
      for (bool progressive : {false, true})
        for (bool c444 : {false, true}) {
          if (channels == 1 && c444) continue;
          const auto bytes = encode(photo_like(w, h, channels, 1), w, h, channels, quality, progressive, c444);
          ASSERT_TRUE(looks_like_jpeg(bytes.data(), bytes.size()));
          const JpegInfo info = read_jpeg_info(bytes.data(), bytes.size(), "x.jpg");
          EXPECT_EQ(info.width, w);
          EXPECT_EQ(info.height, h);
          EXPECT_EQ(info.components, channels);
          const Image turbo = decode_jpeg(bytes.data(), bytes.size(), "x.jpg");
          const Image stb = decode_image(bytes.data(), bytes.size(), "x.jpg");
          const Diff d = compare(turbo, stb);
          std::printf("[ jpeg ] %d ch, q%d, %s, %s: mean |turbo - stb| %.3f, max %d\n", channels, quality,
                      progressive ? "progressive" : "baseline", c444 ? "4:4:4" : "4:2:0", d.mean, d.max);
          EXPECT_LE(d.mean, 2.0);
          EXPECT_LE(d.max, 8);
        }
}

TEST(Jpeg, ScaledDecodesHaveLibjpegsSizesAndLookLikeTheFullDecodeShrunk) {
  const int w = 320, h = 240;
  const auto bytes = encode(photo_like(w, h, 3, 2), w, h, 3, 90, false, false);
  const Image full = decode_jpeg(bytes.data(), bytes.size(), "x.jpg");
  for (int m : {1, 2, 4, 8}) {
    const Image scaled = decode_jpeg(bytes.data(), bytes.size(), "x.jpg", m);
    ASSERT_EQ(scaled.width, dct_scaled_size(w, m));
    ASSERT_EQ(scaled.height, dct_scaled_size(h, m));
    // The full decode averaged over 8/m x 8/m boxes.
    const int f = 8 / m;
    Image shrunk;
    shrunk.width = w / f, shrunk.height = h / f;
    shrunk.pixels.resize(size_t(shrunk.width) * shrunk.height * 3);
    for (int y = 0; y < shrunk.height; ++y)
      for (int x = 0; x < shrunk.width; ++x)
        for (int c = 0; c < 3; ++c) {
          int sum = 0;
          for (int dy = 0; dy < f; ++dy)
            for (int dx = 0; dx < f; ++dx) sum += full.at(y * f + dy, x * f + dx)[c];
          shrunk.at(y, x)[c] = uint8_t((sum + f * f / 2) / (f * f));
        }
    const Diff d = compare(scaled, shrunk);
    std::printf("[ jpeg ] scale %d/8: %dx%d, mean |scaled - box-shrunk full| %.3f, max %d\n", m, scaled.width,
                scaled.height, d.mean, d.max);
    EXPECT_LE(d.mean, 4.0) << m;
  }
  EXPECT_EQ(dct_scaled_size(301, 1), 38);  // ceil(301 / 8)
  EXPECT_EQ(dct_scaled_size(1, 1), 1);
}

TEST(Jpeg, TheScaleIsTheSmallestThatStillCoversTheView) {
  // A 2000x1500 crop for a 224 view: 1/8 gives 250x187 (too short), 2/8 500x375.
  EXPECT_EQ(choose_dct_scale(2000, 1500, 224, 224), 2);
  EXPECT_EQ(choose_dct_scale(1792, 1792, 224, 224), 1);   // exactly 8x: 1/8 suffices
  EXPECT_EQ(choose_dct_scale(1791, 1792, 224, 224), 2);   // a pixel short
  EXPECT_EQ(choose_dct_scale(1500, 2000, 224, 160), 2);   // rotated aspect, non-square view
  EXPECT_EQ(choose_dct_scale(100, 100, 224, 224), 8);     // a tiny crop: the full size, upsampled later
  EXPECT_EQ(choose_dct_scale(1, 1, 1, 1), 8);
  EXPECT_EQ(choose_dct_scale(8, 8, 1, 1), 1);
  EXPECT_EQ(choose_dct_scale(600, 450, 224, 224), 4);     // 3/8 gives 225x168.75: too short
  EXPECT_EQ(choose_dct_scale(800, 800, 224, 224), 4);     // 3/8 would do, but only 1, 2, 4, 8 are fast
  EXPECT_EQ(choose_dct_scale(4000, 4000, 224, 224), 1);
  EXPECT_THROW(choose_dct_scale(0, 10, 224, 224), Error);
  EXPECT_THROW(choose_dct_scale(10, 10, 0, 224), Error);
}

TEST(Jpeg, BrokenFilesAreDecodeErrorsThatSayWhatIsWrong) {
  const int w = 96, h = 64;
  const auto good = encode(photo_like(w, h, 3, 3), w, h, 3, 90, false, false);
  auto reason = [](const std::vector<uint8_t>& bytes) {
    try {
      decode_jpeg(bytes.data(), bytes.size(), "bad.jpg");
    } catch (const DecodeError& e) {
      EXPECT_EQ(e.origin(), "bad.jpg");
      return e.reason();
    }
    return std::string("no error");
  };
  const std::vector<uint8_t> truncated(good.begin(), good.begin() + long(good.size() / 2));
  EXPECT_NE(reason(truncated).find("corrupt JPEG"), std::string::npos) << reason(truncated);
  std::vector<uint8_t> garbage = good;
  for (size_t i = 300; i < garbage.size() - 2; i += 7) garbage[i] ^= 0x5A;
  EXPECT_NE(reason(garbage), "no error");
  EXPECT_NE(reason({0xFF, 0xD8}).find("JPEG"), std::string::npos);
  EXPECT_EQ(reason({}), "empty file");
  // A header that claims 20000 x 20000: refused before the decoder allocates anything.
  std::vector<uint8_t> huge = good;
  for (size_t i = 0; i + 8 < huge.size(); ++i)
    if (huge[i] == 0xFF && huge[i + 1] == 0xC0) {  // SOF0: length(2) precision(1) height(2) width(2)
      huge[i + 5] = 20000 >> 8, huge[i + 6] = 20000 & 0xFF, huge[i + 7] = 20000 >> 8, huge[i + 8] = 20000 & 0xFF;
      break;
    }
  EXPECT_NE(reason(huge).find("refused unread"), std::string::npos) << reason(huge);
  EXPECT_THROW(decode_jpeg(good.data(), good.size(), "x.jpg", 0), Error);
}

// data.jpeg_decoder = turbo: an image folder of JPEGs loads libjpeg-turbo's pixels (exactly
// decode_jpeg's), within 3 levels of the stb source's; PNGs in the same folder still load.
TEST(Jpeg, AnImageFolderDecodesItsJpegsWithTheChosenDecoder) {
  test::TempDir dir;
  const int w = 64, h = 48;
  const auto px = photo_like(w, h, 3, 4);
  const auto bytes = encode(px, w, h, 3, 90, false, false);
  test::write_bytes(dir.file("cat/a.jpg"), bytes);
  test::write_png(dir.file("dog/b.png"), w, h, 3, px);
  SourcePtr turbo = open_source("image_folder", dir.str(), {"", "", parse_jpeg_decoder("turbo")});
  SourcePtr stb = open_source("image_folder", dir.str());
  EXPECT_NE(turbo->describe().find("JPEGs by libjpeg-turbo"), std::string::npos) << turbo->describe();
  const Image a = turbo->load(0), want = decode_jpeg(bytes.data(), bytes.size(), "a.jpg");
  EXPECT_EQ(a.pixels, want.pixels);
  EXPECT_LE(compare(a, stb->load(0)).max, 3);
  EXPECT_EQ(turbo->load(1).pixels, stb->load(1).pixels) << "PNGs are stb_image's either way";
  EXPECT_EQ(jpeg_decoder_name(parse_jpeg_decoder("stb")), std::string("stb"));
  const std::string msg = test::error_of([] { parse_jpeg_decoder("dali"); });
  EXPECT_NE(msg.find("unknown jpeg decoder 'dali' (stb, turbo or nvjpeg)"), std::string::npos) << msg;
}

}  // namespace
}  // namespace kd
#else
TEST(Jpeg, NeedsLibjpegTurbo) { GTEST_SKIP() << "built without libjpeg-turbo (libjpeg62-turbo-dev)"; }
#endif
