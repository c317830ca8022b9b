// Reading safetensors: every malformed file is refused with a message naming the file (and the
// tensor), and the dtype conversions of tensor_f32 are exact. Files are crafted byte by byte.
#include "engine/safetensors.h"

#include <gtest/gtest.h>

#include "tests/support/testing.h"
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>

namespace kd {
namespace {

using test::error_of;

namespace fs = std::filesystem;

class SafetensorsRead : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kd_st_read_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes raw bytes: the 8-byte length (of `header` unless given), the header, the data.
  std::string craft(const std::string& header, const std::string& data = "", int64_t length = -1) {
    const std::string path = (dir_ / "crafted.safetensors").string();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    const uint64_t n = length >= 0 ? uint64_t(length) : header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << header << data;
    return path;
  }

  // One tensor "w" with the given entry body, over `data`.
  std::string craft_entry(const std::string& body, const std::string& data) {
    return craft("{\"w\":{" + body + "}}", data);
  }

  fs::path dir_;
};

// Opening `path` must fail with a kd::Error whose message contains every fragment.
void expect_open_error(const std::string& path, std::initializer_list<std::string> fragments) {
  try {
    SafetensorsFile::open(path);
    ADD_FAILURE() << "opening " << path << " did not throw";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "no path in: " << msg;
    for (const std::string& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "no '" << f << "' in: " << msg;
  }
}

std::string bytes_of(const void* p, size_t n) { return std::string(static_cast<const char*>(p), n); }

TEST_F(SafetensorsRead, ReadsAHandCraftedFile) {
  const float v[3] = {1.5f, -2.0f, 3.25f};
  const std::string path = craft(
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})",
      bytes_of(v, 12));
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.names(), std::vector<std::string>{"b"});
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const Tensor t = f.tensor("b", {3});
  EXPECT_EQ(t.dtype(), DType::f32);
  EXPECT_EQ(t.data<float>()[2], 3.25f);
}

TEST_F(SafetensorsRead, ViewsOutliveTheFileObject) {
  const int32_t v[2] = {7, -9};
  const std::string path = craft(R"({"x":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", bytes_of(v, 8));
  Tensor t;
  {
    const SafetensorsFile f = SafetensorsFile::open(path);
    t = f.tensor("x");
  }
  fs::remove(path);  // the mapping, held by the tensor, stays valid
  EXPECT_EQ(t.data<int32_t>()[0], 7);
  EXPECT_EQ(t.data<int32_t>()[1], -9);
}

TEST_F(SafetensorsRead, UnalignedTensorsAreCopiedToAlignedMemory) {
  // Another writer packed a 3-byte U8 tensor before an F32 one: the F32 data is misaligned.
  const float v[2] = {0.25f, 8.0f};
  const std::string path =
      craft(R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}})",
            std::string("\x01\x02\x03", 3) + bytes_of(v, 8));
  const SafetensorsFile f = SafetensorsFile::open(path);
  const Tensor b = f.tensor("b", {2});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.raw()) % 4, 0u);
  EXPECT_EQ(b.data<float>()[0], 0.25f);
  EXPECT_EQ(b.data<float>()[1], 8.0f);
  EXPECT_EQ(f.tensor("a").data<uint8_t>()[2], 3);
}

TEST_F(SafetensorsRead, ScalarsAndEmptyTensorsAreFine) {
  const float v = 4.0f;
  const std::string path = craft(
      R"({"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"z":{"dtype":"I64","shape":[0,5],"data_offsets":[4,4]}})",
      bytes_of(&v, 4));
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.tensor("s", {}).data<float>()[0], 4.0f);
  EXPECT_EQ(f.entry("z").bytes, 0u);
  EXPECT_EQ(f.tensor_f32("z", {0, 5}).numel(), 0);
}

TEST_F(SafetensorsRead, FileShorterThanTheLengthField) {
  const std::string path = (dir_ / "short.safetensors").string();
  std::ofstream(path, std::ios::binary) << "abcde";
  expect_open_error(path, {"shorter than the 8-byte"});
}

TEST_F(SafetensorsRead, MissingFileNamesTheErrno) {
  expect_open_error((dir_ / "absent.safetensors").string(), {"No such file"});
}

TEST_F(SafetensorsRead, HeaderLengthLargerThanTheFile) {
  expect_open_error(craft("{}", "", 1000), {"header length 1000 exceeds the file"});
}

TEST_F(SafetensorsRead, AbsurdHeaderLength) {
  expect_open_error(craft("{}", "", int64_t(1) << 40), {"absurd"});
}

TEST_F(SafetensorsRead, HeaderIsNotJson) {
  expect_open_error(craft("{\"w\": nope}   "), {"not valid JSON"});
  expect_open_error(craft("{\"w\": {\"dtype\":"), {"not valid JSON"});
}

TEST_F(SafetensorsRead, HeaderIsNotAnObject) {
  expect_open_error(craft("[1, 2, 3]"), {"does not start with '{'"});
  expect_open_error(craft(""), {"does not start with '{'"});
}

TEST_F(SafetensorsRead, EntryIsNotAnObject) {
  expect_open_error(craft(R"({"w": 5})"), {"tensor 'w'", "not a JSON object"});
}

TEST_F(SafetensorsRead, EntryMissingAField) {
  expect_open_error(craft_entry(R"("shape":[1],"data_offsets":[0,4])", "abcd"), {"tensor 'w'", "no 'dtype'"});
  expect_open_error(craft_entry(R"("dtype":"F32","data_offsets":[0,4])", "abcd"), {"tensor 'w'", "no 'shape'"});
  expect_open_error(craft_entry(R"("dtype":"F32","shape":[1])", "abcd"), {"tensor 'w'", "no 'data_offsets'"});
}

TEST_F(SafetensorsRead, EntryFieldsOfTheWrongJsonType) {
  expect_open_error(craft_entry(R"("dtype":5,"shape":[1],"data_offsets":[0,4])", "abcd"),
                    {"tensor 'w'", "'dtype' is not a string"});
  expect_open_error(craft_entry(R"("dtype":"F32","shape":"1","data_offsets":[0,4])", "abcd"),
                    {"tensor 'w'", "'shape' is not an array"});
  expect_open_error(craft_entry(R"("dtype":"F32","shape":[1],"data_offsets":[0])", "abcd"),
                    {"tensor 'w'", "'data_offsets' is not [begin, end]"});
  expect_open_error(craft_entry(R"("dtype":"F32","shape":[1],"data_offsets":{"a":0,"b":4})", "abcd"),
                    {"tensor 'w'", "'data_offsets' is not [begin, end]"});
  expect_open_error(craft_entry(R"("dtype":"F32","shape":[1],"data_offsets":[0,"4"])", "abcd"),
                    {"tensor 'w'", "not non-negative integers"});
  expect_open_error(craft_entry(R"("dtype":"F32","shape":[1],"data_offsets":[-4,4])", "abcd"),
                    {"tensor 'w'", "not non-negative integers"});
}

TEST_F(SafetensorsRead, UnknownDtype) {
  expect_open_error(craft_entry(R"("dtype":"Q7","shape":[1],"data_offsets":[0,4])", "abcd"),
                    {"tensor 'w'", "unsupported dtype 'Q7'"});
  expect_open_error(craft_entry(R"("dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1])", "a"),
                    {"tensor 'w'", "unsupported dtype 'F8_E4M3'"});
}

TEST_F(SafetensorsRead, NegativeOrNonIntegerDimensions) {
  expect_open_error(craft_entry(R"("dtype":"U8","shape":[2,-2],"data_offsets":[0,4])", "abcd"),
                    {"tensor 'w'", "dimension 1 is -2"});
  expect_open_error(craft_entry(R"("dtype":"U8","shape":[2.5],"data_offsets":[0,4])", "abcd"),
                    {"tensor 'w'", "dimension 0 is 2.5"});
  expect_open_error(craft_entry(R"("dtype":"U8","shape":[4.0],"data_offsets":[0,4])", "abcd"),
                    {"tensor 'w'", "dimension 0 is 4.0"});
  expect_open_error(craft_entry(R"("dtype":"U8","shape":["4"],"data_offsets":[0,4])", "abcd"),
                    {"tensor 'w'", "not a non-negative integer"});
  expect_open_error(
      craft_entry(R"("dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4])", "abcd"),
      {"tensor 'w'", "overflows"});
}

TEST_F(SafetensorsRead, OffsetsBeginAfterEnd) {
  expect_open_error(craft_entry(R"("dtype":"U8","shape":[0],"data_offsets":[3,1])", "abcd"),
                    {"tensor 'w'", "begin > end"});
}

TEST_F(SafetensorsRead, OffsetsBeyondTheDataSection) {
  expect_open_error(craft_entry(R"("dtype":"U8","shape":[8],"data_offsets":[0,8])", "abcd"),
                    {"tensor 'w'", "beyond the data section (4 bytes)"});
}

TEST_F(SafetensorsRead, ByteSizeDisagreesWithShape) {
  expect_open_error(craft_entry(R"("dtype":"F32","shape":[2],"data_offsets":[0,4])", "abcd"),
                    {"tensor 'w'", "hold 4 bytes", "f32[2] needs 8"});
}

TEST_F(SafetensorsRead, OverlappingTensors) {
  expect_open_error(
      craft(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
            "abcdef"),
      {"tensor 'b'", "overlaps tensor 'a'"});
}

TEST_F(SafetensorsRead, HolesAndTrailingBytesAreRefused) {
  expect_open_error(
      craft(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
            "abcdef"),
      {"2 unreferenced bytes before tensor 'b'"});
  expect_open_error(craft_entry(R"("dtype":"U8","shape":[2],"data_offsets":[0,2])", "abcd"),
                    {"2 bytes after the last tensor"});
}

TEST_F(SafetensorsRead, DuplicateTensorNames) {
  expect_open_error(craft(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                          "ab"),
                    {"names 'a' twice"});
}

TEST_F(SafetensorsRead, MetadataValuesMustBeStrings) {
  expect_open_error(craft(R"({"__metadata__":{"epoch":3}})"), {"__metadata__ value for 'epoch'"});
  expect_open_error(craft(R"({"__metadata__":["x"]})"), {"__metadata__ is not a JSON object"});
}

TEST_F(SafetensorsRead, TruncatedFileNamesTheCutTensor) {
  std::vector<float> a(16, 1.0f), b(16, 2.0f);
  std::string data = bytes_of(a.data(), 64) + bytes_of(b.data(), 64);
  data.resize(100);  // cut in the middle of 'b'
  expect_open_error(
      craft(R"({"a":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]},"b":{"dtype":"F32","shape":[4,4],"data_offsets":[64,128]}})",
            data),
      {"tensor 'b'", "truncated"});
}

TEST_F(SafetensorsRead, MissingTensorNamesFileAndTensor) {
  const std::string path = craft(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "z");
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_FALSE(f.contains("stem.conv.weight"));
  const std::string msg = error_of([&] { f.tensor("stem.conv.weight"); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("no tensor 'stem.conv.weight'"), std::string::npos) << msg;
}

TEST_F(SafetensorsRead, ShapeMismatchNamesBothShapes) {
  std::vector<bf16> w(64 * 3 * 7 * 7, bf16{0x3f80});
  const std::string path =
      craft(R"({"stem.conv.weight":{"dtype":"BF16","shape":[64,3,7,7],"data_offsets":[0,18816]}})",
            bytes_of(w.data(), w.size() * 2));
  const SafetensorsFile f = SafetensorsFile::open(path);
  const std::string want = path + ": tensor 'stem.conv.weight' has shape [64, 3, 7, 7], expected [64, 3, 3, 3]";
  EXPECT_NE(error_of([&] { f.tensor("stem.conv.weight", {64, 3, 3, 3}); }).find(want), std::string::npos);
  EXPECT_NE(error_of([&] { f.tensor_f32("stem.conv.weight", {64, 3, 3, 3}); }).find(want), std::string::npos);
  EXPECT_EQ(f.tensor_f32("stem.conv.weight", {64, 3, 7, 7}).data<float>()[100], 1.0f);
}

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// The value of an IEEE half, computed from its definition rather than by bit manipulation.
double half_value(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
  double v = exp == 0 ? std::ldexp(mant, -24) : exp == 31 ? (mant ? NAN : INFINITY) : std::ldexp(1024 + mant, exp - 25);
  return sign ? -v : v;
}

TEST_F(SafetensorsRead, F16ConversionIsExactForEveryBitPattern) {
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
  const std::string path =
      craft(R"({"h":{"dtype":"F16","shape":[65536],"data_offsets":[0,131072]}})", bytes_of(all.data(), 131072));
  const Tensor t = SafetensorsFile::open(path).tensor_f32("h", {65536});
  const float* f = t.data<float>();
  for (size_t i = 0; i < all.size(); ++i) {
    const double want = half_value(uint16_t(i));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f[i])) << std::hex << i;
    } else {
      ASSERT_EQ(double(f[i]), want) << std::hex << i;
      ASSERT_EQ(std::signbit(f[i]), (i & 0x8000) != 0) << std::hex << i;
    }
  }
  // Known patterns, including the payload of a NaN.
  EXPECT_EQ(f[0x3c00], 1.0f);
  EXPECT_EQ(f[0xc000], -2.0f);
  EXPECT_EQ(f[0x7bff], 65504.0f);
  EXPECT_EQ(f[0x3555], 0.333251953125f);
  EXPECT_EQ(f[0x0400], std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(f[0x0001], std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f[0x03ff], std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(f[0x8001], -std::ldexp(1.0f, -24));
  EXPECT_EQ(f[0x7c00], INFINITY);
  EXPECT_EQ(f[0xfc00], -INFINITY);
  EXPECT_EQ(float_bits(f[0x7e00]), 0x7fc00000u);
  EXPECT_EQ(float_bits(f[0x7c01]), 0x7f802000u);
}

TEST_F(SafetensorsRead, Bf16AndIntegerConversions) {
  const uint16_t b[6] = {0x3f80, 0xc040, 0x7f80, 0x0001, 0x4049, 0x8000};
  const uint8_t u[3] = {0, 7, 255};
  const int32_t i32[2] = {-5, 1 << 24};
  const int64_t i64[2] = {-3, int64_t(1) << 40};
  const std::string path = craft(
      R"({"b":{"dtype":"BF16","shape":[6],"data_offsets":[24,36]},)"
      R"("i":{"dtype":"I32","shape":[2],"data_offsets":[16,24]},)"
      R"("l":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
      R"("u":{"dtype":"U8","shape":[3],"data_offsets":[36,39]}})",
      bytes_of(i64, 16) + bytes_of(i32, 8) + bytes_of(b, 12) + bytes_of(u, 3));
  const SafetensorsFile f = SafetensorsFile::open(path);
  const Tensor tb = f.tensor_f32("b", {6});
  EXPECT_EQ(tb.data<float>()[0], 1.0f);
  EXPECT_EQ(tb.data<float>()[1], -3.0f);
  EXPECT_EQ(tb.data<float>()[2], INFINITY);
  EXPECT_EQ(tb.data<float>()[3], std::ldexp(1.0f, -133));
  EXPECT_EQ(tb.data<float>()[4], 3.140625f);
  EXPECT_TRUE(std::signbit(tb.data<float>()[5]));
  const Tensor tu = f.tensor_f32("u", {3}), ti = f.tensor_f32("i", {2}), tl = f.tensor_f32("l", {2});
  EXPECT_EQ(tu.data<float>()[2], 255.0f);
  EXPECT_EQ(ti.data<float>()[0], -5.0f);
  EXPECT_EQ(ti.data<float>()[1], 16777216.0f);
  EXPECT_EQ(tl.data<float>()[0], -3.0f);
  EXPECT_EQ(tl.data<float>()[1], 1099511627776.0f);
}

}  // namespace
}  // namespace kd
