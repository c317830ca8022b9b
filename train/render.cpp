#include "train/render.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>

#include "data/loader.h"
#include "engine/ops.h"
#if KD_HAVE_NVJPEG
#include "kernels/jpeg_device.h"
#endif

namespace kd {

PackedImages pack_images(const std::vector<Image>& images) {
  std::vector<const Image*> pointers;
  for (const Image& im : images) pointers.push_back(&im);
  return pack_images(pointers);
}

PackedImages pack_images(const std::vector<const Image*>& images) {
  PackedImages p;
  for (const Image* im : images)
    if (!im->on_device()) p.host_bytes += im->bytes();
  size_t host_offset = 0, device_offset = p.host_bytes;
  for (const Image* image : images) {
    const Image& im = *image;
    int64_t offset = 0;
    if (im.on_device()) {
      offset = int64_t(device_offset);
      p.device_jpegs.push_back({im.encoded, im.origin, offset, int32_t(im.height), int32_t(im.width)});
      device_offset += size_t(im.height) * size_t(im.width) * Image::channels;
    } else {
      KD_CHECK(im.pixels.size() == size_t(im.height) * size_t(im.width) * Image::channels, "pack_images: ", im.origin,
               " has ", im.pixels.size(), " bytes for ", im.height, "x", im.width, " pixels");
      offset = int64_t(host_offset);
      p.host_pixels.push_back({im.pixels.data(), im.bytes(), host_offset});
      host_offset += im.bytes();
    }
    p.sources.push_back(SourceImage{offset, int32_t(im.height), int32_t(im.width)});
    p.sizes.push_back(ImageSize{int32_t(im.height), int32_t(im.width)});
    p.file_sizes.push_back(ImageSize{int32_t(im.file_height()), int32_t(im.file_width())});
    p.placements.push_back({im.offset_y, im.offset_x, im.scale_num});
  }
  p.device_bytes = device_offset;
  return p;
}

void PackedImages::write_host_pixels(uint8_t* dst) const {
  const int64_t count = int64_t(host_pixels.size());
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < count; ++i) {
    const HostPixels& part = host_pixels[size_t(i)];
    std::memcpy(dst + part.offset, part.data, part.bytes);
  }
}

void place_views(std::vector<ViewRecipe>& recipes, const PackedImages& batch) {
  auto place = [&batch](ViewSource& v) {
    KD_CHECK(v.image >= 0 && size_t(v.image) < batch.placements.size(), "place_views: recipe reads image ", v.image,
             " of ", batch.placements.size());
    const PackedImages::Placement& p = batch.placements[size_t(v.image)];
    if (p.offset_y == 0 && p.offset_x == 0 && p.scale_num == 8) return;
    v.box = box_in_decoded(v.box, p.offset_y, p.offset_x, p.scale_num);
    // The loader decoded what the recipe's extent said (StepConfig::view_need); a box outside
    // it means the two disagree about the slot, which would silently train on clamped edges.
    const SourceImage& decoded = batch.sources[size_t(v.image)];
    constexpr float kSlack = 0.5f;  // a scaled image's last pixel is partial (ceil of M/8 of the size)
    KD_CHECK(v.box.y0 >= -kSlack && v.box.x0 >= -kSlack && v.box.y0 + v.box.h <= float(decoded.h) + kSlack &&
                 v.box.x0 + v.box.w <= float(decoded.w) + kSlack,
             "place_views: a view reads box (", v.box.y0, ", ", v.box.x0, ") ", v.box.h, "x", v.box.w,
             " outside the ", decoded.h, "x", decoded.w, " pixels decoded of image ", v.image,
             " (the loader's view need and the step's recipe disagree)");
  };
  for (ViewRecipe& r : recipes) {
    place(r.a);
    if (r.lambda < 1.0f) place(r.b);
  }
}

namespace {

std::mutex counts_mutex;
DeviceJpegCounts counts;

// A JPEG nvJPEG rejected: decoded on the host (libjpeg-turbo where built, else stb_image) and
// uploaded into its place; if the host cannot read it either, mid-grey, so the batch keeps its
// shape and the run its determinism (the loader had already committed the slot to this file).
void decode_on_host(Context& ctx, const PackedImages::DeviceJpeg& job, uint8_t* device_out) {
  std::vector<uint8_t> pixels;
  std::string why;
  try {
    const Image im = decode_image(job.encoded.data(), job.encoded.size(), job.origin,
                                  KD_HAVE_JPEG ? JpegDecoder::turbo : JpegDecoder::stb);
    if (im.height == job.height && im.width == job.width)
      pixels = im.pixels;
    else
      why = "the host decodes it as " + std::to_string(im.width) + "x" + std::to_string(im.height) +
            ", its header says " + std::to_string(job.width) + "x" + std::to_string(job.height);
  } catch (const DecodeError& e) {
    why = e.reason();
  }
  {
    std::lock_guard<std::mutex> lock(counts_mutex);
    ++(pixels.empty() ? counts.undecodable : counts.host_fallbacks);
  }
  if (pixels.empty()) {
    std::fprintf(stderr, "kd: warning: %s decodes neither on the GPU nor on the host (%s); its views are grey\n",
                 job.origin.c_str(), why.c_str());
    pixels.assign(size_t(job.height) * size_t(job.width) * Image::channels, 128);
  }
  copy_bytes(device_out, Device::cuda, pixels.data(), Device::cpu, pixels.size(), &ctx);
}

// The batch's pixels on the device: the host-decoded ones uploaded, the JPEGs decoded there.
Tensor device_pixels(Context& ctx, const PackedImages& batch) {
  KD_CHECK(ctx.is_cuda(), "data.jpeg_decoder=nvjpeg decodes JPEGs on the GPU, but this run is on the CPU; use "
           "data.jpeg_decoder=turbo (or stb)");
#if KD_HAVE_NVJPEG
  Tensor pixels = Tensor::empty({int64_t(batch.device_bytes)}, DType::u8, ctx);
  uint8_t* base = pixels.data<uint8_t>();
  if (batch.host_bytes > 0) {  // gathered into pinned memory, uploaded without a wait
    batch.write_host_pixels(ctx.host_staging(batch.host_bytes));
    ctx.upload_staging(base, batch.host_bytes);
  }
  // One decoder per process (its handles belong to the device the process uses).
  static std::mutex decoder_mutex;
  static std::unique_ptr<DeviceJpegDecoder> decoder;
  std::lock_guard<std::mutex> lock(decoder_mutex);
  if (!decoder) {
    decoder = std::make_unique<DeviceJpegDecoder>();
    std::fprintf(stderr, "kd: nvJPEG decodes JPEGs on the GPU (%s)\n",
                 decoder->has_hardware_backend() ? "hardware engines, default backend for what they do not take"
                                                 : "default backend: no hardware JPEG engines on this GPU");
  }
  std::vector<DeviceJpegJob> jobs;
  for (const PackedImages::DeviceJpeg& j : batch.device_jpegs)
    jobs.push_back({j.encoded.data(), j.encoded.size(), base + j.offset, j.height, j.width});
  const std::vector<size_t> failed = decoder->decode(ctx.cuda_handles(), jobs);
  {
    std::lock_guard<std::mutex> count_lock(counts_mutex);
    counts.decoded_on_gpu += int64_t(jobs.size() - failed.size());
  }
  for (size_t i : failed) decode_on_host(ctx, batch.device_jpegs[i], base + batch.device_jpegs[i].offset);
  return pixels;
#else
  KD_FAIL("data.jpeg_decoder=nvjpeg: kd was built without nvJPEG");
#endif
}

}  // namespace

DeviceJpegCounts device_jpeg_counts() {
  std::lock_guard<std::mutex> lock(counts_mutex);
  return counts;
}

std::vector<Tensor> render_views_at(Context& ctx, const PackedImages& batch, const std::vector<ViewRecipe>& recipes,
                                    const Normalization& norm, const std::vector<int64_t>& resolutions) {
  std::vector<int64_t> unique;
  for (int64_t r : resolutions)
    if (std::find(unique.begin(), unique.end(), r) == unique.end()) unique.push_back(r);
  const std::vector<Tensor> rendered =
      batch.device_jpegs.empty()
          ? ops::augment_views(
                ctx, [&batch](uint8_t* dst) { batch.write_host_pixels(dst); }, batch.host_bytes, batch.sources,
                recipes, norm, unique)
          : ops::augment_views(ctx, device_pixels(ctx, batch), batch.sources, recipes, norm, unique);
  std::vector<Tensor> out;
  for (int64_t r : resolutions) out.push_back(rendered[size_t(std::find(unique.begin(), unique.end(), r) - unique.begin())]);
  return out;
}

std::pair<Tensor, Tensor> render_views(Context& ctx, const PackedImages& batch, const std::vector<ViewRecipe>& recipes,
                                       const Normalization& norm, int64_t res1, int64_t res2) {
  std::vector<int64_t> resolutions{res1};
  if (res2 > 0) resolutions.push_back(res2);
  std::vector<Tensor> views = render_views_at(ctx, batch, recipes, norm, resolutions);
  return {views[0], views.size() > 1 ? views[1] : Tensor()};
}

void for_each_centre_crop_batch(Context& ctx, const SourcePtr& source, int64_t count, int64_t batch_size, int threads,
                                float crop_fraction, const Normalization& norm, const std::vector<int64_t>& resolutions,
                                const std::function<void(const std::vector<Tensor>& views, int64_t rows)>& f,
                                std::function<void(const std::string&, const std::string&)> on_bad_image) {
  LoaderOptions lo;
  lo.batch_size = int(batch_size);
  lo.num_threads = threads;
  lo.prefetch_batches = 2;
  lo.on_bad_image = std::move(on_bad_image);
  Loader loader(source, range_plan(0, count, batch_size), lo);
  while (auto batch = loader.next()) {
    const PackedImages packed = pack_images(batch->images);
    auto views = make_eval_views(packed.file_sizes, crop_fraction);
    place_views(views, packed);
    f(render_views_at(ctx, packed, views, norm, resolutions), int64_t(batch->size()));
  }
}

}  // namespace kd
