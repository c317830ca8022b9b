// Reading NumPy .npz archives (engine/npz.h): archives written byte by byte here (stored and
// deflated members, ZIP64 records, .npy versions 1-3, fortran_order, every dtype kd reads) come
// back exactly; every malformed archive is refused with a message naming the file and, where
// the fault lies in one, the member.
#include "engine/npz.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "tests/data/data_fixtures.h"
#include "tests/support/npz_writer.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::build_zip;
using test::error_of;
using test::npy;
using test::ZipEntry;

template <typename T>
std::vector<T> values_of(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.numel());
}

class Npz : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string path = dir_.file(name);
    test::write_file_bytes(path, bytes);
    return path;
  }
  // One archive with a member of every dtype and rank the tests read.
  std::vector<ZipEntry> every_dtype(bool deflate) const {
    const uint16_t half_values[] = {0x3c00, 0xc000, 0x0001, 0x7c00};  // 1, -2, smallest subnormal, +inf
    return {
        {"f32.npy", npy<float>("<f4", {2, 3}, {1.5f, -2, 3, 4, 5, 6.25f}), deflate},
        {"f64.npy", npy<double>("<f8", {4}, {0.1, -1e300, 3, 1.0 / 3}), deflate},
        {"f16.npy", npy<uint16_t>("<f2", {4}, {std::begin(half_values), std::end(half_values)}), deflate},
        {"i64.npy", npy<int64_t>("<i8", {2, 2}, {-3, 4, int64_t(1) << 40, 7}), deflate},
        {"i32.npy", npy<int32_t>("<i4", {3}, {-1, 0, 65536}), deflate},
        {"u8.npy", npy<uint8_t>("|u1", {2}, {0, 255}), deflate},
        {"scalar.npy", npy<float>("<f4", {}, {42.5f}), deflate},
        {"kernel.npy", npy<float>("<f4", {2, 1, 3, 2}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}), deflate},
        {"empty.npy", npy<float>("<f4", {0, 3}, {}), deflate},
    };
  }
  void expect_every_dtype(const NpzFile& f) const {
    EXPECT_EQ(f.names(),
              (std::vector<std::string>{"empty", "f16", "f32", "f64", "i32", "i64", "kernel", "scalar", "u8"}));
    EXPECT_EQ(f.shape_of("f32"), (Shape{2, 3}));
    EXPECT_EQ(f.shape_of("scalar"), Shape{});
    EXPECT_EQ(f.shape_of("kernel"), (Shape{2, 1, 3, 2}));
    EXPECT_EQ(values_of<float>(f.tensor("f32")), (std::vector<float>{1.5f, -2, 3, 4, 5, 6.25f}));
    EXPECT_EQ(values_of<double>(f.tensor("f64")), (std::vector<double>{0.1, -1e300, 3, 1.0 / 3}));
    EXPECT_EQ(values_of<int64_t>(f.tensor("i64")), (std::vector<int64_t>{-3, 4, int64_t(1) << 40, 7}));
    EXPECT_EQ(values_of<int32_t>(f.tensor("i32")), (std::vector<int32_t>{-1, 0, 65536}));
    EXPECT_EQ(values_of<uint8_t>(f.tensor("u8")), (std::vector<uint8_t>{0, 255}));
    EXPECT_EQ(f.tensor("f16").dtype(), DType::f16);
    EXPECT_EQ(values_of<float>(f.tensor_as("f16", {4}, DType::f32)),
              (std::vector<float>{1, -2, std::ldexp(1.0f, -24), std::numeric_limits<float>::infinity()}));
    EXPECT_EQ(values_of<double>(f.tensor_as("f32", {2, 3}, DType::f64)), (std::vector<double>{1.5, -2, 3, 4, 5, 6.25}));
    EXPECT_EQ(values_of<float>(f.tensor_as("f64", {4}, DType::f32)),
              (std::vector<float>{0.1f, -std::numeric_limits<float>::infinity(), 3, float(1.0 / 3)}));
    EXPECT_EQ(values_of<double>(f.tensor_as("i64", {2, 2}, DType::f64)),
              (std::vector<double>{-3, 4, 1099511627776.0, 7}));
    EXPECT_EQ(values_of<float>(f.tensor_as("u8", {2}, DType::f32)), (std::vector<float>{0, 255}));
    EXPECT_EQ(values_of<float>(f.tensor_as("scalar", {}, DType::f32)), (std::vector<float>{42.5f}));
    EXPECT_EQ(values_of<float>(f.tensor_as("kernel", {2, 1, 3, 2}, DType::f32))[11], 11.0f);
    EXPECT_EQ(f.tensor_as("empty", {0, 3}, DType::f64).numel(), 0);
  }
  test::TempDir dir_;
};

TEST_F(Npz, StoredMembersOfEveryDtypeAndRank) {
  const std::string path = write("a.npz", build_zip(every_dtype(false)).bytes);
  const NpzFile f = NpzFile::open(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_FALSE(f.member("f32").deflated);
  expect_every_dtype(f);
}

TEST_F(Npz, DeflatedMembers) {
  const NpzFile f = NpzFile::open(write("a.npz", build_zip(every_dtype(true)).bytes));
  EXPECT_TRUE(f.member("f32").deflated);
  expect_every_dtype(f);
}

TEST_F(Npz, Zip64RecordsAndExtraFieldsAndAComment) {
  test::ZipOptions o;
  o.zip64 = true;
  o.comment = "written by a test; PK\x05\x06 inside the comment must not confuse the reader";
  auto entries = every_dtype(false);
  entries[1].deflate = true;
  const NpzFile f = NpzFile::open(write("a.npz", build_zip(entries, o).bytes));
  EXPECT_TRUE(f.member("f64").deflated);
  expect_every_dtype(f);
}

TEST_F(Npz, NpyVersions2And3) {
  const NpzFile f = NpzFile::open(write("a.npz", build_zip({{"v2.npy", npy<float>("<f4", {2}, {1, 2}, false, 2)},
                                                            {"v3.npy", npy<float>("<f4", {2}, {3, 4}, false, 3), true}})
                                                     .bytes));
  EXPECT_EQ(values_of<float>(f.tensor("v2")), (std::vector<float>{1, 2}));
  EXPECT_EQ(values_of<float>(f.tensor("v3")), (std::vector<float>{3, 4}));
}

TEST_F(Npz, FortranOrderIsTransposedIntoCOrder) {
  // A[i][j] = 10 i + j, shape (2, 3): Fortran order stores columns first.
  const std::vector<float> fortran_2d = {0, 10, 1, 11, 2, 12};
  // B[i][j][k] = 100 i + 10 j + k, shape (2, 3, 2), first index fastest.
  std::vector<float> fortran_3d;
  for (int k = 0; k < 2; ++k)
    for (int j = 0; j < 3; ++j)
      for (int i = 0; i < 2; ++i) fortran_3d.push_back(float(100 * i + 10 * j + k));
  const NpzFile f = NpzFile::open(write("a.npz", build_zip({{"a.npy", npy("<f4", {2, 3}, fortran_2d, true)},
                                                            {"b.npy", npy("<f4", {2, 3, 2}, fortran_3d, true), true},
                                                            {"v.npy", npy<float>("<f4", {3}, {7, 8, 9}, true)}})
                                                     .bytes));
  EXPECT_TRUE(f.member("a").fortran_order);
  EXPECT_EQ(values_of<float>(f.tensor_as("a", {2, 3}, DType::f32)), (std::vector<float>{0, 1, 2, 10, 11, 12}));
  std::vector<double> c_3d;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 2; ++k) c_3d.push_back(100 * i + 10 * j + k);
  EXPECT_EQ(values_of<double>(f.tensor_as("b", {2, 3, 2}, DType::f64)), c_3d);
  EXPECT_EQ(values_of<float>(f.tensor("v")), (std::vector<float>{7, 8, 9}));
}

TEST_F(Npz, HeaderSpellingsNumPyHasUsed) {
  // Keys in another order, double quotes, no trailing comma, Python 2 longs.
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  const auto a = test::npy_raw(R"({"shape": (2L, 3L), "fortran_order": False, "descr": "<f4"})", v.data(), 24);
  const NpzFile f = NpzFile::open(write("a.npz", build_zip({{"a.npy", a}}).bytes));
  EXPECT_EQ(f.shape_of("a"), (Shape{2, 3}));
  EXPECT_EQ(values_of<float>(f.tensor("a")), v);
}

// ---- malformed archives ------------------------------------------------------------------------

class NpzErrors : public Npz {
 protected:
  // `error` mentions every one of `parts`.
  static void expect_names(const std::string& error, std::initializer_list<std::string> parts) {
    for (const std::string& p : parts)
      EXPECT_NE(error.find(p), std::string::npos) << "missing '" << p << "' in: " << error;
  }
  test::ZipBytes two_members(bool deflate = false) const {
    return build_zip({{"first.npy", npy<float>("<f4", {4}, {1, 2, 3, 4}), deflate},
                      {"second.npy", npy<float>("<f4", {64}, std::vector<float>(64, 0.5f)), deflate}});
  }
};

TEST_F(NpzErrors, TruncatedAnywhere) {
  const test::ZipBytes z = two_members();
  struct Cut {
    size_t at;
    std::vector<std::string> names;
  };
  const std::vector<Cut> cuts = {
      {z.local_offsets[0] + 10, {"truncated"}},                             // in the first local header
      {z.data_offsets[0] + 20, {"truncated", "'first.npy'"}},               // in the first member's data
      {z.data_offsets[1] + 100, {"truncated", "'second.npy'"}},             // in the second member's data
      {z.central_offset + 30, {"truncated", "after member 'second.npy'"}},  // in the central directory
      {z.end_offset + 10, {"truncated", "after member 'second.npy'"}},      // in the end record
      {z.bytes.size() - 1, {"truncated"}},                                  // one byte short
  };
  for (const Cut& c : cuts) {
    const std::string path = write("cut_" + std::to_string(c.at) + ".npz",
                                   std::vector<uint8_t>(z.bytes.begin(), z.bytes.begin() + std::ptrdiff_t(c.at)));
    const std::string e = error_of([&] { NpzFile::open(path); });
    expect_names(e, {path});
    for (const std::string& n : c.names) expect_names(e, {n});
  }
  const std::string empty = write("empty.npz", {});
  expect_names(error_of([&] { NpzFile::open(empty); }), {empty, "empty"});
  const std::string text = write("text.npz", {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!', '!',
                                              '!', '!', '!', '!', '!', '!', '!', '!', '!', '!', '!', '!'});
  expect_names(error_of([&] { NpzFile::open(text); }), {text, "not a ZIP archive"});
  expect_names(error_of([&] { NpzFile::open(dir_.file("missing.npz")); }), {"missing.npz", "cannot open"});
}

TEST_F(NpzErrors, DirectoryPointingPastTheEndOrAtGarbage) {
  test::ZipBytes z = two_members();
  // The second local header's signature overwritten.
  std::vector<uint8_t> bad = z.bytes;
  bad[z.local_offsets[1]] = 'X';
  std::string path = write("local.npz", bad);
  expect_names(error_of([&] { NpzFile::open(path); }), {path, "'second.npy'", "no local header"});
  // The central directory offset in the end record moved past the file.
  bad = z.bytes;
  bad[z.end_offset + 16 + 2] = 0x7f;
  path = write("central.npz", bad);
  expect_names(error_of([&] { NpzFile::open(path); }), {path, "central directory", "beyond the end"});
  // A member whose compressed size claims more than the file holds.
  bad = z.bytes;
  const size_t central_entry_1 = z.central_offset + 46 + std::string("first.npy").size();
  bad[central_entry_1 + 20 + 2] = 0x7f, bad[central_entry_1 + 24 + 2] = 0x7f;
  path = write("size.npz", bad);
  expect_names(error_of([&] { NpzFile::open(path); }), {path, "'second.npy'", "beyond the end of the file"});
}

TEST_F(NpzErrors, CrcMismatchWhenTheArrayIsRead) {
  for (bool deflate : {false, true}) {
    test::ZipBytes z = two_members(deflate);
    std::vector<uint8_t> bad = z.bytes;
    // Stored: flip one bit of the last float. Deflated: a stream with one value changed, under
    // the original CRC (flipping compressed bits would mostly break the stream itself).
    if (!deflate) {
      bad[z.data_offsets[0] + z.data_sizes[0] - 1] ^= 0x01;
    } else {
      const auto other = build_zip({{"first.npy", npy<float>("<f4", {4}, {1, 2, 3, 5}), true},
                                    {"second.npy", npy<float>("<f4", {64}, std::vector<float>(64, 0.5f)), true}});
      ASSERT_EQ(other.data_sizes[0], z.data_sizes[0]);
      std::copy(other.bytes.begin() + std::ptrdiff_t(other.data_offsets[0]),
                other.bytes.begin() + std::ptrdiff_t(other.data_offsets[0] + other.data_sizes[0]),
                bad.begin() + std::ptrdiff_t(z.data_offsets[0]));
    }
    const std::string path = write(deflate ? "crc_deflated.npz" : "crc_stored.npz", bad);
    const NpzFile f = NpzFile::open(path);  // headers are fine; the data is checked when read
    expect_names(error_of([&] { f.tensor("first"); }), {path, "'first.npy'", "CRC-32 mismatch"});
    expect_names(error_of([&] { f.tensor_as("first", {4}, DType::f32); }), {path, "'first.npy'", "CRC-32"});
    EXPECT_EQ(f.tensor("second").numel(), 64) << "the intact member still reads";
  }
}

TEST_F(NpzErrors, CorruptDeflateStream) {
  test::ZipBytes z = two_members(true);
  std::vector<uint8_t> bad = z.bytes;
  for (size_t i = 0; i < z.data_sizes[1]; ++i) bad[z.data_offsets[1] + i] = 0xff;  // invalid block type
  const std::string path = write("deflate.npz", bad);
  expect_names(error_of([&] { NpzFile::open(path); }), {path, "'second.npy'", "deflate"});
}

TEST_F(NpzErrors, BadNpyMagicVersionOrHeader) {
  auto open_member = [&](const std::string& file, std::vector<uint8_t> content) {
    const std::string path =
        write(file, build_zip({{"ok.npy", npy<float>("<f4", {1}, {1})}, {"bad.npy", content}}).bytes);
    return std::make_pair(path, error_of([&] { NpzFile::open(path); }));
  };
  auto [p1, e1] = open_member("magic.npz", {'P', 'K', 'N', 'O', 'T', 'N', 'P', 'Y', 1, 0, 0, 0});
  expect_names(e1, {p1, "'bad.npy'", "magic"});
  std::vector<uint8_t> v9 = npy<float>("<f4", {1}, {1});
  v9[6] = 9;
  auto [p2, e2] = open_member("version.npz", v9);
  expect_names(e2, {p2, "'bad.npy'", "version 9"});
  const float one = 1;
  auto [p3, e3] = open_member("noshape.npz", test::npy_raw("{'descr': '<f4', 'fortran_order': False, }", &one, 4));
  expect_names(e3, {p3, "'bad.npy'", "'shape'"});
  auto [p4, e4] =
      open_member("garbage.npz", test::npy_raw("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}", &one, 4));
  expect_names(e4, {p4, "'bad.npy'", "malformed .npy header", "True or False"});
  auto [p5, e5] = open_member(
      "extra.npz", test::npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", &one, 4));
  expect_names(e5, {p5, "'bad.npy'", "unknown key 'x'"});
  std::vector<uint8_t> long_header = npy<float>("<f4", {1}, {1});
  long_header[8] = 0xff, long_header[9] = 0xff;  // header length past the member
  auto [p6, e6] = open_member("headerlen.npz", long_header);
  expect_names(e6, {p6, "'bad.npy'", "longer than the member"});
}

TEST_F(NpzErrors, DtypesKdDoesNotRead) {
  const std::vector<float> v = {1, 2};
  const std::string path = write("dtypes.npz", build_zip({{"big.npy", npy("<f4", {2}, v)}}).bytes);
  EXPECT_EQ(NpzFile::open(path).tensor("big").dtype(), DType::f32);
  struct Case {
    std::string descr, expected;
  };
  for (const Case& c : {Case{">f4", "big-endian"}, Case{">i8", "big-endian"}, Case{"<c8", "unsupported dtype '<c8'"},
                        Case{"|O", "unsupported dtype '|O'"}, Case{"<U3", "unsupported dtype"}}) {
    const std::string p = write("dtype.npz", build_zip({{"weights.npy", npy(c.descr, {2}, v)}}).bytes);
    expect_names(error_of([&] { NpzFile::open(p); }), {p, "'weights.npy'", c.expected});
  }
  const std::string p =
      write("structured.npz", build_zip({{"rec.npy", test::npy_raw("{'descr': [('a', '<f4')], 'fortran_order': False, "
                                                                   "'shape': (2,), }",
                                                                   v.data(), 8)}})
                                  .bytes);
  expect_names(error_of([&] { NpzFile::open(p); }), {p, "'rec.npy'", "structured"});
}

TEST_F(NpzErrors, SizeAndShapeMismatches) {
  const std::vector<float> three = {1, 2, 3};
  // The header says 4 floats, the member holds 3.
  const std::string short_path = write("short.npz", build_zip({{"w.npy", test::npy_raw("{'descr': '<f4', "
                                                                                       "'fortran_order': False, "
                                                                                       "'shape': (4,), }",
                                                                                       three.data(), 12)}})
                                                        .bytes);
  expect_names(error_of([&] { NpzFile::open(short_path); }), {short_path, "'w.npy'", "holds 12 bytes", "needs 16"});
  const std::string path = write("ok.npz", build_zip({{"w.npy", npy<float>("<f4", {1, 3}, three)}}).bytes);
  const NpzFile f = NpzFile::open(path);
  expect_names(error_of([&] { f.tensor_as("w", {3, 1}, DType::f32); }), {path, "'w'", "[1, 3]", "expected [3, 1]"});
  expect_names(error_of([&] { f.tensor("missing"); }), {path, "no array 'missing'"});
  expect_names(error_of([&] { f.shape_of("missing"); }), {path, "no array 'missing'"});
  expect_names(error_of([&] { f.tensor_as("missing", {3}, DType::f32); }), {path, "no array 'missing'"});
  EXPECT_FALSE(f.contains("missing"));
  EXPECT_TRUE(f.contains("w"));
}

TEST_F(NpzErrors, MembersThatAreNotArraysOrNotReadable) {
  const auto a = npy<float>("<f4", {1}, {1});
  std::string p = write("method.npz", build_zip({{"w.npy", a, false, 12}}).bytes);  // bzip2
  expect_names(error_of([&] { NpzFile::open(p); }), {p, "'w.npy'", "compression method 12"});
  p = write("name.npz", build_zip({{"w.npy", a}, {"readme.txt", {'h', 'i'}}}).bytes);
  expect_names(error_of([&] { NpzFile::open(p); }), {p, "'readme.txt'", "not a .npy array"});
  p = write("twice.npz", build_zip({{"w.npy", a}, {"w.npy", a}}).bytes);
  expect_names(error_of([&] { NpzFile::open(p); }), {p, "'w.npy'", "two members"});
  std::vector<uint8_t> encrypted = build_zip({{"w.npy", a}}).bytes;
  const size_t central = encrypted.size() - 22 - 46 - 5;
  encrypted[central + 8] |= 1;
  p = write("encrypted.npz", encrypted);
  expect_names(error_of([&] { NpzFile::open(p); }), {p, "'w.npy'", "encrypted"});
}

}  // namespace
}  // namespace kd
