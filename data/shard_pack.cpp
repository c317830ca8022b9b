#include "data/shard_pack.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <regex>

#include "data/sampler.h"
#include "data/shard_index.h"
#include "data/tar.h"

namespace kd {

namespace {

namespace fs = std::filesystem;

// One shard being written: shard-NNNNNN.tar.tmp until finish() renames it.
class ShardWriter {
 public:
  ShardWriter(const std::string& folder, int64_t shard)
      : name_(shard_file_name(shard)), path_((fs::path(folder) / name_).string()), temp_(path_ + ".tmp"),
        file_(std::fopen(temp_.c_str(), "wb"), &std::fclose) {
    KD_CHECK(file_ != nullptr, "kd pack: cannot create ", temp_, ": ", std::strerror(errno));
  }
  uint64_t bytes() const { return offset_; }
  // Appends a member; returns the offset of its data.
  uint64_t add(const std::string& member, const uint8_t* data, size_t size) {
    const uint64_t data_offset = write_tar_member(file_.get(), temp_, offset_, member, data, size);
    offset_ = data_offset + tar_padded(size);
    return data_offset;
  }
  // Ends the archive and renames it into place; returns its entry of the index.
  ShardFile finish(int64_t samples) {
    write_tar_end(file_.get(), temp_);
    offset_ += 2 * kTarBlock;
    KD_CHECK(std::fclose(file_.release()) == 0, "kd pack: cannot write ", temp_, ": ", std::strerror(errno));
    std::error_code ec;
    fs::rename(temp_, path_, ec);
    KD_CHECK(!ec, "kd pack: cannot rename ", temp_, " to ", path_, ": ", ec.message());
    return ShardFile{name_, offset_, samples};
  }

 private:
  std::string name_, path_, temp_;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file_;
  uint64_t offset_ = 0;
};

// Bytes a sample adds to a shard: two headers, the padded image and the padded label text.
uint64_t sample_bytes(size_t image_bytes, size_t label_bytes) {
  return 2 * kTarBlock + tar_padded(image_bytes) + tar_padded(label_bytes);
}

void check_field(const std::string& text, const std::string& what) {
  KD_CHECK(text.find_first_of("\t\n\r") == std::string::npos, "kd pack: ", what, " '", text,
           "' holds a tab or line break, which the index cannot store");
}

// Removes what an earlier pack into the same folder left: the index first (so no index ever
// describes a mix of old and new shards), then its shards and temporary files.
void clear_earlier_pack(const std::string& folder) {
  std::error_code ec;
  fs::remove(fs::path(folder) / kShardIndexName, ec);
  KD_CHECK(!ec, "kd pack: cannot remove the old index in ", folder, ": ", ec.message());
  const std::regex ours(R"(shard-[0-9]{6}\.tar(\.tmp)?|index\.tsv\.tmp)");
  for (const auto& entry : fs::directory_iterator(folder)) {
    if (!std::regex_match(entry.path().filename().string(), ours)) continue;
    fs::remove(entry.path(), ec);
    KD_CHECK(!ec, "kd pack: cannot remove ", entry.path().string(), ": ", ec.message());
  }
}

}  // namespace

PackSummary pack_shards(const DataSource& source, const std::string& root_arg, const std::string& out_folder,
                        const PackOptions& options) {
  std::string root = root_arg;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  KD_CHECK(source.size() > 0, "kd pack: ", source.describe(), " has no images");
  KD_CHECK(source.size() < 1000000000, "kd pack: member names have 9 digits, ", source.describe(), " has more images");
  KD_CHECK(options.shard_bytes >= 4 * kTarBlock, "kd pack: shard size of ", options.shard_bytes, " bytes is too small");
  std::error_code ec;
  fs::create_directories(out_folder, ec);
  KD_CHECK(!ec && fs::is_directory(out_folder), "kd pack: cannot create the output folder ", out_folder,
           ec ? ": " + ec.message() : std::string());
  clear_earlier_pack(out_folder);

  ShardIndex index;
  index.class_names = source.class_names();
  index.num_classes = source.num_classes();
  for (const std::string& name : index.class_names) check_field(name, "class name");

  PackProgress progress;
  progress.samples_total = source.size();
  std::unique_ptr<ShardWriter> shard;
  int64_t in_shard = 0;
  uint64_t finished_bytes = 0;  // of the shards already closed
  auto close_shard = [&] {
    index.shards.push_back(shard->finish(in_shard));
    finished_bytes += index.shards.back().bytes;
    ++progress.shards_done;
    shard.reset();
    in_shard = 0;
  };
  std::vector<int64_t> order = seeded_permutation(source.size(), options.seed, 0x7061636bull);  // "pack"
  if (!options.shuffle) std::sort(order.begin(), order.end());
  for (int64_t i = 0; i < source.size(); ++i) {  // i: the sample's number in the shards
    const int64_t from = order[size_t(i)];
    const std::string file = source.file_path(from);
    KD_CHECK(!file.empty(), "kd pack: ", source.describe(), " is not a source of image files");
    const std::string relative = fs::path(file).lexically_relative(root).generic_string();
    check_field(relative, "path");
    const std::vector<uint8_t> image = read_file_bytes(file);
    KD_CHECK(!image.empty(), "kd pack: ", file, " is empty");
    const std::string label = std::to_string(source.label(from));
    const uint64_t needed = sample_bytes(image.size(), label.size());
    if (shard && shard->bytes() + needed + 2 * kTarBlock > options.shard_bytes) close_shard();
    if (!shard) shard = std::make_unique<ShardWriter>(out_folder, int64_t(index.shards.size()));

    ShardSample sample;
    sample.shard = int32_t(index.shards.size());
    sample.label = source.label(from);
    sample.size = image.size();
    sample.offset = shard->add(shard_member_name(i, relative), image.data(), image.size());
    shard->add(shard_member_name(i, ".cls"), reinterpret_cast<const uint8_t*>(label.data()), label.size());
    index.samples.push_back(sample);
    index.add_path(relative);
    ++in_shard;
    progress.samples_done = i + 1;
    progress.bytes_written = finished_bytes + shard->bytes();
    if (options.on_progress) options.on_progress(progress);
  }
  close_shard();
  write_shard_index(index, out_folder);
  return PackSummary{progress.samples_done, progress.shards_done, finished_bytes};
}

}  // namespace kd
