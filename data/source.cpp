// The parts shared by every source: the factory, subsets and the balanced choice.
// The kinds themselves live in idx_source.cpp and folder_source.cpp.
#include "data/source.h"

#include <algorithm>
#include <random>

#include "data/shard_source.h"

namespace kd {

const std::vector<std::string>& DataSource::class_names() const {
  static const std::vector<std::string> none;
  return none;
}

std::string DataSource::file_path(int64_t) const { return std::string(); }
int DataSource::shard(int64_t) const { return -1; }

void DataSource::check_index(int64_t i) const {
  KD_CHECK(i >= 0 && i < size(), "image index ", i, " out of range for ", describe());
}

Image DataSource::load_view(int64_t i, const ViewNeedFn&) const { return load(i); }

SourcePtr open_source(const std::string& kind, const std::string& path, const SourceOptions& options) {
  if (kind == "idx") {
    std::string labels = options.labels;
    if (labels.empty()) {
      // "train-images-idx3-ubyte.gz" -> "train-labels-idx1-ubyte.gz" (also "images.idx3").
      const size_t slash = path.find_last_of('/');
      const size_t name = slash == std::string::npos ? 0 : slash + 1;
      const size_t images = path.rfind("images");
      const size_t idx3 = path.rfind("idx3");
      KD_CHECK(images != std::string::npos && idx3 != std::string::npos && images >= name && idx3 > images,
               "cannot derive the labels file from '", path,
               "' (expected 'images' and 'idx3' in the file name); give it as the labels option");
      labels = path;
      labels.replace(idx3, 4, "idx1");
      labels.replace(images, 6, "labels");
    }
    return open_idx(path, labels);
  }
  if (kind == "fashion-mnist") return open_fashion_mnist(path, options.root.empty() ? kFashionMnistDir : options.root);
  const DecodeSettings decode{options.jpeg_decoder, options.max_pixels};
  if (kind == "image_folder" || kind == "folder") return open_image_folder(path, decode);
  if (kind == "list") return open_list_file(path, options.root, decode);
  if (kind == "images") return open_unlabelled_images(path, decode);
  if (kind == "shards") return open_shards(path, decode, options.cached_shards);
  KD_FAIL("unknown data source kind '", kind, "' for '", path,
          "'; known kinds: idx, fashion-mnist, image_folder, list, images, shards");
}

// ---- subset ----------------------------------------------------------------------------------

namespace {

class SubsetSource final : public DataSource {
 public:
  SubsetSource(SourcePtr parent, std::vector<int64_t> indices)
      : parent_(std::move(parent)), indices_(std::move(indices)) {}
  int64_t size() const override { return int64_t(indices_.size()); }
  int num_classes() const override { return parent_->num_classes(); }
  const std::vector<std::string>& class_names() const override { return parent_->class_names(); }
  int label(int64_t i) const override { return parent_->label(map(i)); }
  Image load(int64_t i) const override { return parent_->load(map(i)); }
  Image load_view(int64_t i, const ViewNeedFn& need) const override { return parent_->load_view(map(i), need); }
  std::string where(int64_t i) const override { return parent_->where(map(i)); }
  std::string file_path(int64_t i) const override { return parent_->file_path(map(i)); }
  int shard(int64_t i) const override { return parent_->shard(map(i)); }
  std::string describe() const override {
    return "subset of " + std::to_string(indices_.size()) + " images of " + parent_->describe();
  }

 private:
  int64_t map(int64_t i) const {
    check_index(i);
    return indices_[size_t(i)];
  }
  SourcePtr parent_;
  std::vector<int64_t> indices_;
};

// A uniform integer in [0, n) from a 64-bit generator, by rejection: the same on every platform
// (std::uniform_int_distribution is not specified bit for bit, so we don't use it).
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;  // largest multiple of n, exclusive
  uint64_t x;
  do x = rng();
  while (x >= limit);
  return x % n;
}

}  // namespace

SourcePtr subset(SourcePtr source, std::vector<int64_t> indices) {
  KD_CHECK(source != nullptr, "subset of a null source");
  for (int64_t i : indices)
    KD_CHECK(i >= 0 && i < source->size(), "subset index ", i, " out of range for ", source->describe());
  return std::make_shared<SubsetSource>(std::move(source), std::move(indices));
}

std::vector<int64_t> balanced_indices(const DataSource& source, int64_t count, uint64_t seed) {
  const int classes = source.num_classes();
  KD_CHECK(classes > 0, "balanced subset of ", source.describe(), ": the source has no classes");
  KD_CHECK(count > 0 && count <= source.size(), "balanced subset of ", count, " images of ", source.describe());
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(classes));
  for (int64_t i = 0; i < source.size(); ++i) {
    const int label = source.label(i);
    KD_CHECK(label >= 0 && label < classes, source.where(i), ": label ", label, " outside [0, ", classes, ")");
    by_class[size_t(label)].push_back(i);
  }
  std::mt19937_64 rng(seed);
  std::vector<int64_t> chosen;
  chosen.reserve(size_t(count));
  for (int c = 0; c < classes; ++c) {
    const int64_t want = count / classes + (c < count % classes ? 1 : 0);
    std::vector<int64_t>& pool = by_class[size_t(c)];
    if (int64_t(pool.size()) < want) {
      const auto& names = source.class_names();
      KD_FAIL("balanced subset of ", count, " images of ", source.describe(), ": class ", c,
              (size_t(c) < names.size() ? " '" + names[size_t(c)] + "'" : std::string()), " has ",
              pool.size(), " images, ", want, " needed");
    }
    // Partial Fisher-Yates: the first `want` entries become a uniform random choice.
    for (int64_t k = 0; k < want; ++k) {
      const int64_t j = k + int64_t(uniform_below(rng, uint64_t(pool.size()) - uint64_t(k)));
      std::swap(pool[size_t(k)], pool[size_t(j)]);
      chosen.push_back(pool[size_t(k)]);
    }
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

SourcePtr balanced_subset(SourcePtr source, int64_t count, uint64_t seed) {
  KD_CHECK(source != nullptr, "balanced subset of a null source");
  std::vector<int64_t> chosen = balanced_indices(*source, count, seed);
  return subset(std::move(source), std::move(chosen));
}

}  // namespace kd
