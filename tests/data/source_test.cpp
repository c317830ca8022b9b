#include "data/source.h"

#include <gtest/gtest.h>

#include "tests/support/testing.h"

#include <map>

#include "tests/data/data_fixtures.h"

namespace kd {
namespace {

using test::error_of;

using test::TempDir;
namespace fs = std::filesystem;

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

// ---- IDX ---------------------------------------------------------------------------------------

struct IdxFiles {
  std::vector<uint8_t> pixels, labels;
  std::string images_path, labels_path;
};

IdxFiles write_idx(const TempDir& dir, const std::string& stem, uint32_t n, uint32_t rows, uint32_t cols,
                   bool gzipped) {
  IdxFiles f;
  f.pixels = test::random_bytes(size_t(n) * rows * cols, 11);
  f.labels.resize(n);
  for (uint32_t i = 0; i < n; ++i) f.labels[i] = uint8_t((i * 7) % 5);
  const std::string suffix = gzipped ? ".gz" : "";
  f.images_path = dir.file(stem + "-images-idx3-ubyte" + suffix);
  f.labels_path = dir.file(stem + "-labels-idx1-ubyte" + suffix);
  auto write = gzipped ? test::write_gzip : test::write_bytes;
  write(f.images_path, test::idx_bytes({n, rows, cols}, f.pixels, 0x08));
  write(f.labels_path, test::idx_bytes({n}, f.labels, 0x08));
  return f;
}

TEST(IdxSource, RawAndGzippedFilesGiveTheSameImagesBroadcastToRgb) {
  TempDir dir;
  const IdxFiles raw = write_idx(dir, "raw", 9, 4, 3, false);
  const IdxFiles gz = write_idx(dir, "gz", 9, 4, 3, true);
  for (const IdxFiles* f : {&raw, &gz}) {
    SourcePtr s = open_idx(f->images_path, f->labels_path);
    ASSERT_EQ(s->size(), 9);
    EXPECT_EQ(s->num_classes(), 5);  // largest label 4, no names given
    EXPECT_TRUE(s->class_names().empty());
    for (int64_t i = 0; i < 9; ++i) {
      EXPECT_EQ(s->label(i), f->labels[size_t(i)]);
      const Image im = s->load(i);
      ASSERT_EQ(im.height, 4);
      ASSERT_EQ(im.width, 3);
      EXPECT_EQ(im.label, f->labels[size_t(i)]);
      for (int y = 0; y < 4; ++y)
        for (int x = 0; x < 3; ++x)
          for (int c = 0; c < 3; ++c) ASSERT_EQ(im.at(y, x)[c], f->pixels[size_t(i) * 12 + size_t(y) * 3 + x]);
    }
    EXPECT_EQ(s->where(5), f->images_path + " #5");
  }
}

TEST(IdxSource, OpenSourceDerivesTheLabelsFileFromTheImagesFile) {
  TempDir dir;
  const IdxFiles f = write_idx(dir, "train", 6, 2, 2, true);
  SourcePtr s = open_source("idx", f.images_path);
  EXPECT_EQ(s->size(), 6);
  EXPECT_EQ(s->label(3), f.labels[3]);
}

TEST(IdxSource, OpensATrainTestFolderWithClassNames) {
  TempDir dir;
  write_idx(dir, "train", 8, 3, 3, true);
  write_idx(dir, "t10k", 4, 3, 3, false);  // unpacked files are found too
  const std::vector<std::string> names = {"a", "b", "c", "d", "e", "f"};
  EXPECT_EQ(open_idx_split(dir.str(), "train", names)->size(), 8);
  SourcePtr test = open_idx_split(dir.str(), "test", names);
  EXPECT_EQ(test->size(), 4);
  EXPECT_EQ(test->num_classes(), 6);
  EXPECT_EQ(test->class_names(), names);
  EXPECT_CONTAINS(error_of([&] { open_idx_split(dir.str(), "val"); }), "'train' or 'test'");
  EXPECT_CONTAINS(error_of([&] { open_idx_split(dir.str() + "/nowhere", "train"); }), dir.str() + "/nowhere");
}

TEST(IdxSource, BadFilesAreClearErrorsNamingThePath) {
  TempDir dir;
  const IdxFiles f = write_idx(dir, "ok", 5, 2, 2, false);
  const std::string missing = dir.str() + "/missing-images-idx3-ubyte";
  EXPECT_CONTAINS(error_of([&] { open_idx(missing, f.labels_path); }), missing);

  const std::string not_idx = dir.file("text-images-idx3-ubyte");
  test::write_text(not_idx, "hello world");
  EXPECT_CONTAINS(error_of([&] { open_idx(not_idx, f.labels_path); }), not_idx);

  const std::string floats = dir.file("float-images-idx3-ubyte");
  test::write_bytes(floats, test::idx_bytes({5, 2, 2}, std::vector<uint8_t>(80), 0x0D));
  EXPECT_CONTAINS(error_of([&] { open_idx(floats, f.labels_path); }), "float32");

  const std::string truncated = dir.file("short-images-idx3-ubyte");
  test::write_bytes(truncated, test::idx_bytes({5, 2, 2}, std::vector<uint8_t>(19)));
  EXPECT_CONTAINS(error_of([&] { open_idx(truncated, f.labels_path); }), "truncated");

  const std::string fewer_labels = dir.file("few-labels-idx1-ubyte");
  test::write_bytes(fewer_labels, test::idx_bytes({4}, {0, 1, 2, 3}));
  const std::string msg = error_of([&] { open_idx(f.images_path, fewer_labels); });
  EXPECT_CONTAINS(msg, "5 images");
  EXPECT_CONTAINS(msg, "4 labels");

  const std::string cut_gz = dir.file("cut-images-idx3-ubyte.gz");
  {
    test::write_gzip(cut_gz, test::idx_bytes({5, 2, 2}, test::random_bytes(20, 3)));
    std::vector<uint8_t> bytes(fs::file_size(cut_gz));
    std::ifstream(cut_gz, std::ios::binary).read(reinterpret_cast<char*>(bytes.data()), std::streamsize(bytes.size()));
    bytes.resize(bytes.size() - 12);  // lose the tail of the gzip stream
    test::write_bytes(cut_gz, bytes);
  }
  EXPECT_CONTAINS(error_of([&] { open_idx(cut_gz, f.labels_path); }), cut_gz);

  const std::string empty = dir.file("empty-images-idx3-ubyte");
  test::write_bytes(empty, test::idx_bytes({0, 2, 2}, {}));
  const std::string no_labels = dir.file("empty-labels-idx1-ubyte");
  test::write_bytes(no_labels, test::idx_bytes({0}, {}));
  EXPECT_CONTAINS(error_of([&] { open_idx(empty, no_labels); }), "no images");
}

// ---- image decoding and ImageFolder ------------------------------------------------------------

TEST(ImageDecode, PngAndBmpRoundTripExactly) {
  TempDir dir;
  const auto px = test::gradient(7, 5, 3);
  test::write_png(dir.file("g.png"), 7, 5, 3, px);
  test::write_bmp(dir.file("g.bmp"), 7, 5, 3, px);
  for (const char* name : {"g.png", "g.bmp"}) {
    const Image im = read_image_file(dir.str() + "/" + name);
    ASSERT_EQ(im.width, 7);
    ASSERT_EQ(im.height, 5);
    EXPECT_EQ(im.pixels, px) << name;
  }
}

TEST(ImageDecode, GrayscaleIsBroadcastAndAlphaDropped) {
  TempDir dir;
  const auto gray = test::gradient(6, 4, 1);
  test::write_png(dir.file("gray.png"), 6, 4, 1, gray);
  const Image g = read_image_file(dir.str() + "/gray.png");
  ASSERT_EQ(g.pixels.size(), size_t(6 * 4 * 3));
  for (size_t p = 0; p < gray.size(); ++p)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(g.pixels[p * 3 + c], gray[p]);

  const auto rgba = test::gradient(6, 4, 4);
  test::write_png(dir.file("rgba.png"), 6, 4, 4, rgba);
  const Image a = read_image_file(dir.str() + "/rgba.png");
  ASSERT_EQ(a.pixels.size(), size_t(6 * 4 * 3));
  for (size_t p = 0; p < 24; ++p)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(a.pixels[p * 3 + c], rgba[p * 4 + c]);
}

TEST(ImageDecode, JpegDecodesCloseToTheOriginal) {
  TempDir dir;
  std::vector<uint8_t> px(16 * 16 * 3);
  for (size_t p = 0; p < 256; ++p) px[p * 3] = 200, px[p * 3 + 1] = 90, px[p * 3 + 2] = 30;
  test::write_jpg(dir.file("flat.jpg"), 16, 16, 3, px);
  const Image im = read_image_file(dir.str() + "/flat.jpg");
  ASSERT_EQ(im.pixels.size(), px.size());
  for (size_t i = 0; i < px.size(); ++i) ASSERT_NEAR(int(im.pixels[i]), int(px[i]), 4) << "byte " << i;
}

TEST(ImageDecode, CorruptOrMissingFilesThrowDecodeErrorNamingThem) {
  TempDir dir;
  const std::string junk = dir.file("junk.jpg");
  test::write_bytes(junk, test::random_bytes(3000, 5));
  try {
    read_image_file(junk);
    FAIL() << "no error";
  } catch (const DecodeError& e) {
    EXPECT_EQ(e.origin(), junk);
    EXPECT_FALSE(e.reason().empty());
  }
  EXPECT_THROW(read_image_file(dir.str() + "/absent.png"), DecodeError);
  test::write_bytes(dir.file("empty.png"), {});
  EXPECT_THROW(read_image_file(dir.str() + "/empty.png"), DecodeError);
  // A PNG cut in half: the header is fine, the pixel data is not.
  test::write_png(dir.file("whole.png"), 32, 32, 3, test::random_bytes(32 * 32 * 3, 9));
  std::vector<uint8_t> bytes(fs::file_size(dir.str() + "/whole.png"));
  std::ifstream(dir.str() + "/whole.png", std::ios::binary)
      .read(reinterpret_cast<char*>(bytes.data()), std::streamsize(bytes.size()));
  bytes.resize(bytes.size() / 2);
  EXPECT_THROW(decode_image(bytes.data(), bytes.size(), "half.png"), DecodeError);
}

TEST(ImageFolder, ClassesAndFilesAreSortedAndExtensionsCaseInsensitive) {
  TempDir dir;
  const std::string root = dir.str();
  test::write_flat_png(dir.file("zebra/b.png"), 2, 2, 10);
  test::write_flat_png(dir.file("zebra/a.PNG"), 2, 2, 11);
  test::write_flat_png(dir.file("apple/x.Jpg"), 2, 2, 12);  // PNG bytes, decoded by content
  test::write_flat_png(dir.file("apple/deep/y.bmp"), 2, 2, 13);
  test::write_flat_png(dir.file("mango/m.jpeg"), 3, 1, 14);
  test::write_text(dir.file("mango/notes.txt"), "not an image");
  test::write_flat_png(dir.file("mango/.hidden.png"), 2, 2, 99);
  test::write_flat_png(dir.file(".git/ignored.png"), 2, 2, 99);
  test::write_text(dir.file("README.md"), "files at the top are not classes");
  fs::create_directories(root + "/empty_class");

  SourcePtr s = open_source("image_folder", root + "/");
  EXPECT_EQ(s->class_names(), (std::vector<std::string>{"apple", "empty_class", "mango", "zebra"}));
  EXPECT_EQ(s->num_classes(), 4);
  ASSERT_EQ(s->size(), 5);
  const std::vector<std::string> where = {"apple/deep/y.bmp", "apple/x.Jpg", "mango/m.jpeg", "zebra/a.PNG",
                                          "zebra/b.png"};
  const std::vector<int> labels = {0, 0, 2, 3, 3};
  const std::vector<int> values = {13, 12, 14, 11, 10};
  for (int64_t i = 0; i < 5; ++i) {
    EXPECT_EQ(s->where(i), root + "/" + where[size_t(i)]);
    EXPECT_EQ(s->label(i), labels[size_t(i)]);
    const Image im = s->load(i);
    EXPECT_EQ(im.label, labels[size_t(i)]);
    EXPECT_EQ(im.pixels[0], values[size_t(i)]);
  }
  EXPECT_EQ(s->load(2).width, 3);
  EXPECT_CONTAINS(s->describe(), "5 images, 4 classes");
}

TEST(ImageFolder, MissingOrEmptyFoldersAreErrorsNamingThePath) {
  TempDir dir;
  EXPECT_CONTAINS(error_of([&] { open_image_folder(dir.str() + "/absent"); }), dir.str() + "/absent");
  EXPECT_CONTAINS(error_of([&] { open_image_folder(dir.str()); }), "no class folders");
  test::write_text(dir.file("cats/readme.txt"), "no images here");
  const std::string msg = error_of([&] { open_image_folder(dir.str()); });
  EXPECT_CONTAINS(msg, "no images");
  EXPECT_CONTAINS(msg, dir.str());
}

// ---- list files --------------------------------------------------------------------------------

TEST(ListFile, ParsesPathsLabelsCommentsAndBlankLines) {
  TempDir dir;
  test::write_flat_png(dir.file("imgs/a.png"), 2, 2, 1);
  test::write_flat_png(dir.file("imgs/with space.png"), 2, 2, 2);
  test::write_flat_png(dir.file("imgs/hash#name.png"), 2, 2, 3);
  test::write_text(dir.file("lists/train.txt"),
                   "# header comment\n"
                   "\n"
                   "imgs/a.png 3\n"
                   "   imgs/with space.png\t7   # trailing comment\r\n"
                   "imgs/hash#name.png 0\n"
                   "   \n");
  SourcePtr s = open_list_file(dir.str() + "/lists/train.txt", dir.str());
  ASSERT_EQ(s->size(), 3);
  EXPECT_EQ(s->num_classes(), 8);
  EXPECT_EQ(s->label(0), 3);
  EXPECT_EQ(s->label(1), 7);
  EXPECT_EQ(s->label(2), 0);
  EXPECT_EQ(s->load(1).pixels[0], 2);
  EXPECT_EQ(s->load(2).pixels[0], 3);
  EXPECT_CONTAINS(s->where(1), "with space.png");
  EXPECT_CONTAINS(s->where(1), "train.txt:4");

  // Without a root, paths are relative to the list's own folder.
  test::write_text(dir.file("imgs/list.txt"), "a.png 1\n");
  SourcePtr local = open_source("list", dir.str() + "/imgs/list.txt");
  EXPECT_EQ(local->load(0).pixels[0], 1);
}

TEST(ListFile, ErrorsNameTheFileAndLine) {
  TempDir dir;
  const std::string list = dir.file("bad.txt");
  test::write_text(list, "a.png 1\n# fine\nb.png one\n");
  EXPECT_CONTAINS(error_of([&] { open_list_file(list); }), list + ":3: label 'one'");
  test::write_text(list, "a.png 1\nb.png -2\n");
  EXPECT_CONTAINS(error_of([&] { open_list_file(list); }), list + ":2:");
  test::write_text(list, "\n\njust_a_path.png\n");
  EXPECT_CONTAINS(error_of([&] { open_list_file(list); }), list + ":3: expected '<path> <label>'");
  test::write_text(list, "# only comments\n\n");
  EXPECT_CONTAINS(error_of([&] { open_list_file(list); }), "lists no images");
  EXPECT_CONTAINS(error_of([&] { open_list_file(dir.str() + "/absent.txt"); }), dir.str() + "/absent.txt");
  test::write_text(list, "a.png 1\n");
  EXPECT_CONTAINS(error_of([&] { open_list_file(list, dir.str() + "/no_root"); }), dir.str() + "/no_root");
}

TEST(ListFile, AMissingImageIsADecodeErrorAtLoadNotAtOpen) {
  TempDir dir;
  const std::string list = dir.file("l.txt");
  test::write_text(list, "gone.png 0\n");
  SourcePtr s = open_list_file(list);
  try {
    s->load(0);
    FAIL() << "no error";
  } catch (const DecodeError& e) {
    EXPECT_CONTAINS(e.origin(), "gone.png");
    EXPECT_CONTAINS(e.origin(), "l.txt:1");
  }
}

TEST(OpenSource, UnknownKindListsTheKnownOnes) {
  const std::string msg = error_of([] { open_source("tfrecord", "/x"); });
  EXPECT_CONTAINS(msg, "tfrecord");
  EXPECT_CONTAINS(msg, "image_folder");
}

// ---- subsets -----------------------------------------------------------------------------------

TEST(Subset, MapsIndicesLabelsAndOrigins) {
  TempDir dir;
  const IdxFiles f = write_idx(dir, "s", 10, 2, 2, false);
  SourcePtr all = open_idx(f.images_path, f.labels_path);
  SourcePtr some = subset(all, {7, 2, 2});
  ASSERT_EQ(some->size(), 3);
  EXPECT_EQ(some->label(0), all->label(7));
  EXPECT_EQ(some->where(0), all->where(7));
  EXPECT_EQ(some->load(1).pixels, all->load(2).pixels);
  EXPECT_THROW(some->label(3), Error);
  EXPECT_THROW(subset(all, {10}), Error);
}

TEST(Subset, BalancedChoiceIsPerClassAndSeeded) {
  TempDir dir;
  const IdxFiles f = write_idx(dir, "b", 100, 1, 1, false);  // labels (7i mod 5): 20 per class
  SourcePtr all = open_idx(f.images_path, f.labels_path);
  const auto a = balanced_indices(*all, 25, 42);
  EXPECT_EQ(a, balanced_indices(*all, 25, 42));
  EXPECT_NE(a, balanced_indices(*all, 25, 43));
  ASSERT_EQ(a.size(), 25u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  std::map<int, int> per_class;
  for (int64_t i : a) ++per_class[all->label(i)];
  for (int c = 0; c < 5; ++c) EXPECT_EQ(per_class[c], 5);
  // 27 = 5 x 5 + 2: the first two classes get one more.
  per_class.clear();
  SourcePtr b = balanced_subset(all, 27, 1);
  for (int64_t i = 0; i < b->size(); ++i) ++per_class[b->label(i)];
  EXPECT_EQ(per_class[0], 6);
  EXPECT_EQ(per_class[1], 6);
  EXPECT_EQ(per_class[4], 5);
  // Keep only half of class 0: 60 images ask for 12 of a class that has 10.
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < 100; ++i)
    if (all->label(i) != 0 || i < 50) keep.push_back(i);
  SourcePtr lopsided = subset(all, keep);
  EXPECT_EQ(balanced_indices(*lopsided, 50, 0).size(), 50u);
  EXPECT_CONTAINS(error_of([&] { balanced_indices(*lopsided, 60, 0); }), "class 0 has 10 images, 12 needed");
}

// ---- the real Fashion-MNIST, when installed ----------------------------------------------------

TEST(FashionMnist, OpensTheInstalledDataset) {
  if (!fs::exists(std::string(kFashionMnistDir) + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST is not installed in " << kFashionMnistDir
                 << " (Debian package dataset-fashion-mnist)";
  SourcePtr train = open_source("fashion-mnist", "train");
  SourcePtr test = open_fashion_mnist("test");
  EXPECT_EQ(train->size(), 60000);
  EXPECT_EQ(test->size(), 10000);
  for (const SourcePtr& s : {train, test}) {
    EXPECT_EQ(s->num_classes(), 10);
    EXPECT_EQ(s->class_names().at(9), "Ankle boot");
    const Image im = s->load(s->size() - 1);
    EXPECT_EQ(im.height, 28);
    EXPECT_EQ(im.width, 28);
  }
  // The demo's training set: 1,020 images, 102 of each class.
  SourcePtr demo = balanced_subset(train, 1020, 0);
  std::map<int, int> per_class;
  for (int64_t i = 0; i < demo->size(); ++i) ++per_class[demo->label(i)];
  ASSERT_EQ(per_class.size(), 10u);
  for (const auto& [label, count] : per_class) EXPECT_EQ(count, 102) << "class " << label;
}

}  // namespace
}  // namespace kd
