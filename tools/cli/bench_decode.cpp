// Each thread takes images from a shared counter and runs the loader's work on them, timing
// each phase: read (the file's bytes, from the page cache after the first pass), decode, resize
// (both views of the image's random-resized crop rendered by the augment op's CPU math, as the
// CPU path does; on the GPU this phase runs on the device) and pack (the copy into the batch's
// staging buffer). Crop boxes are the training recipe's (data/recipe.h), seeded per image, so
// the scaled and views-only decoders see the scales and regions a real run would pick.
#include "tools/cli/bench_decode.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>

#include <omp.h>

#include "data/image.h"
#include "data/recipe.h"
#include "kernels/augment.h"
#if KD_HAVE_JPEG
#include "data/jpeg.h"
#endif
#if KD_HAVE_CUDA && KD_HAVE_NVJPEG
#include "engine/context.h"
#include "kernels/jpeg_device.h"
#endif

namespace kd::cli {

namespace {

struct DecodeArgs {
  std::string folder;
  std::vector<int> threads{1, 2};
  std::vector<int> views{224, 160};
  int64_t limit = 500;
  uint64_t seed = 0;
  bool no_resize = false;
};

using Clock = std::chrono::steady_clock;
double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct Phases {
  double read = 0, decode = 0, resize = 0, pack = 0;
  int64_t bytes = 0;
  double total() const { return read + decode + resize + pack; }
  Phases& operator+=(const Phases& o) {
    read += o.read, decode += o.decode, resize += o.resize, pack += o.pack, bytes += o.bytes;
    return *this;
  }
};

// One image through the loader's phases.
struct Sample {
  std::string path;
  ImageSize size;
  ViewRecipe view;  // the crop box in full-size pixels and the flip
};

#if KD_HAVE_CUDA && KD_HAVE_NVJPEG
void bench_nvjpeg(const std::vector<Sample>& samples);
#endif

struct Mode {
  const char* name;
  JpegDecoder decoder;
  bool scaled = false;      // the whole image at the crop's DCT scale
  bool views_only = false;  // only the crop's region, at its DCT scale (data.jpeg_views_only)
};

// The CPU augment op on one image (one OpenMP thread per loader thread: see the pool below).
void render(const Image& image, ViewRecipe view, int side, std::vector<float>& out) {
  view.a.box = box_in_decoded(view.a.box, image.offset_y, image.offset_x, image.scale_num);
  const SourceImage src{0, int32_t(image.height), int32_t(image.width)};
  out.resize(size_t(side) * side * 3);
  augment_cpu(image.pixels.data(), &src, &view, 1, Normalization(), side, side, out.data());
}

Phases run_one(const Sample& s, const Mode& mode, int out_side, const DecodeArgs& a, std::vector<uint8_t>& staging,
               std::vector<float>& rendered) {
  Phases p;
  const Clock::time_point t0 = Clock::now();
  const std::vector<uint8_t> bytes = read_file_bytes(s.path);
  const Clock::time_point t1 = Clock::now();
  Image image;
  if (mode.views_only) {
    const ViewNeedFn need = [&](int, int) {
      const CropBox& b = s.view.a.box;
      return ViewNeed{b.y0, b.x0, b.h, b.w, out_side, out_side};
    };
    image = decode_image(bytes.data(), bytes.size(), s.path, mode.decoder, &need);
  } else if (mode.scaled) {
#if KD_HAVE_JPEG
    image = decode_jpeg(bytes.data(), bytes.size(), s.path,
                        choose_dct_scale(s.view.a.box.w, s.view.a.box.h, out_side, out_side));
#endif
  } else {
    image = decode_image(bytes.data(), bytes.size(), s.path, mode.decoder);
  }
  const Clock::time_point t2 = Clock::now();
  if (!a.no_resize)
    for (int side : a.views) render(image, s.view, side, rendered);
  const Clock::time_point t3 = Clock::now();
  staging.resize(std::max(staging.size(), image.pixels.size()));
  std::memcpy(staging.data(), image.pixels.data(), image.pixels.size());
  const Clock::time_point t4 = Clock::now();
  p.read = seconds_between(t0, t1), p.decode = seconds_between(t1, t2);
  p.resize = seconds_between(t2, t3), p.pack = seconds_between(t3, t4);
  p.bytes = int64_t(bytes.size());
  return p;
}

void run_bench_decode(const DecodeArgs& a) {
  namespace fs = std::filesystem;
  KD_CHECK(fs::is_directory(a.folder), "kd bench-loader: ", a.folder, " is not a folder");
  KD_CHECK(!a.views.empty(), "kd bench-loader: --views needs at least one resolution");
  std::vector<std::string> paths;
  for (const auto& e : fs::recursive_directory_iterator(a.folder)) {
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (e.is_regular_file() && (ext == ".jpg" || ext == ".jpeg")) paths.push_back(e.path().string());
  }
  std::sort(paths.begin(), paths.end());
  if (a.limit > 0 && int64_t(paths.size()) > a.limit) paths.resize(size_t(a.limit));
  KD_CHECK(!paths.empty(), "kd bench-loader: no .jpg/.jpeg files below ", a.folder);

  // Sizes from a first decode (which also warms the page cache), then the recipe's crops.
  const int out_side = *std::max_element(a.views.begin(), a.views.end());
  const RecipeConfig recipe;
  std::vector<Sample> samples;
  int64_t bytes = 0, pixels = 0;
  std::vector<int> scale_count(9, 0);
  for (size_t i = 0; i < paths.size(); ++i) {
    const Image im = read_image_file(paths[i]);
    bytes += int64_t(fs::file_size(paths[i])), pixels += int64_t(im.width) * im.height;
    Sample s{paths[i], ImageSize{int32_t(im.height), int32_t(im.width)}, {}};
    s.view.a.box = sample_inception_crop(recipe, s.size, a.seed, i);
    s.view.a.flip = i % 2;
    samples.push_back(s);
#if KD_HAVE_JPEG
    ++scale_count[size_t(choose_dct_scale(s.view.a.box.w, s.view.a.box.h, out_side, out_side))];
#endif
  }
  const double n = double(samples.size());
  std::printf("kd bench-loader: %zu JPEGs, %.1f MB (%.0f KB each), %.2f Mpixel each; views", samples.size(),
              double(bytes) / 1e6, double(bytes) / 1e3 / n, double(pixels) / 1e6 / n);
  for (int v : a.views) std::printf(" %d", v);
  std::printf(" px of random-resized crops (area %.2f-%.2f)%s\n", recipe.area_min, recipe.area_max,
              a.no_resize ? ", not rendered (--no-resize)" : "");
#if KD_HAVE_JPEG
  std::printf("DCT scales for %d-px views:", out_side);
  for (int m = 1; m <= 8; ++m)
    if (scale_count[size_t(m)]) std::printf(" %d/8 x%d", m, scale_count[size_t(m)]);
  std::printf("\n");
#endif
  std::printf("\n| decoder | threads | images/s | per thread | per thread vs stb | read | decode | resize | pack | "
              "MB/s read |\n|---|---|---|---|---|---|---|---|---|---|\n");

  std::vector<Mode> modes = {{"stb_image", JpegDecoder::stb}};
#if KD_HAVE_JPEG
  modes.push_back({"libjpeg-turbo", JpegDecoder::turbo});
  modes.push_back({"libjpeg-turbo, scaled", JpegDecoder::turbo, true});
  modes.push_back({"libjpeg-turbo, views only", JpegDecoder::turbo, false, true});
#endif
  double stb_per_thread = 0;
  for (const Mode& mode : modes)
    for (int t : a.threads) {
      KD_CHECK(t >= 1, "kd bench-loader: --threads ", t);
      std::atomic<size_t> next{0};
      std::vector<Phases> per_thread(static_cast<size_t>(t));
      const Clock::time_point start = Clock::now();
      std::vector<std::thread> pool;
      for (int k = 0; k < t; ++k)
        pool.emplace_back([&, k] {
          omp_set_num_threads(1);  // the threads of this pool are the parallelism
          std::vector<uint8_t> staging;
          std::vector<float> rendered;
          Phases& sum = per_thread[size_t(k)];
          for (size_t i = next++; i < samples.size(); i = next++)
            sum += run_one(samples[i], mode, out_side, a, staging, rendered);
        });
      for (auto& th : pool) th.join();
      const double s = seconds_between(start, Clock::now()), ips = n / s;
      Phases all;
      for (const Phases& p : per_thread) all += p;
      if (std::string(mode.name) == "stb_image" && t == a.threads.front()) stb_per_thread = ips / t;
      const double tot = std::max(all.total(), 1e-12);
      std::printf("| %s | %d | %.0f | %.0f | %.2fx | %.0f%% | %.0f%% | %.0f%% | %.0f%% | %.0f |\n", mode.name, t, ips,
                  ips / t, stb_per_thread > 0 ? ips / t / stb_per_thread : 0.0, 100 * all.read / tot,
                  100 * all.decode / tot, 100 * all.resize / tot, 100 * all.pack / tot, double(all.bytes) / 1e6 / s);
      std::fprintf(stderr,
                   "RESULT {\"tool\": \"kd-bench-loader\", \"decoder\": \"%s\", \"threads\": %d, \"images_per_sec\": "
                   "%.1f, \"images\": %zu, \"views\": %d, \"resize\": %s}\n",
                   mode.name, t, ips, samples.size(), out_side, a.no_resize ? "false" : "true");
    }
#if KD_HAVE_CUDA && KD_HAVE_NVJPEG
  bench_nvjpeg(samples);
#endif
}

#if KD_HAVE_CUDA && KD_HAVE_NVJPEG
// nvJPEG on the GPU: batches of 128 files (read on the host, as the loader does) decoded into
// device memory, timed to the last decode's completion. No resize: on the GPU the augment
// kernel renders the views from the decoded pixels.
void bench_nvjpeg(const std::vector<Sample>& samples) {
  std::string why;
  if (!cuda_available(&why)) {
    std::printf("\nnvJPEG: not measured (%s)\n", why.c_str());
    return;
  }
  auto ctx = Context::cuda(0);
  std::vector<std::vector<uint8_t>> files;
  size_t largest = 0;
  for (const Sample& s : samples) {
    files.push_back(read_file_bytes(s.path));
    largest = std::max(largest, size_t(s.size.h) * size_t(s.size.w) * 3);
  }
  constexpr size_t kBatch = 128;
  Tensor out = Tensor::empty({int64_t(largest * kBatch)}, DType::u8, *ctx);
  DeviceJpegDecoder decoder;
  auto run = [&] {
    size_t failed = 0;
    for (size_t first = 0; first < samples.size(); first += kBatch) {
      std::vector<DeviceJpegJob> jobs;
      for (size_t i = first; i < std::min(samples.size(), first + kBatch); ++i)
        jobs.push_back({files[i].data(), files[i].size(), out.data<uint8_t>() + (i - first) * largest,
                        samples[i].size.h, samples[i].size.w});
      failed += decoder.decode(ctx->cuda_handles(), jobs).size();
    }
    ctx->synchronize();
    return failed;
  };
  run();  // warm-up: handles, buffers
  const Clock::time_point start = Clock::now();
  const size_t failed = run();
  const double s = seconds_between(start, Clock::now()), ips = double(samples.size()) / s;
  std::printf("\n| nvJPEG (%s) | GPU | %.0f images/s | %zu of %zu failed |\n",
              decoder.has_hardware_backend() ? "hardware engines" : "default backend", ips, failed, samples.size());
  std::fprintf(stderr,
               "RESULT {\"tool\": \"kd-bench-loader\", \"decoder\": \"nvjpeg\", \"hardware\": %s, "
               "\"images_per_sec\": %.1f, \"images\": %zu}\n",
               decoder.has_hardware_backend() ? "true" : "false", ips, samples.size());
}
#endif

}  // namespace

void add_bench_decode_command(CLI::App& app) {
  auto args = std::make_shared<DecodeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench-loader",
      "The loader's images/s on a folder of JPEGs, per phase (read, decode, resize, pack): stb_image, "
      "libjpeg-turbo, DCT-scaled, and decoding only what the views read");
  cmd->alias("bench-decode");
  cmd->add_option("folder", args->folder, "folder of JPEGs (searched recursively), e.g. tools/make_jpeg_fixture.py's")
      ->required();
  cmd->add_option("--threads", args->threads, "thread counts to measure (e.g. --threads 1,2)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--views", args->views, "view resolutions rendered from each crop, px (the largest sets the scale)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--limit", args->limit, "at most this many files (0: all)")->capture_default_str();
  cmd->add_option("--seed", args->seed, "seed of the crop boxes")->capture_default_str();
  cmd->add_flag("--no-resize", args->no_resize, "decode only: skip rendering the views");
  cmd->callback([args] { run_bench_decode(*args); });
}

}  // namespace kd::cli
