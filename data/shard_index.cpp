#include "data/shard_index.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string_view>

#include "data/tar.h"
#include "kernels/check.h"

namespace kd {

namespace fs = std::filesystem;

void ShardIndex::add_path(const std::string& path) {
  paths_ += path;
  path_ends_.push_back(paths_.size());
}

std::string ShardIndex::path(int64_t i) const {
  const size_t begin = i == 0 ? 0 : path_ends_[size_t(i) - 1];
  return paths_.substr(begin, path_ends_[size_t(i)] - begin);
}

std::string ShardIndex::member_name(int64_t i) const { return shard_member_name(i, path(i)); }

std::string shard_file_name(int64_t shard) {
  char name[32];
  std::snprintf(name, sizeof(name), "shard-%06lld.tar", static_cast<long long>(shard));
  return name;
}

std::string shard_member_name(int64_t sample, const std::string& path) {
  char stem[32];
  std::snprintf(stem, sizeof(stem), "%09lld", static_cast<long long>(sample));
  const size_t dot = path.find_last_of('.'), slash = path.find_last_of('/');
  std::string ext = dot == std::string::npos || (slash != std::string::npos && dot < slash) ? "" : path.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return stem + ext;
}

// ---- reading ------------------------------------------------------------------------------------

namespace {

// The fields of one line and where it came from, so every complaint names the file and line.
struct Line {
  const std::string* file;
  int64_t number = 0;
  std::vector<std::string_view> fields;

  [[noreturn]] void fail(const std::string& what) const {
    KD_FAIL("malformed shard index ", *file, ":", number, ": ", what);
  }
  void expect_fields(size_t n) const {
    if (fields.size() != n)
      fail("a '" + std::string(fields[0]) + "' line has " + std::to_string(n) + " tab-separated fields, this one " +
           std::to_string(fields.size()));
  }
  std::string text(size_t k) const { return std::string(fields[k]); }
  // Field k as a whole decimal number in [lo, hi].
  int64_t number_at(size_t k, int64_t lo, int64_t hi, const std::string& what) const {
    int64_t v = 0;
    const std::string_view f = fields[k];
    const auto [end, ec] = std::from_chars(f.data(), f.data() + f.size(), v);
    if (ec != std::errc() || end != f.data() + f.size() || f.empty())
      fail(what + " '" + std::string(f) + "' is not a whole number");
    if (v < lo || v > hi)
      fail(what + " " + std::to_string(v) + " outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v;
  }
};

std::vector<std::string_view> split_tabs(std::string_view line) {
  std::vector<std::string_view> fields;
  for (size_t start = 0;;) {
    const size_t tab = line.find('\t', start);
    fields.push_back(line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
    if (tab == std::string_view::npos) return fields;
    start = tab + 1;
  }
}

}  // namespace

ShardIndex read_shard_index(const std::string& folder) {
  const std::string file = (fs::path(folder) / kShardIndexName).string();
  std::error_code ec;
  KD_CHECK(fs::is_directory(folder, ec), "shard folder not found: ", folder);
  KD_CHECK(fs::is_regular_file(file, ec), "no shard index ", file, " (make one with kd pack; an interrupted pack "
           "writes none)");
  std::ifstream in(file, std::ios::binary);
  KD_CHECK(in.good(), "cannot open shard index ", file);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  KD_CHECK(!in.bad(), "error reading shard index ", file);

  ShardIndex index;
  int64_t shards = 0, samples = 0;
  int64_t number = 0;
  size_t pos = 0;
  std::vector<int64_t> per_shard;
  for (; pos < text.size();) {
    const size_t eol = text.find('\n', pos);
    std::string_view raw(text.data() + pos, (eol == std::string::npos ? text.size() : eol) - pos);
    pos = eol == std::string::npos ? text.size() : eol + 1;
    ++number;
    if (raw.empty()) continue;
    const Line line{&file, number, split_tabs(raw)};
    const std::string_view kind = line.fields[0];
    if (number == 1) {
      if (kind != "kd-shards") line.fail("the first line must start with 'kd-shards' (is this a kd pack folder?)");
      line.expect_fields(5);
      line.number_at(1, 1, 1, "version");
      shards = line.number_at(2, 1, INT32_MAX, "shard count");
      index.num_classes = int(line.number_at(3, 0, INT32_MAX, "class count"));
      samples = line.number_at(4, 1, INT64_MAX / 2, "sample count");
      index.samples.reserve(size_t(samples));
      per_shard.assign(size_t(shards), 0);
    } else if (kind == "shard") {
      line.expect_fields(5);
      const int64_t k = line.number_at(1, 0, shards - 1, "shard");
      if (k != int64_t(index.shards.size())) line.fail("shard " + std::to_string(k) + " out of order");
      ShardFile s;
      s.name = line.text(2);
      if (s.name.empty() || s.name.find('/') != std::string::npos) line.fail("bad shard file name '" + s.name + "'");
      s.bytes = uint64_t(line.number_at(3, 2 * kTarBlock, INT64_MAX, "shard bytes"));
      s.samples = line.number_at(4, 0, samples, "shard sample count");
      const std::string path = (fs::path(folder) / s.name).string();
      if (!fs::is_regular_file(path, ec)) line.fail("shard file " + path + " is missing");
      index.shards.push_back(std::move(s));
    } else if (kind == "class") {
      line.expect_fields(3);
      const int64_t c = line.number_at(1, 0, index.num_classes - 1, "class");
      if (c != int64_t(index.class_names.size())) line.fail("class " + std::to_string(c) + " out of order");
      index.class_names.push_back(line.text(2));
    } else if (kind == "sample") {
      line.expect_fields(7);
      const int64_t i = int64_t(index.samples.size());
      if (i >= samples) line.fail("more samples than the " + std::to_string(samples) + " the first line announces");
      if (int64_t(index.shards.size()) != shards)
        line.fail("the first line announces " + std::to_string(shards) + " shards, " +
                  std::to_string(index.shards.size()) + " are listed before the first sample");
      ShardSample s;
      s.shard = int32_t(line.number_at(1, 0, shards - 1, "shard"));
      const ShardFile& shard = index.shards[size_t(s.shard)];
      const int64_t data_end = int64_t(shard.bytes - 2 * kTarBlock);  // two zero blocks end the archive
      s.offset = uint64_t(line.number_at(2, int64_t(kTarBlock), data_end, "offset"));
      if (s.offset % kTarBlock) line.fail("offset " + std::to_string(s.offset) + " is not on a 512-byte block");
      s.size = uint64_t(line.number_at(3, 1, data_end - int64_t(s.offset), "member size (past the end of " + shard.name + ")"));
      s.label = int32_t(line.number_at(4, 0, index.num_classes > 0 ? index.num_classes - 1 : INT32_MAX, "label"));
      const std::string path = line.text(6);
      index.add_path(path);
      if (line.text(5) != index.member_name(i))
        line.fail("member '" + line.text(5) + "' of sample " + std::to_string(i) + " should be " + index.member_name(i));
      ++per_shard[size_t(s.shard)];
      index.samples.push_back(s);
    } else {
      line.fail("unknown record '" + std::string(kind) + "' (expected shard, class or sample)");
    }
  }
  KD_CHECK(number >= 1, "malformed shard index ", file, ": the file is empty");
  KD_CHECK(int64_t(index.shards.size()) == shards, "malformed shard index ", file, ": the first line announces ",
           shards, " shards, ", index.shards.size(), " are listed");
  KD_CHECK(int64_t(index.samples.size()) == samples, "malformed shard index ", file, ": the first line announces ",
           samples, " samples, ", index.samples.size(), " are listed (a truncated index?)");
  KD_CHECK(index.class_names.empty() || int64_t(index.class_names.size()) == index.num_classes,
           "malformed shard index ", file, ": ", index.num_classes, " classes announced, ", index.class_names.size(),
           " named");
  for (size_t k = 0; k < per_shard.size(); ++k)
    KD_CHECK(per_shard[k] == index.shards[k].samples, "malformed shard index ", file, ": shard ", index.shards[k].name,
             " should hold ", index.shards[k].samples, " samples, the index lists ", per_shard[k]);
  return index;
}

// ---- writing ------------------------------------------------------------------------------------

void write_shard_index(const ShardIndex& index, const std::string& folder) {
  const std::string file = (fs::path(folder) / kShardIndexName).string();
  const std::string temp = file + ".tmp";
  {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> out(std::fopen(temp.c_str(), "wb"), &std::fclose);
    KD_CHECK(out != nullptr, "cannot create ", temp, ": ", std::strerror(errno));
    std::FILE* f = out.get();
    std::fprintf(f, "kd-shards\t1\t%zu\t%d\t%zu\n", index.shards.size(), index.num_classes, index.samples.size());
    for (size_t k = 0; k < index.shards.size(); ++k)
      std::fprintf(f, "shard\t%zu\t%s\t%llu\t%lld\n", k, index.shards[k].name.c_str(),
                   static_cast<unsigned long long>(index.shards[k].bytes),
                   static_cast<long long>(index.shards[k].samples));
    for (size_t c = 0; c < index.class_names.size(); ++c)
      std::fprintf(f, "class\t%zu\t%s\n", c, index.class_names[c].c_str());
    for (size_t i = 0; i < index.samples.size(); ++i) {
      const ShardSample& s = index.samples[i];
      std::fprintf(f, "sample\t%d\t%llu\t%llu\t%d\t%s\t%s\n", s.shard, static_cast<unsigned long long>(s.offset),
                   static_cast<unsigned long long>(s.size), s.label, index.member_name(int64_t(i)).c_str(),
                   index.path(int64_t(i)).c_str());
    }
    KD_CHECK(std::fflush(f) == 0 && !std::ferror(f), "cannot write ", temp, ": ", std::strerror(errno));
    KD_CHECK(std::fclose(out.release()) == 0, "cannot write ", temp, ": ", std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(temp, file, ec);
  KD_CHECK(!ec, "cannot rename ", temp, " to ", file, ": ", ec.message());
}

}  // namespace kd
