// decode_image on files that the fuzzer found (tests/fuzz/regressions/image): each is refused with
// a DecodeError that says why, before stb_image allocates or decodes what the file only claims.
#include "data/image.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/data/data_fixtures.h"

namespace kd {
namespace {

std::string decode_error_of(const std::string& relative) {
  const std::string path = std::string(KD_SOURCE_DIR) + "/tests/fuzz/" + relative;
  const std::string bytes = test::read_text(path);
  EXPECT_FALSE(bytes.empty()) << path;
  try {
    decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
  } catch (const DecodeError& e) {
    return e.reason();
  }
  return "decoded";
}

TEST(DecodeImage, ACutOffPngChunkIsRefusedBeforeItsBufferIsGrown) {
  EXPECT_EQ(decode_error_of("regressions/image/stb_png_idat_claims_2gib.png"),
            "truncated PNG: chunk 'IDAT' claims 2130182165 bytes, the file has 12 after its header");
}

TEST(DecodeImage, ACutOffBmpIsRefusedBeforeItsPixelsAreDecoded) {
  EXPECT_NE(decode_error_of("regressions/image/stb_bmp_cut_off_16384px.bmp").find("truncated BMP: "),
            std::string::npos);
}

TEST(DecodeImage, AJpegHuffmanTableOfMoreThan256CodesIsCorrupt) {
  for (const char* file : {"stb_dht_after_junk_bytes.jpg", "stb_dht_after_sof.jpg"})
    EXPECT_NE(decode_error_of(std::string("regressions/image/") + file).find("(bad DHT header)"), std::string::npos)
        << file;
  // Nine bytes: stb_image's probe of the other formats overwrites the JPEG reason.
  EXPECT_NE(decode_error_of("regressions/image/stb_dht_over_256_codes.jpg"), "decoded");
}

TEST(DecodeImage, AnEmptyPngDataChunkIsNoCrash) {
  EXPECT_NE(decode_error_of("regressions/image/stb_png_empty_first_idat.png"), "decoded");
}

TEST(DecodeImage, TheSeedsOfTheFuzzerDecode) {
  for (const char* file : {"c1.png", "c4.png", "c1.bmp", "c4.bmp", "c3.jpg"}) {
    const std::string bytes = test::read_text(std::string(KD_SOURCE_DIR) + "/tests/fuzz/corpus/image/" + file);
    const Image image = decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), file);
    EXPECT_EQ(image.bytes(), size_t(image.width) * image.height * 3) << file;
    EXPECT_GT(image.width, 0) << file;
  }
}

}  // namespace
}  // namespace kd
