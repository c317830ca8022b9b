// The index of a packed shard folder (kd pack): FOLDER/index.tsv beside FOLDER/shard-NNNNNN.tar.
// Sample i is stored in tar member NNNNNNNNN.<ext> (i zero-padded to 9 digits, the original
// file's extension in lower case) of one shard, its label as decimal text in NNNNNNNNN.cls
// beside it; the index says where the image member's data starts, so a reader seeks straight
// to it without walking the archive.
//
// Format: tab-separated text, one record per line, the first field its kind.
//   kd-shards  1  <shards>  <classes>  <samples>            first line: version and counts
//   shard      <k>  <file name>  <bytes>  <samples>          k = 0, 1, ... in order
//   class      <label>  <name>                               label = 0, 1, ... (none for list files)
//   sample     <shard>  <offset>  <size>  <label>  <member>  <original relative path>
// Samples come in sample order; <offset> is the byte offset of the image member's data in the
// shard (its header is the 512 bytes before it), <size> the image's bytes.
// Why text: it reads with grep, cut and awk and diffs between packs; ImageNet's 1.28 M samples
// make ~90 MB that parse in about a second, small beside an epoch. A binary table would save that
// second but need a tool to inspect; JSON of that size parses slower and holds a DOM in memory.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kd {

constexpr const char* kShardIndexName = "index.tsv";

struct ShardFile {
  std::string name;     // "shard-000003.tar", relative to the folder
  uint64_t bytes = 0;   // the archive's size when it was written
  int64_t samples = 0;
};

struct ShardSample {
  int32_t shard = 0;
  int32_t label = 0;
  uint64_t offset = 0;  // of the image member's data in the shard
  uint64_t size = 0;    // the image's bytes
};

struct ShardIndex {
  std::vector<ShardFile> shards;
  std::vector<std::string> class_names;  // empty when the packed source had none (list files)
  int num_classes = 0;
  std::vector<ShardSample> samples;

  // Original relative paths, back to back (one heap string each would double the memory).
  void add_path(const std::string& path);
  std::string path(int64_t i) const;
  // "000000123.jpg": the tar member that holds sample i's image.
  std::string member_name(int64_t i) const;

 private:
  std::string paths_;
  std::vector<size_t> path_ends_;
};

// "shard-000003.tar"
std::string shard_file_name(int64_t shard);
// "000000123" + extension of `path` in lower case (".jpg"); "000000123.cls" for the label.
std::string shard_member_name(int64_t sample, const std::string& path);

// Reads and checks FOLDER/index.tsv: counts that agree, members inside their shard as the index
// records it, labels in range, every listed shard file present. Errors name the index file and
// the line. (A shard file shorter than recorded is not an error here: its members past the end
// become unreadable images, skipped by the loader, see data/shard_source.h.)
ShardIndex read_shard_index(const std::string& folder);
// Writes FOLDER/index.tsv through a temporary file and a rename, so it appears whole or not at all.
void write_shard_index(const ShardIndex& index, const std::string& folder);

}  // namespace kd
