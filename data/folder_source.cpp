// Sources of image files on disk: ImageFolder (the class is the folder) and list files (the class
// is written next to the path). Both become a table of (relative path, label); images are decoded
// from the file on every load, so nothing but the table is held in memory. The table keeps all
// relative paths in one string (an ImageNet-size folder is 1.28 M paths; one heap string each
// would cost twice the memory).
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>

#include "data/source.h"

namespace kd {

namespace {

namespace fs = std::filesystem;

class FileTableSource final : public DataSource {
 public:
  FileTableSource(std::string kind, std::string root, std::string list_path, DecodeSettings decode)
      : kind_(std::move(kind)), root_(std::move(root)), list_path_(std::move(list_path)), decode_(decode) {}

  void add(const std::string& relative_path, int label, int line = 0) {
    text_ += relative_path;
    ends_.push_back(text_.size());
    labels_.push_back(label);
    if (!list_path_.empty()) lines_.push_back(line);
  }
  void finish(std::vector<std::string> names, int classes) {
    names_ = std::move(names);
    classes_ = classes;
    text_.shrink_to_fit();
  }

  int64_t size() const override { return int64_t(labels_.size()); }
  int num_classes() const override { return classes_; }
  const std::vector<std::string>& class_names() const override { return names_; }
  int label(int64_t i) const override {
    check_index(i);
    return labels_[size_t(i)];
  }
  std::string file_path(int64_t i) const override { return path(i); }
  std::string path(int64_t i) const {
    check_index(i);
    const size_t begin = i == 0 ? 0 : ends_[size_t(i) - 1];
    const std::string relative = text_.substr(begin, ends_[size_t(i)] - begin);
    if (!relative.empty() && relative[0] == '/') return relative;
    return root_ + "/" + relative;
  }
  std::string where(int64_t i) const override {
    if (list_path_.empty()) return path(i);
    return path(i) + " (" + list_path_ + ":" + std::to_string(lines_[size_t(i)]) + ")";
  }
  std::string describe() const override {
    return kind_ + " " + (list_path_.empty() ? root_ : list_path_) + " (" + std::to_string(size()) + " images, " +
           std::to_string(classes_) + " classes" + (decode_.jpeg == JpegDecoder::turbo ? ", JPEGs by libjpeg-turbo" : "") + ")";
  }
  Image load(int64_t i) const override { return decode(i, nullptr); }
  Image load_view(int64_t i, const ViewNeedFn& need) const override { return decode(i, &need); }

 private:
  Image decode(int64_t i, const ViewNeedFn* need) const {
    Image image;
    try {
      image = read_image_file(path(i), decode_.jpeg, need, decode_.max_pixels);
    } catch (const DecodeError& e) {
      throw DecodeError(where(i), e.reason(), e.kind());  // the list line helps whoever fixes the list
    }
    image.label = labels_[size_t(i)];
    return image;
  }

  std::string kind_, root_, list_path_;
  DecodeSettings decode_;
  std::string text_;           // all relative paths, back to back
  std::vector<size_t> ends_;   // path i is text_[ends_[i-1], ends_[i])
  std::vector<int> labels_;
  std::vector<int> lines_;     // list files: the line each image was listed on
  std::vector<std::string> names_;
  int classes_ = 0;
};

bool is_hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

}  // namespace

// ---- ImageFolder: root/<class>/.../<image> -----------------------------------------------------
//
// Classes are the non-hidden sub-folders of root, sorted by name (byte order), and the label is
// the position in that order, as torchvision's ImageFolder does. Below each class folder the
// images are found recursively (hidden folders skipped, folder links not followed) and sorted by
// path. A class folder without images keeps its label, so train and validation folders with the
// same classes agree on the numbering.
SourcePtr open_image_folder(const std::string& root_arg, DecodeSettings decode) {
  std::string root = root_arg;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  std::error_code ec;
  KD_CHECK(fs::exists(root, ec), "image folder not found: ", root);
  KD_CHECK(fs::is_directory(root, ec), "image folder is not a folder: ", root);

  std::vector<std::string> classes;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (!is_hidden(it->path()) && it->is_directory(type_ec)) classes.push_back(it->path().filename().string());
  }
  KD_CHECK(!ec, "cannot list image folder ", root, ": ", ec.message());
  KD_CHECK(!classes.empty(), "image folder ", root, " has no class folders (expected ", root, "/<class>/<image>)");
  std::sort(classes.begin(), classes.end());

  auto source = std::make_shared<FileTableSource>("image_folder", root, "", decode);
  for (size_t c = 0; c < classes.size(); ++c) {
    const fs::path class_dir = fs::path(root) / classes[c];
    std::vector<std::string> files;
    fs::recursive_directory_iterator it(class_dir, fs::directory_options::skip_permission_denied, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
      std::error_code type_ec;
      if (is_hidden(it->path())) {
        if (it->is_directory(type_ec)) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file(type_ec) && has_image_extension(it->path().filename().string()))
        files.push_back(it->path().lexically_relative(root).generic_string());
    }
    KD_CHECK(!ec, "cannot list class folder ", class_dir.string(), ": ", ec.message());
    std::sort(files.begin(), files.end());
    for (const std::string& f : files) source->add(f, int(c));
  }
  KD_CHECK(source->size() > 0, "image folder ", root, " has ", classes.size(),
           " class folders but no images in them (.jpg .jpeg .png .bmp)");
  const int count = int(classes.size());
  source->finish(std::move(classes), count);
  return source;
}

// ---- images: every image below a folder, no labels --------------------------------------------
// For distilling on other data (the paper's "random other data"): the teacher labels what the
// student sees, so the images need no class. Recursive, hidden entries skipped, sorted by path.
SourcePtr open_unlabelled_images(const std::string& root_arg, DecodeSettings decode) {
  std::string root = root_arg;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  std::error_code ec;
  KD_CHECK(fs::exists(root, ec), "image folder not found: ", root);
  KD_CHECK(fs::is_directory(root, ec), "image folder is not a folder: ", root);
  std::vector<std::string> files;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (is_hidden(it->path())) {
      if (it->is_directory(type_ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(type_ec) && has_image_extension(it->path().filename().string()))
      files.push_back(it->path().lexically_relative(root).generic_string());
  }
  KD_CHECK(!ec, "cannot list image folder ", root, ": ", ec.message());
  KD_CHECK(!files.empty(), "image folder ", root, " has no images (.jpg .jpeg .png .bmp)");
  std::sort(files.begin(), files.end());
  auto source = std::make_shared<FileTableSource>("images", root, "", decode);
  for (const std::string& f : files) source->add(f, -1);
  source->finish({}, 0);
  return source;
}

// ---- list file: `relative/path label` per line --------------------------------------------------
SourcePtr open_list_file(const std::string& list_path, const std::string& root_arg, DecodeSettings decode) {
  std::error_code ec;
  KD_CHECK(fs::exists(list_path, ec), "list file not found: ", list_path);
  KD_CHECK(fs::is_regular_file(list_path, ec), "list file is not a file: ", list_path);
  std::string root = root_arg;
  if (root.empty()) root = fs::path(list_path).parent_path().string();
  if (root.empty()) root = ".";
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  KD_CHECK(fs::is_directory(root, ec), "image root folder not found: ", root, " (for list file ", list_path, ")");

  std::ifstream in(list_path);
  KD_CHECK(in.good(), "cannot open list file ", list_path);
  auto source = std::make_shared<FileTableSource>("list", root, list_path, decode);
  int largest = -1;
  std::string raw;
  for (int line = 1; std::getline(in, raw); ++line) {
    // A '#' that begins a field starts a comment; one inside a file name does not.
    for (size_t p = 0; p < raw.size(); ++p) {
      if (raw[p] == '#' && (p == 0 || std::isspace(static_cast<unsigned char>(raw[p - 1])))) {
        raw.resize(p);
        break;
      }
    }
    const std::string text = trim(raw);  // also drops a Windows '\r'
    if (text.empty()) continue;
    size_t split = text.size();
    while (split > 0 && !std::isspace(static_cast<unsigned char>(text[split - 1]))) --split;
    KD_CHECK(split > 0, list_path, ":", line, ": expected '<path> <label>', got '", text, "'");
    const std::string path = trim(text.substr(0, split));
    const std::string label_text = text.substr(split);
    bool digits = label_text.size() <= 9;
    for (char ch : label_text) digits = digits && std::isdigit(static_cast<unsigned char>(ch));
    KD_CHECK(digits, list_path, ":", line, ": label '", label_text, "' is not a non-negative integer");
    const int label = std::stoi(label_text);
    largest = std::max(largest, label);
    source->add(path, label, line);
  }
  KD_CHECK(!in.bad(), "error reading list file ", list_path);
  KD_CHECK(source->size() > 0, "list file ", list_path, " lists no images");
  source->finish({}, largest + 1);
  return source;
}

}  // namespace kd
