// kd pack: an ImageFolder (or a list file of its images) into tar shards and an index for
// data.kind = shards (data/shard_pack.h); kd bench-shards: reading them shard by shard against
// reading the folder in random order.
#pragma once
#include <CLI/CLI.hpp>

namespace kd::cli {
void add_pack_command(CLI::App& app);
void add_bench_shards_command(CLI::App& app);
}  // namespace kd::cli
