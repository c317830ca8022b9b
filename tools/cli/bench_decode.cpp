// The files are read into memory first (the read rate is reported apart), then each decoder runs
// over all of them on 1..N threads that take images from a shared counter. Crop boxes are drawn
// as the training recipe draws them (area 5-100% of the image, aspect 3/4..4/3, seeded), so the
// scaled decoder sees the scales a real run would pick. Decoding is what the loader does on the
// host; crop, resize and flip happen afterwards in the augment kernel.
#include "tools/cli/bench_decode.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <thread>

#include "data/image.h"
#if KD_HAVE_JPEG
#include "data/jpeg.h"
#endif

namespace kd::cli {

namespace {

struct DecodeArgs {
  std::string folder;
  std::vector<int> threads{1, 2};
  int64_t limit = 500;
  int view = 224;
  uint64_t seed = 0;
};

struct Encoded {
  std::string path;
  std::vector<uint8_t> bytes;
  int scale = 8;  // the DCT scale the crop of this image needs
};

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

void run_bench_decode(const DecodeArgs& a) {
  namespace fs = std::filesystem;
  KD_CHECK(fs::is_directory(a.folder), "kd bench-decode: ", a.folder, " is not a folder");
  std::vector<std::string> paths;
  for (const auto& e : fs::recursive_directory_iterator(a.folder)) {
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (e.is_regular_file() && (ext == ".jpg" || ext == ".jpeg")) paths.push_back(e.path().string());
  }
  std::sort(paths.begin(), paths.end());
  if (a.limit > 0 && int64_t(paths.size()) > a.limit) paths.resize(size_t(a.limit));
  KD_CHECK(!paths.empty(), "kd bench-decode: no .jpg/.jpeg files below ", a.folder);

  const auto read_start = std::chrono::steady_clock::now();
  std::vector<Encoded> files;
  size_t total_bytes = 0;
  for (const std::string& p : paths) {
    std::ifstream in(p, std::ios::binary);
    Encoded e;
    e.path = p;
    e.bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    total_bytes += e.bytes.size();
    files.push_back(std::move(e));
  }
  const double read_s = seconds_since(read_start);

  // Crops as the recipe draws them, and the scale each needs.
  std::mt19937_64 rng(a.seed);
  std::uniform_real_distribution<double> area(0.05, 1.0), log_aspect(std::log(0.75), std::log(4.0 / 3.0));
  int64_t pixels = 0;
  std::vector<int> scale_count(9, 0);
  for (Encoded& e : files) {
#if KD_HAVE_JPEG
    const JpegInfo info = read_jpeg_info(e.bytes.data(), e.bytes.size(), e.path);
    const double a_px = area(rng) * info.width * info.height, r = std::exp(log_aspect(rng));
    const double cw = std::min<double>(info.width, std::sqrt(a_px * r)), ch = std::min<double>(info.height, std::sqrt(a_px / r));
    e.scale = choose_dct_scale(cw, ch, a.view, a.view);
    pixels += int64_t(info.width) * info.height;
#endif
    ++scale_count[size_t(e.scale)];
  }
  std::printf("kd bench-decode: %zu JPEGs, %.1f MB (%.0f KB each), %.2f Mpixel each; read %.0f MB/s\n",
              files.size(), double(total_bytes) / 1e6, double(total_bytes) / 1e3 / double(files.size()),
              double(pixels) / 1e6 / double(files.size()), double(total_bytes) / 1e6 / std::max(read_s, 1e-9));
  std::printf("scales for %d-px views of random-resized crops:", a.view);
  for (int m = 1; m <= 8; ++m)
    if (scale_count[size_t(m)]) std::printf(" %d/8 x%d", m, scale_count[size_t(m)]);
  std::printf("\n\n| decoder | threads | images/s | per thread | MB/s of JPEG |\n|---|---|---|---|---|\n");

  struct Mode {
    const char* name;
    std::function<void(const Encoded&)> decode;
  };
  std::vector<Mode> modes = {{"stb_image", [](const Encoded& e) {
                                decode_image(e.bytes.data(), e.bytes.size(), e.path, JpegDecoder::stb);
                              }}};
#if KD_HAVE_JPEG
  modes.push_back({"libjpeg-turbo", [](const Encoded& e) { decode_jpeg(e.bytes.data(), e.bytes.size(), e.path); }});
  modes.push_back({"libjpeg-turbo, scaled", [](const Encoded& e) {
                     decode_jpeg(e.bytes.data(), e.bytes.size(), e.path, e.scale);
                   }});
#endif
  for (const Mode& mode : modes)
    for (int t : a.threads) {
      std::atomic<size_t> next{0};
      const auto start = std::chrono::steady_clock::now();
      std::vector<std::thread> pool;
      for (int k = 0; k < t; ++k)
        pool.emplace_back([&] {
          for (size_t i = next++; i < files.size(); i = next++) mode.decode(files[i]);
        });
      for (auto& th : pool) th.join();
      const double s = seconds_since(start), ips = double(files.size()) / s;
      std::printf("| %s | %d | %.0f | %.0f | %.1f |\n", mode.name, t, ips, ips / t, double(total_bytes) / 1e6 / s);
      std::fprintf(stderr,
                   "RESULT {\"tool\": \"kd-bench-decode\", \"decoder\": \"%s\", \"threads\": %d, \"images_per_sec\": "
                   "%.1f, \"images\": %zu, \"view\": %d}\n",
                   mode.name, t, ips, files.size(), a.view);
    }
}

}  // namespace

void add_bench_decode_command(CLI::App& app) {
  auto args = std::make_shared<DecodeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench-decode", "Decoded JPEGs per second: stb_image, libjpeg-turbo, and libjpeg-turbo DCT-scaled to the view");
  cmd->add_option("folder", args->folder, "folder of JPEGs (searched recursively), e.g. tools/make_jpeg_fixture.py's")
      ->required();
  cmd->add_option("--threads", args->threads, "thread counts to measure (e.g. --threads 1 2)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--limit", args->limit, "at most this many files (0: all)")->capture_default_str();
  cmd->add_option("--view", args->view, "the largest view's side, px (the scaled decode covers it)")
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "seed of the crop boxes")->capture_default_str();
  cmd->callback([args] { run_bench_decode(*args); });
}

}  // namespace kd::cli
