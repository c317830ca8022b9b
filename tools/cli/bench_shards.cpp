// kd bench-shards: the same images read two ways, each pass starting from a cold page cache
// (the files' cached pages are dropped with posix_fadvise, which needs no privileges; a file
// system that ignores the advice, as overlay and tmpfs do, measures the page cache instead):
//   image folder, random order: one file per image, in the EpochSampler's seeded order;
//   shards, shard-aware order:  whole shards, in the shard-aware EpochSampler's order.
// "read" passes only read the bytes (the folder: every file; the shards: every shard once, in
// the epoch's shard order); "decode" passes run the Loader over one epoch, which reads and
// decodes as training does. MB/s counts the images' encoded bytes, the same for both.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <unordered_map>

#include "data/loader.h"
#include "data/sampler.h"
#include "data/shard_index.h"
#include "data/shard_source.h"
#include "tools/cli/pack.h"

namespace kd::cli {

namespace {

namespace fs = std::filesystem;

struct BenchShardsArgs {
  std::string folder, shards, jpeg = "stb";
  int threads = 2, batch = 32, shuffle_shards = 4, cached_shards = 0;
  uint64_t seed = 0;
  bool warm = false;
};

// Drops the file's pages from the page cache (clean pages only; nothing is written).
void drop_cached(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

int shard_count(const std::vector<int>& shard_of) {
  return shard_of.empty() ? 0 : *std::max_element(shard_of.begin(), shard_of.end()) + 1;
}

// One epoch of `order` through the Loader; returns seconds.
double decode_epoch(SourcePtr source, const std::vector<int64_t>& order, const BenchShardsArgs& a) {
  LoaderOptions lo;
  lo.batch_size = a.batch;
  lo.num_threads = a.threads;
  lo.prefetch_batches = 4;
  lo.on_bad_image = [](const std::string& origin, const std::string& reason) {
    std::fprintf(stderr, "kd bench-shards: unreadable %s: %s\n", origin.c_str(), reason.c_str());
  };
  const int64_t n = int64_t(order.size()), batch = a.batch;
  const auto start = std::chrono::steady_clock::now();
  Loader loader(source, [&](int64_t step) {
    if (step * batch >= n) return std::vector<int64_t>();
    return std::vector<int64_t>(order.begin() + step * batch, order.begin() + std::min(n, (step + 1) * batch));
  }, lo);
  while (loader.next()) {
  }
  return seconds_since(start);
}

void run_bench_shards(const BenchShardsArgs& a) {
  const JpegDecoder jpeg = parse_jpeg_decoder(a.jpeg);
  const int cached = a.cached_shards > 0 ? a.cached_shards : 2 * a.shuffle_shards;
  const SourcePtr folder = open_image_folder(a.folder, jpeg);
  const SourcePtr shards = open_shards(a.shards, jpeg, cached);
  const int64_t n = folder->size();
  KD_CHECK(shards->size() == n, "kd bench-shards: ", folder->describe(), " and ", shards->describe(),
           " hold different numbers of images (pack the folder again?)");
  // The same image in both: the index keeps each sample's path relative to the folder.
  const ShardIndex index = read_shard_index(a.shards);
  std::unordered_map<std::string, int64_t> folder_index;
  for (int64_t j = 0; j < n; ++j)
    folder_index[fs::path(folder->file_path(j)).lexically_relative(a.folder).generic_string()] = j;
  uint64_t image_bytes = 0;
  std::vector<int> shard_of(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const auto found = folder_index.find(index.path(i));
    KD_CHECK(found != folder_index.end() && folder->label(found->second) == shards->label(i), "kd bench-shards: ",
             index.path(i), " of ", a.shards, " is not in ", a.folder, " with the same label (pack the folder again?)");
    image_bytes += index.samples[size_t(i)].size;
    shard_of[size_t(i)] = shards->shard(i);
  }
  EpochSampler random_order(n, 1, a.seed), shard_order(shard_layout(shard_of, a.shuffle_shards), 1, a.seed);
  std::vector<int64_t> folder_epoch(static_cast<size_t>(n)), shard_epoch(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) folder_epoch[size_t(i)] = random_order.index_at(i, 0);
  for (int64_t i = 0; i < n; ++i) shard_epoch[size_t(i)] = shard_order.index_at(i, 0);
  std::vector<std::string> shard_files;  // in the order the epoch first touches them
  std::vector<bool> touched(size_t(shard_count(shard_of)), false);
  for (int64_t i : shard_epoch) {
    const int k = shards->shard(i);
    if (!touched[size_t(k)]) shard_files.push_back((fs::path(a.shards) / shard_file_name(k)).string());
    touched[size_t(k)] = true;
  }
  auto drop_all = [&] {
    if (a.warm) return;
    for (int64_t i = 0; i < n; ++i) drop_cached(folder->file_path(i));
    for (const std::string& f : shard_files) drop_cached(f);
  };

  drop_all();
  auto start = std::chrono::steady_clock::now();
  for (int64_t i : folder_epoch) read_file_bytes(folder->file_path(i));
  const double folder_read_s = seconds_since(start);
  drop_all();
  start = std::chrono::steady_clock::now();
  uint64_t shard_bytes = 0;
  for (const std::string& f : shard_files) shard_bytes += read_file_bytes(f).size();
  const double shard_read_s = seconds_since(start);
  drop_all();
  const double folder_decode_s = decode_epoch(folder, folder_epoch, a);
  drop_all();
  const double shard_decode_s = decode_epoch(shards, shard_epoch, a);

  std::printf("kd bench-shards: %lld images, %.1f MB of image files, %zu shards (%.1f MB); %d loader threads, "
              "batches of %d, %s page cache, %s decoder\n\n",
              static_cast<long long>(n), double(image_bytes) / 1e6, shard_files.size(), double(shard_bytes) / 1e6,
              a.threads, a.batch, a.warm ? "warm" : "cold (dropped before each pass)", a.jpeg.c_str());
  std::printf("| source, order | read MB/s | read images/s | decoded images/s | decode MB/s |\n|---|---|---|---|---|\n");
  const struct {
    const char* name;
    double read_s, decode_s;
  } rows[] = {{"image folder, random order", folder_read_s, folder_decode_s},
              {"shards, shard-aware order", shard_read_s, shard_decode_s}};
  for (const auto& r : rows) {
    std::printf("| %s | %.1f | %.0f | %.1f | %.1f |\n", r.name, double(image_bytes) / 1e6 / r.read_s,
                double(n) / r.read_s, double(n) / r.decode_s, double(image_bytes) / 1e6 / r.decode_s);
    std::fprintf(stderr,
                 "RESULT {\"tool\": \"kd-bench-shards\", \"order\": \"%s\", \"read_mb_per_sec\": %.2f, "
                 "\"images_per_sec\": %.2f, \"images\": %lld, \"threads\": %d}\n",
                 r.name, double(image_bytes) / 1e6 / r.read_s, double(n) / r.decode_s, static_cast<long long>(n),
                 a.threads);
  }
}

}  // namespace

void add_bench_shards_command(CLI::App& app) {
  auto args = std::make_shared<BenchShardsArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench-shards", "Read MB/s and decoded images/s: packed shards in shard-aware order vs the image folder in "
                      "random order (the same images)");
  cmd->add_option("folder", args->folder, "the ImageFolder that was packed")->required();
  cmd->add_option("shards", args->shards, "kd pack's output folder")->required();
  cmd->add_option("--threads", args->threads, "loader threads")->capture_default_str();
  cmd->add_option("--batch", args->batch, "images per batch")->capture_default_str();
  cmd->add_option("--shuffle-shards", args->shuffle_shards, "shards shuffled together")->capture_default_str();
  cmd->add_option("--cached-shards", args->cached_shards, "shards kept in memory (0: twice --shuffle-shards)")
      ->capture_default_str();
  cmd->add_option("--jpeg-decoder", args->jpeg, "stb or turbo")->capture_default_str();
  cmd->add_option("--seed", args->seed, "seed of both orders")->capture_default_str();
  cmd->add_flag("--warm", args->warm, "keep the page cache (measures the code, not the disk)");
  cmd->callback([args] { run_bench_shards(*args); });
}

}  // namespace kd::cli
