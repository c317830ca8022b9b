// kd pack: an image folder (or list file) into WebDataset-style tar shards plus an index
// (data/shard_index.h), read back by data.kind = shards (data/shard_source.h).
//
// Samples are written in a seeded random order (the index keeps each one's original path), so
// every shard holds a mix of classes: the shard-aware training order shuffles only within a few
// shards, and an ImageFolder's own order (class by class) would give batches of a few classes.
// They fill shards one after the other; a shard is closed before it would pass `shard_bytes`. Each sample is two
// members, NNNNNNNNN.<ext> with the original file's bytes (not decoded: a corrupt image stays
// corrupt and is skipped when training, as it would be from the folder) and NNNNNNNNN.cls with
// the label as decimal text.
//
// Atomic: every shard is written as shard-NNNNNN.tar.tmp and renamed when complete, and the index
// last, also through a rename. An old index in OUT is removed before the first shard is written,
// so an interrupted pack leaves a folder without index.tsv, which data.kind = shards refuses.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "data/source.h"

namespace kd {

struct PackProgress {
  int64_t samples_done = 0, samples_total = 0;
  int64_t shards_done = 0;
  uint64_t bytes_written = 0;
};

struct PackOptions {
  uint64_t shard_bytes = uint64_t(256) << 20;                 // a shard stays below this (one image may pass it)
  bool shuffle = true;                                   // false: the source's order
  uint64_t seed = 0;                                     // of the shuffled order
  std::function<void(const PackProgress&)> on_progress;  // after every sample, on the calling thread
};

struct PackSummary {
  int64_t samples = 0, shards = 0;
  uint64_t bytes = 0;  // all shards together
};

// Packs every image of `source` (a source of files: image_folder or list) into `out_folder`
// (created when missing). Index paths are the files' paths relative to `root`. Errors name the
// file that could not be read or written.
PackSummary pack_shards(const DataSource& source, const std::string& root, const std::string& out_folder,
                        const PackOptions& options = {});

}  // namespace kd
