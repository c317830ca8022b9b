// IDX files, the format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/):
//
//   bytes 0-1   zero
//   byte  2     element type: 0x08 unsigned byte (the only one used for images and labels;
//               0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64 are rejected)
//   byte  3     number of dimensions d
//   d x int32   size of each dimension, big-endian
//   then        the elements, row-major, the last dimension fastest
//
// So an images file starts with 0x00000803 (N x rows x cols) and a labels file with 0x00000801
// (N). We also accept 4-d images (N x rows x cols x channels, channels 1 or 3). Files may be
// gzipped: zlib's gzread passes uncompressed files through unchanged, so one reader serves both.
// The whole images file is held in memory (Fashion-MNIST train: 60000 x 28 x 28 = 47 MB).
#include <zlib.h>

#include <algorithm>
#include <filesystem>

#include "data/source.h"

namespace kd {

namespace {

namespace fs = std::filesystem;

const char* idx_type_name(uint8_t type) {
  switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "unknown";
  }
}

// The decompressed (or raw) contents of a file.
std::vector<uint8_t> read_maybe_gzipped(const std::string& path) {
  std::error_code ec;
  KD_CHECK(fs::exists(path, ec), "IDX file not found: ", path);
  KD_CHECK(fs::is_regular_file(path, ec), "IDX path is not a file: ", path);
  gzFile file = gzopen(path.c_str(), "rb");
  KD_CHECK(file != nullptr, "cannot open IDX file ", path);
  gzbuffer(file, 1 << 20);
  std::vector<uint8_t> bytes;
  // Chunks grow with the file: small files (the tests, the fuzzer) stay cheap, big ones take
  // few calls.
  for (unsigned chunk = 1 << 16;; chunk = std::min(2 * chunk, 1u << 22)) {
    const size_t old_size = bytes.size();
    bytes.resize(old_size + chunk);
    const int got = gzread(file, bytes.data() + old_size, chunk);
    if (got < 0) {
      int code = 0;
      const std::string why = gzerror(file, &code);
      gzclose(file);
      KD_FAIL("cannot read IDX file ", path, ": ", why);
    }
    bytes.resize(old_size + size_t(got));
    if (got == 0) break;
  }
  // gzclose reports a gzip stream that ended early (a truncated download) as Z_BUF_ERROR.
  const int closed = gzclose(file);
  KD_CHECK(closed == Z_OK, "IDX file ", path, " is truncated or not a valid gzip stream (zlib error ", closed, ")");
  bytes.shrink_to_fit();
  return bytes;
}

struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> bytes;  // the whole file; elements start at `offset`
  size_t offset = 0;
  const uint8_t* data() const { return bytes.data() + offset; }
};

// Reads and validates one IDX file of unsigned bytes; `what` is "images" or "labels" for messages.
IdxArray read_idx(const std::string& path, const char* what) {
  IdxArray a;
  a.bytes = read_maybe_gzipped(path);
  const std::vector<uint8_t>& b = a.bytes;
  KD_CHECK(b.size() >= 4 && b[0] == 0 && b[1] == 0, path, " is not an IDX ", what,
           " file (it does not start with two zero bytes)");
  static const char* kHex = "0123456789ABCDEF";
  KD_CHECK(b[2] == 0x08, path, ": IDX element type 0x", kHex[b[2] >> 4], kHex[b[2] & 15], " (",
           idx_type_name(b[2]), ") is not supported, only unsigned bytes (0x08)");
  const int ndims = b[3];
  KD_CHECK(ndims >= 1, path, ": IDX file with zero dimensions");
  a.offset = 4 + size_t(ndims) * 4;
  KD_CHECK(b.size() >= a.offset, path, ": IDX header of ", ndims, " dimensions is truncated");
  int64_t elements = 1;
  for (int d = 0; d < ndims; ++d) {
    const uint8_t* p = b.data() + 4 + d * 4;
    const uint32_t n = uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
    KD_CHECK(n < (1u << 31), path, ": IDX dimension ", d, " has an impossible size ", n);
    a.dims.push_back(int64_t(n));
    // Checked before multiplying: 2^40 x 2^31 would overflow int64.
    KD_CHECK(n == 0 || elements < (int64_t(1) << 40) / int64_t(n), path,
             ": IDX dimensions too large (2^40 elements or more)");
    elements *= int64_t(n);
  }
  const int64_t payload = int64_t(b.size() - a.offset);
  KD_CHECK(payload == elements, path, ": IDX header promises ", elements, " bytes of ", what, " but the file holds ",
           payload, payload < elements ? " (truncated)" : " (trailing data)");
  return a;
}

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? " x " : "") + std::to_string(dims[i]);
  return s;
}

class IdxSource final : public DataSource {
 public:
  IdxSource(const std::string& images_path, const std::string& labels_path, std::vector<std::string> names)
      : path_(images_path), names_(std::move(names)) {
    images_ = read_idx(images_path, "images");
    const IdxArray labels = read_idx(labels_path, "labels");
    const auto& d = images_.dims;
    KD_CHECK(d.size() == 3 || (d.size() == 4 && (d[3] == 1 || d[3] == 3)), images_path,
             ": IDX images must be N x rows x cols (or N x rows x cols x 1|3), this file is ", dims_str(d));
    KD_CHECK(labels.dims.size() == 1, labels_path, ": IDX labels must be one-dimensional, this file is ",
             dims_str(labels.dims));
    KD_CHECK(d[0] > 0, images_path, " holds no images");
    KD_CHECK(labels.dims[0] == d[0], "IDX files disagree: ", images_path, " holds ", d[0], " images but ",
             labels_path, " holds ", labels.dims[0], " labels");
    KD_CHECK(d[1] > 0 && d[2] > 0, images_path, ": IDX images of ", d[1], " x ", d[2], " pixels");
    rows_ = int(d[1]);
    cols_ = int(d[2]);
    file_channels_ = d.size() == 4 ? int(d[3]) : 1;
    labels_.assign(labels.data(), labels.data() + labels.dims[0]);
    const int largest = *std::max_element(labels_.begin(), labels_.end());
    if (names_.empty()) {
      classes_ = largest + 1;
    } else {
      classes_ = int(names_.size());
      for (size_t i = 0; i < labels_.size(); ++i)
        KD_CHECK(labels_[i] < classes_, labels_path, ": label ", int(labels_[i]), " of image #", i,
                 " but the dataset has ", classes_, " classes");
    }
  }

  int64_t size() const override { return int64_t(labels_.size()); }
  int num_classes() const override { return classes_; }
  const std::vector<std::string>& class_names() const override { return names_; }
  int label(int64_t i) const override {
    check_index(i);
    return labels_[size_t(i)];
  }
  std::string where(int64_t i) const override { return path_ + " #" + std::to_string(i); }
  std::string describe() const override {
    return "idx " + path_ + " (" + std::to_string(size()) + " images of " + std::to_string(rows_) + "x" +
           std::to_string(cols_) + ", " + std::to_string(classes_) + " classes)";
  }

  Image load(int64_t i) const override {
    check_index(i);
    Image image;
    image.height = rows_;
    image.width = cols_;
    image.label = labels_[size_t(i)];
    const size_t pixels = size_t(rows_) * size_t(cols_);
    const uint8_t* src = images_.data() + size_t(i) * pixels * size_t(file_channels_);
    if (file_channels_ == 3) {
      image.pixels.assign(src, src + pixels * 3);
    } else {
      image.pixels.resize(pixels * 3);
      for (size_t p = 0; p < pixels; ++p)
        image.pixels[3 * p] = image.pixels[3 * p + 1] = image.pixels[3 * p + 2] = src[p];
    }
    return image;
  }

 private:
  std::string path_;
  std::vector<std::string> names_;
  IdxArray images_;
  std::vector<uint8_t> labels_;
  int rows_ = 0, cols_ = 0, file_channels_ = 1, classes_ = 0;
};

}  // namespace

SourcePtr open_idx(const std::string& images_path, const std::string& labels_path,
                   std::vector<std::string> class_names) {
  return std::make_shared<IdxSource>(images_path, labels_path, std::move(class_names));
}

SourcePtr open_idx_split(const std::string& folder, const std::string& split,
                         std::vector<std::string> class_names) {
  KD_CHECK(split == "train" || split == "test", "IDX split must be 'train' or 'test', not '", split, "'");
  std::error_code ec;
  KD_CHECK(fs::is_directory(folder, ec), "IDX dataset folder not found: ", folder);
  const std::string stem = split == "train" ? "train" : "t10k";
  // Prefer the gzipped files (as distributed), fall back to unpacked ones.
  auto find = [&](const std::string& kind) {
    const fs::path base = fs::path(folder) / (stem + "-" + kind + "-ubyte");
    const fs::path gz = fs::path(base.string() + ".gz");
    if (fs::exists(gz, ec)) return gz.string();
    if (fs::exists(base, ec)) return base.string();
    KD_FAIL("IDX dataset folder ", folder, " has neither ", gz.filename().string(), " nor ",
            base.filename().string());
  };
  const std::string images = find("images-idx3");
  const std::string labels = find("labels-idx1");
  return open_idx(images, labels, std::move(class_names));
}

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

SourcePtr open_fashion_mnist(const std::string& split, const std::string& folder) {
  return open_idx_split(folder, split, fashion_mnist_class_names());
}

}  // namespace kd
