#include "data/shard_source.h"

#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "data/shard_index.h"
#include "data/tar.h"

namespace kd {

namespace {

using ShardBytes = std::shared_ptr<const std::vector<uint8_t>>;

// The whole file in one buffer; as much as there is when it is shorter than expected (the
// members past the end are then reported one by one). Unopenable or unreadable: DecodeError.
ShardBytes read_whole_file(const std::string& path, uint64_t expected_bytes) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file)
    throw DecodeError(path, std::string("cannot open the shard: ") + std::strerror(errno), DecodeError::Kind::unreadable_file);
  auto bytes = std::make_shared<std::vector<uint8_t>>(size_t(expected_bytes));
  const size_t got = std::fread(bytes->data(), 1, bytes->size(), file.get());
  if (std::ferror(file.get()))
    throw DecodeError(path, std::string("cannot read the shard: ") + std::strerror(errno), DecodeError::Kind::unreadable_file);
  bytes->resize(got);
  return bytes;
}

// The most recently used shards, each read once however many threads ask for it at once.
class ShardCache {
 public:
  explicit ShardCache(size_t capacity) : capacity_(capacity) {}

  template <class Read>
  ShardBytes get(int shard, const Read& read) {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      auto it = entries_.find(shard);
      if (it == entries_.end()) break;
      if (it->second.bytes) {
        it->second.last_use = ++clock_;
        return it->second.bytes;
      }
      ready_.wait(lock);  // another thread is reading it
    }
    entries_[shard].last_use = ++clock_;  // an entry without bytes: being read
    lock.unlock();
    ShardBytes bytes;
    try {
      bytes = read();
    } catch (...) {
      lock.lock();
      entries_.erase(shard);
      ready_.notify_all();
      throw;
    }
    lock.lock();
    entries_[shard].bytes = bytes;
    evict();
    ready_.notify_all();
    return bytes;
  }

 private:
  struct Entry {
    ShardBytes bytes;  // null while being read
    uint64_t last_use = 0;
  };
  // Drops the least recently used shards that are not being read until `capacity_` remain.
  // Threads still decoding from a dropped shard hold their own reference to its bytes.
  void evict() {
    while (entries_.size() > capacity_) {
      auto oldest = entries_.end();
      for (auto it = entries_.begin(); it != entries_.end(); ++it)
        if (it->second.bytes && (oldest == entries_.end() || it->second.last_use < oldest->second.last_use))
          oldest = it;
      if (oldest == entries_.end()) return;
      entries_.erase(oldest);
    }
  }

  size_t capacity_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::unordered_map<int, Entry> entries_;
  uint64_t clock_ = 0;
};

class ShardSource final : public DataSource {
 public:
  ShardSource(std::string folder, ShardIndex index, DecodeSettings decode, int cached_shards)
      : folder_(std::move(folder)), index_(std::move(index)), decode_(decode), cached_shards_(cached_shards),
        cache_(size_t(cached_shards)) {}

  int64_t size() const override { return int64_t(index_.samples.size()); }
  int num_classes() const override { return index_.num_classes; }
  const std::vector<std::string>& class_names() const override { return index_.class_names; }
  int label(int64_t i) const override {
    check_index(i);
    return index_.samples[size_t(i)].label;
  }
  int shard(int64_t i) const override {
    check_index(i);
    return index_.samples[size_t(i)].shard;
  }
  std::string where(int64_t i) const override {
    check_index(i);
    return member(i) + " (" + index_.path(i) + ")";
  }
  std::string describe() const override {
    return "shards " + folder_ + " (" + std::to_string(size()) + " images in " + std::to_string(index_.shards.size()) +
           " shards, " + std::to_string(index_.num_classes) + " classes, up to " + std::to_string(cached_shards_) +
           " shards in memory" + (decode_.jpeg == JpegDecoder::turbo ? ", JPEGs by libjpeg-turbo" : "") + ")";
  }

  Image load(int64_t i) const override { return decode(i, nullptr); }
  Image load_view(int64_t i, const ViewNeedFn& need) const override { return decode(i, &need); }

 private:
  Image decode(int64_t i, const ViewNeedFn* need) const {
    check_index(i);
    const ShardSample& s = index_.samples[size_t(i)];
    const ShardFile& file = index_.shards[size_t(s.shard)];
    ShardBytes bytes;
    try {
      bytes = cache_.get(s.shard, [&] { return read_whole_file(folder_ + "/" + file.name, file.bytes); });
    } catch (const DecodeError& e) {
      throw DecodeError(where(i), e.reason(), e.kind());
    }
    if (s.offset + s.size > bytes->size())
      throw DecodeError(where(i), "the shard ends at byte " + std::to_string(bytes->size()) + " of the " +
                                      std::to_string(file.bytes) + " the index records; the member needs bytes [" +
                                      std::to_string(s.offset) + ", " + std::to_string(s.offset + s.size) +
                                      ") (a truncated copy?)");
    const TarHeader header = read_tar_header(bytes->data() + (s.offset - kTarBlock));
    const std::string name = index_.member_name(i);
    if (!header.valid || header.name != name || header.size != s.size)
      throw DecodeError(where(i), "no tar header for " + name + " of " + std::to_string(s.size) + " bytes before byte " +
                                      std::to_string(s.offset) + (header.valid ? " (found " + header.name + ")" : "") +
                                      " (the shard does not match the index)");
    Image image = decode_image(bytes->data() + s.offset, size_t(s.size), where(i), decode_.jpeg, need, decode_.max_pixels);
    image.label = s.label;
    return image;
  }

  std::string member(int64_t i) const {
    return folder_ + "/" + index_.shards[size_t(index_.samples[size_t(i)].shard)].name + " member " +
           index_.member_name(i);
  }

  std::string folder_;
  ShardIndex index_;
  DecodeSettings decode_;
  int cached_shards_;
  mutable ShardCache cache_;
};

}  // namespace

SourcePtr open_shards(const std::string& folder_arg, DecodeSettings decode, int cached_shards) {
  KD_CHECK(cached_shards >= 1, "shards ", folder_arg, ": keep at least 1 shard in memory, got ", cached_shards);
  std::string folder = folder_arg;
  while (folder.size() > 1 && folder.back() == '/') folder.pop_back();
  ShardIndex index = read_shard_index(folder);
  return std::make_shared<ShardSource>(folder, std::move(index), decode, cached_shards);
}

}  // namespace kd
