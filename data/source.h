// Data sources: an indexed collection of labelled images. A source knows how many images it has
// and every label without decoding anything (the sampler and the balanced subset need labels up
// front); load(i) decodes one image. Sources are immutable after opening, and every method is
// const and safe to call from several loader threads at once.
//
// Kinds (open_source):
//   "idx"           MNIST-style IDX files: the images file is `path`, the labels file is
//                   options.labels, or else derived from the name ("-images-idx3-" -> "-labels-idx1-").
//                   Gzipped or raw. All images are held in memory; load(i) only copies.
//   "fashion-mnist" `path` is the split, "train" or "test"; the four files are looked up in
//                   options.root (default kFashionMnistDir, where Debian's dataset-fashion-mnist
//                   installs them). Knows the ten class names.
//   "image_folder"  root/<class>/.../<image>.{jpg,jpeg,png,bmp}; classes are the sub-folders
//                   sorted by name, label = position in that order; images sorted by path.
//   "list"          a text file of `relative/path label` lines (see open_list_file).
//   "images"        every image below a folder, without labels (label -1, no classes): images to
//                   distill on (the teacher labels them), not to train or evaluate on.
//   "shards"        a folder written by kd pack: tar shards and their index (data/shard_source.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/image.h"

namespace kd {

class DataSource {
 public:
  virtual ~DataSource() = default;
  virtual int64_t size() const = 0;
  virtual int num_classes() const = 0;
  // Names of the classes in label order, or empty when the source does not know them.
  virtual const std::vector<std::string>& class_names() const;
  virtual int label(int64_t i) const = 0;  // without decoding
  // Decodes image i. Throws DecodeError for an unreadable image, kd::Error for anything else.
  virtual Image load(int64_t i) const = 0;
  // Decodes what the views of image i read (data/image.h ViewNeed), where the source's decoder
  // can do less than the whole image; the Image says where its pixels sit. Default: load(i).
  virtual Image load_view(int64_t i, const ViewNeedFn& need) const;
  // Where image i comes from, for messages: a path, or "train-images-idx3-ubyte.gz #123".
  virtual std::string where(int64_t i) const = 0;
  // One line for logs: "image_folder /data/flowers (1020 images, 102 classes)".
  virtual std::string describe() const = 0;
  // The file image i is read from when it is a file of its own (image_folder, list, images), else "".
  virtual std::string file_path(int64_t i) const;
  // The packed shard that stores image i (shards), or -1: lets the sampler read shard by shard.
  virtual int shard(int64_t i) const;

 protected:
  void check_index(int64_t i) const;  // throws a kd::Error naming the source when i is out of range
};

using SourcePtr = std::shared_ptr<const DataSource>;

constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

struct SourceOptions {
  std::string labels;  // idx: the labels file (default: derived from the images file name)
  std::string root;    // list: folder the listed paths are relative to (default: the list's folder)
                       // fashion-mnist: folder of the IDX files (default kFashionMnistDir)
  JpegDecoder jpeg_decoder = JpegDecoder::stb;  // image files: who decodes JPEGs (data/image.h)
  int64_t max_pixels = kDefaultMaxImagePixels;  // image files: larger headers are refused unread
  int cached_shards = 8;                         // shards: whole shards kept in memory (data/shard_source.h)
};

// Opens a source of the given kind (see the top of this file). Errors name the path.
SourcePtr open_source(const std::string& kind, const std::string& path, const SourceOptions& options = {});

// IDX images + labels. `class_names` may be empty (then num_classes = largest label + 1).
SourcePtr open_idx(const std::string& images_path, const std::string& labels_path,
                   std::vector<std::string> class_names = {});
// "train" or "test" of an MNIST-layout folder: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz].
SourcePtr open_idx_split(const std::string& folder, const std::string& split,
                         std::vector<std::string> class_names = {});
SourcePtr open_fashion_mnist(const std::string& split, const std::string& folder = kFashionMnistDir);
const std::vector<std::string>& fashion_mnist_class_names();

SourcePtr open_image_folder(const std::string& root, DecodeSettings decode = {});
SourcePtr open_unlabelled_images(const std::string& root, DecodeSettings decode = {});

// List file: one image per line, `relative/path label`. The label is the last whitespace-separated
// field, a non-negative integer; the path is everything before it (so paths may hold spaces).
// Blank lines are skipped; a '#' at the start of a field starts a comment to the end of the line.
// Paths are relative to `root` (default: the folder of the list file); absolute paths stay as
// they are. Errors name the list file and the line number. Files are not opened until loaded.
SourcePtr open_list_file(const std::string& list_path, const std::string& root = "",
                         DecodeSettings decode = {});

// A view of some images of `source`, in the given order (repeats allowed).
SourcePtr subset(SourcePtr source, std::vector<int64_t> indices);

// A class-balanced choice of `count` images: count / C of every class, the first count % C
// classes one more. Which images is decided by `seed` alone (mt19937_64 and our own shuffle, so
// the choice is the same with every standard library). Returned sorted ascending. Throws when a
// class has too few images.
std::vector<int64_t> balanced_indices(const DataSource& source, int64_t count, uint64_t seed);
SourcePtr balanced_subset(SourcePtr source, int64_t count, uint64_t seed);

}  // namespace kd
