// Packed shards as a data source (data.kind = shards): a folder written by kd pack
// (data/shard_pack.h), read through its index (data/shard_index.h) with random access by sample.
//
// Reading: the first load() of a shard reads the whole file into memory with one sequential
// read (a 256 MiB shard is one request instead of thousands of small ones), and the source keeps
// the `cached_shards` most recently used shards. The shard-aware sampler (data/sampler.h) reads
// data.shuffle_shards shards at a time, so a cache of twice that many holds the shards of a
// group and of the next while a batch straddles both. Loader threads call load() concurrently:
// a shard being read by one thread is waited for, not read again, and an evicted shard stays
// alive until the threads decoding from it are done.
//
// Images decode as image files do (data/image.h decode_image with the configured JPEG decoder).
// A member that cannot be read (the shard is missing or shorter than the index says, its tar
// header does not name it) or decoded is a DecodeError naming
// "FOLDER/shard-000003.tar member 000000123.jpg", which the loader skips and counts.
#pragma once
#include <string>

#include "data/source.h"

namespace kd {

SourcePtr open_shards(const std::string& folder, DecodeSettings decode = {}, int cached_shards = 8);

}  // namespace kd
