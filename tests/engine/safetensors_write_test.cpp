// Writing safetensors: round trips for every dtype, the exact byte layout of the format, and the
// atomic write (no temp file left behind; a failed write leaves the old file as it was).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/context.h"
#include "engine/safetensors.h"
#include "tests/data/data_fixtures.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

namespace fs = std::filesystem;

class SafetensorsWrite : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kd_st_write_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::vector<std::string> listing() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  fs::path dir_;
};

// A CPU tensor of random bytes (every bit pattern is a legal value for a round trip).
Tensor random_tensor(const Shape& shape, DType dtype, uint64_t seed) {
  Tensor t = Tensor::zeros_cpu(shape, dtype);
  std::mt19937_64 rng(seed);
  auto* p = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = uint8_t(rng());
  return t;
}

TEST_F(SafetensorsWrite, RoundTripEveryDtypeWithMetadata) {
  const std::vector<std::pair<DType, Shape>> cases = {
      {DType::f32, {3, 5}}, {DType::bf16, {7}}, {DType::f16, {2, 3, 2}},
      {DType::u8, {13}},    {DType::i32, {4, 1}}, {DType::i64, {3}}};
  SafetensorsWriter w;
  std::map<std::string, Tensor> written;
  uint64_t seed = 1;
  for (const auto& [dtype, shape] : cases) {
    const std::string name = std::string("layer.") + dtype_name(dtype) + ".weight";
    written[name] = random_tensor(shape, dtype, seed++);
    w.add(name, written[name]);
  }
  written["scalar"] = random_tensor({}, DType::f32, 99);
  written["empty"] = random_tensor({0, 4}, DType::i64, 98);
  w.add("scalar", written["scalar"]);
  w.add("empty", written["empty"]);
  w.set_metadata("format", "kd");
  w.set_metadata("note", "quotes \" and \\ and unicode \xc3\xa9 survive");
  const std::string p = path("model.safetensors");
  w.write(p);

  const SafetensorsFile f = SafetensorsFile::open(p);
  std::vector<std::string> names;
  for (const auto& kv : written) names.push_back(kv.first);
  EXPECT_EQ(f.names(), names);
  EXPECT_EQ(f.metadata().size(), 3u) << "format, note and kd's checksums";
  EXPECT_EQ(f.metadata().count("kd_checksums"), 1u);
  EXPECT_EQ(f.metadata().at("note"), "quotes \" and \\ and unicode \xc3\xa9 survive");
  for (const auto& [name, t] : written) {
    const Tensor r = f.tensor(name, t.shape());
    EXPECT_EQ(r.dtype(), t.dtype()) << name;
    EXPECT_EQ(std::memcmp(r.raw(), t.raw(), t.nbytes()), 0) << name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r.raw()) % dtype_size(r.dtype()), 0u) << name << " is misaligned";
  }
  // f32 data converts to itself.
  const Tensor a = f.tensor_f32("layer.f32.weight", {3, 5});
  EXPECT_EQ(std::memcmp(a.raw(), written["layer.f32.weight"].raw(), 60), 0);
}

TEST_F(SafetensorsWrite, ByteLayoutFollowsTheSpec) {
  SafetensorsWriter w;
  Tensor a = Tensor::zeros_cpu({2}, DType::f32);
  a.data<float>()[0] = 1.0f;
  a.data<float>()[1] = 2.0f;
  w.add("a", a);
  w.write(path("one.safetensors"));
  const float values[2] = {1.0f, 2.0f};
  char checksum[17];
  std::snprintf(checksum, sizeof checksum, "%016llx", (unsigned long long)content_checksum64(values, 8));
  std::string want_header = R"({"__metadata__":{"kd_checksums":"{\"a\":\")" + std::string(checksum) +
                            R"(\"}"},"a":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}})";
  ASSERT_EQ(want_header.size(), 117u);
  want_header += "   ";  // padded with spaces to a multiple of 8, as the reference writer does
  std::string want("\x78\0\0\0\0\0\0\0", 8);
  want += want_header + std::string(reinterpret_cast<const char*>(values), 8);
  EXPECT_EQ(test::read_text(path("one.safetensors")), want);
}

TEST_F(SafetensorsWrite, HeaderIsSortedPaddedAndOffsetsTileTheData) {
  SafetensorsWriter w;
  const std::vector<std::pair<std::string, DType>> tensors = {
      {"z.bias", DType::u8}, {"a.weight", DType::f16}, {"m.count", DType::i64}, {"b.scale", DType::f32}};
  for (size_t i = 0; i < tensors.size(); ++i)
    w.add(tensors[i].first, random_tensor({int64_t(3 + i)}, tensors[i].second, i));
  w.set_metadata("step", "10");
  w.write(path("m.safetensors"));

  const std::string bytes = test::read_text(path("m.safetensors"));
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  ASSERT_EQ(n % 8, 0u);
  const std::string header = bytes.substr(8, n);
  const size_t json_end = header.find_last_not_of(' ') + 1;
  EXPECT_LT(header.size() - json_end, 8u);
  EXPECT_EQ(header[json_end - 1], '}');
  // Names appear in the header in sorted order.
  size_t last = 0;
  for (const char* name : {"\"a.weight\"", "\"b.scale\"", "\"m.count\"", "\"z.bias\""}) {
    const size_t at = header.find(name);
    ASSERT_NE(at, std::string::npos) << name;
    EXPECT_GT(at, last) << name;
    last = at;
  }
  // Offsets tile [0, data size) with no gap, each aligned for its dtype.
  const auto j = nlohmann::json::parse(header);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, e] : j.items()) {
    if (name == "__metadata__") continue;
    const uint64_t b = e["data_offsets"][0], end = e["data_offsets"][1];
    EXPECT_EQ(b % dtype_size(parse_safetensors_dtype(e["dtype"], name)), 0u) << name;
    ranges.emplace_back(b, end);
  }
  std::sort(ranges.begin(), ranges.end());
  uint64_t covered = 0;
  for (const auto& [b, e] : ranges) {
    EXPECT_EQ(b, covered);
    covered = e;
  }
  EXPECT_EQ(covered, bytes.size() - 8 - n);
  EXPECT_EQ(j["__metadata__"]["step"], "10");
}

TEST_F(SafetensorsWrite, EmptyFileRoundTrips) {
  SafetensorsWriter().write(path("empty.safetensors"));
  EXPECT_EQ(test::read_text(path("empty.safetensors")), std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
  EXPECT_TRUE(SafetensorsFile::open(path("empty.safetensors")).names().empty());
}

TEST_F(SafetensorsWrite, AddCopiesTheTensorNow) {
  Tensor t = Tensor::zeros_cpu({2}, DType::i32);
  t.data<int32_t>()[0] = 5;
  SafetensorsWriter w;
  w.add("t", t);
  t.data<int32_t>()[0] = 6;
  w.write(path("t.safetensors"));
  EXPECT_EQ(SafetensorsFile::open(path("t.safetensors")).tensor("t").data<int32_t>()[0], 5);
}

TEST_F(SafetensorsWrite, RejectsDuplicateAndReservedNames) {
  SafetensorsWriter w;
  w.add("x", Tensor::zeros_cpu({1}, DType::f32));
  EXPECT_THROW(w.add("x", Tensor::zeros_cpu({1}, DType::f32)), Error);
  EXPECT_THROW(w.add("__metadata__", Tensor::zeros_cpu({1}, DType::f32)), Error);
  EXPECT_THROW(w.add("undefined", Tensor()), Error);
}

TEST_F(SafetensorsWrite, LeavesNoTempFileAndReplacesTheOldFile) {
  const std::string p = path("ckpt.safetensors");
  for (int version = 0; version < 2; ++version) {
    SafetensorsWriter w;
    Tensor t = Tensor::zeros_cpu({1}, DType::i64);
    t.data<int64_t>()[0] = version;
    w.add("version", t);
    w.write(p);
    EXPECT_EQ(listing(), std::vector<std::string>{"ckpt.safetensors"});
    EXPECT_EQ(SafetensorsFile::open(p).tensor("version").data<int64_t>()[0], version);
  }
}

TEST_F(SafetensorsWrite, WriteIntoAMissingFolderThrowsWithErrnoText) {
  SafetensorsWriter w;
  w.add("x", Tensor::zeros_cpu({4}, DType::f32));
  const std::string p = path("no/such/folder/x.safetensors");
  try {
    w.write(p);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
    EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;
  }
  EXPECT_EQ(listing(), std::vector<std::string>{});
}

TEST_F(SafetensorsWrite, FailedWriteLeavesTheExistingFileIntact) {
  const std::string p = path("ckpt.safetensors");
  SafetensorsWriter old;
  old.add("old", random_tensor({8}, DType::f32, 5));
  old.write(p);
  const std::string before = test::read_text(p);

  // The temp file's name is taken by a folder, so creating it fails.
  const std::string blocker = p + ".tmp." + std::to_string(::getpid());
  fs::create_directory(blocker);
  SafetensorsWriter next;
  next.add("new", random_tensor({8}, DType::f32, 6));
  EXPECT_THROW(next.write(p), Error);
  EXPECT_EQ(test::read_text(p), before);
  EXPECT_TRUE(fs::is_directory(blocker));  // not ours: left alone
  fs::remove(blocker);

  // The target is a folder, so the rename fails: the temp file must be gone afterwards.
  const std::string folder = path("folder.safetensors");
  fs::create_directories(folder + "/inside");
  try {
    next.write(folder);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot rename"), std::string::npos) << e.what();
  }
  EXPECT_EQ(listing(), (std::vector<std::string>{"ckpt.safetensors", "folder.safetensors"}));
  EXPECT_EQ(test::read_text(p), before);
}

TEST_F(SafetensorsWrite, NonUtf8NamesAreRefusedBeforeWriting) {
  SafetensorsWriter w;
  w.add("bad\xff", Tensor::zeros_cpu({1}, DType::u8));
  EXPECT_THROW(w.write(path("bad.safetensors")), Error);
  EXPECT_EQ(listing(), std::vector<std::string>{});
}

TEST_F(SafetensorsWrite, WritesCudaTensors) {
  KD_REQUIRE_CUDA();
  auto ctx = Context::cuda(0);
  const Tensor host = random_tensor({3, 17}, DType::bf16, 11);
  const Tensor dev = host.to(Device::cuda, ctx.get());
  SafetensorsWriter w;
  EXPECT_THROW(w.add("dev", dev), Error);  // no context to order the copy: a clear error
  w.add("dev", dev, ctx.get());
  w.write(path("dev.safetensors"));
  const Tensor r = SafetensorsFile::open(path("dev.safetensors")).tensor("dev", {3, 17});
  EXPECT_EQ(std::memcmp(r.raw(), host.raw(), host.nbytes()), 0);
}

}  // namespace
}  // namespace kd
