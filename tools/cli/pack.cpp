#include "tools/cli/pack.h"

#include <chrono>
#include <cstdio>

#include "data/shard_pack.h"

namespace kd::cli {

namespace {

struct PackArgs {
  std::string folder, out, list;
  double shard_mib = 256;
  bool keep_order = false;
  uint64_t seed = 0;
};

void run_pack(const PackArgs& a) {
  KD_CHECK(a.shard_mib > 0, "kd pack: --shard-size must be positive, got ", a.shard_mib);
  // The same listing as training on the folder (data.kind = image_folder or list).
  const SourcePtr source = a.list.empty() ? open_image_folder(a.folder) : open_list_file(a.list, a.folder);
  std::printf("kd pack: %s -> %s, shards of up to %g MiB\n", source->describe().c_str(), a.out.c_str(), a.shard_mib);
  std::fflush(stdout);
  PackOptions options;
  options.shard_bytes = uint64_t(a.shard_mib * double(1 << 20));
  options.shuffle = !a.keep_order;
  options.seed = a.seed;
  auto last = std::chrono::steady_clock::now();
  options.on_progress = [&](const PackProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    if (p.samples_done < p.samples_total && now - last < std::chrono::milliseconds(250)) return;
    last = now;
    std::fprintf(stderr, "\rkd pack: %lld / %lld images, %lld shards done, %.1f MB", static_cast<long long>(p.samples_done),
                 static_cast<long long>(p.samples_total), static_cast<long long>(p.shards_done),
                 double(p.bytes_written) / 1e6);
    std::fflush(stderr);
  };
  const PackSummary summary = pack_shards(*source, a.folder, a.out, options);
  std::fprintf(stderr, "\n");
  std::printf("kd pack: %lld images in %lld shards, %.1f MB; index %s/index.tsv (data.kind = shards, data.train = %s)\n",
              static_cast<long long>(summary.samples), static_cast<long long>(summary.shards),
              double(summary.bytes) / 1e6, a.out.c_str(), a.out.c_str());
}

}  // namespace

void add_pack_command(CLI::App& app) {
  auto args = std::make_shared<PackArgs>();
  CLI::App* cmd = app.add_subcommand(
      "pack", "Pack an image folder into WebDataset-style tar shards and an index, for data.kind = shards");
  cmd->add_option("folder", args->folder, "ImageFolder root (<class>/<image>), or the root of --list's paths")
      ->required();
  cmd->add_option("out", args->out, "output folder: shard-000000.tar ... and index.tsv")->required();
  cmd->add_option("--shard-size", args->shard_mib, "largest shard, MiB")->capture_default_str();
  cmd->add_option("--list", args->list, "pack the images of this list file (`relative/path label` lines) instead");
  cmd->add_flag("--keep-order", args->keep_order,
                "write samples in the folder's order (class by class) instead of a seeded random order");
  cmd->add_option("--seed", args->seed, "seed of the random order")->capture_default_str();
  cmd->callback([args] { run_pack(*args); });
}

}  // namespace kd::cli
