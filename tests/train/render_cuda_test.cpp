// JPEGs decoded on the GPU by nvJPEG (kernels/jpeg_device.h, train/render.h) against
// libjpeg-turbo on the host: the pixels (baseline 4:2:0 and 4:4:4, progressive, grey, odd sizes)
// within JPEG's decoder tolerance, a corrupt file in the middle of a batch not spoiling its
// neighbours, and views rendered from device-decoded pixels equal to views of host-decoded ones
// within that tolerance. GPU only; skips with the reason elsewhere.
#include <gtest/gtest.h>

#include "tests/support/testing.h"

#if KD_HAVE_CUDA && KD_HAVE_NVJPEG && KD_HAVE_JPEG
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "data/jpeg.h"
#include "engine/ops.h"
#include "kernels/jpeg_device.h"
#include "tests/data/jpeg_fixtures.h"
#include "tests/kernels/cuda_test_util.h"
#include "train/render.h"

namespace kd {
namespace {

struct File {
  std::vector<uint8_t> bytes;
  int w, h;
};

std::vector<File> files() {
  std::vector<File> out;
  uint64_t seed = 3;
  for (int channels : {3, 1})
    for (bool progressive : {false, true})
      for (bool c444 : {false, true}) {
        if (channels == 1 && c444) continue;
        const int w = 200 + int(seed * 13 % 57), h = 150 - int(seed * 7 % 31);
        out.push_back({encode(photo_like(w, h, channels, seed), w, h, channels, 90, progressive, c444), w, h});
        ++seed;
      }
  return out;
}

TEST(NvjpegCuda, DecodesLikeLibjpegTurbo) {
  KD_REQUIRE_CUDA();
  Context& ctx = test::cuda_test_context();
  const std::vector<File> fs = files();
  std::vector<File> batch = fs;
  // A corrupt file in the middle: the header is intact, the entropy-coded data is not.
  File corrupt = fs[0];
  for (size_t i = corrupt.bytes.size() / 2; i < corrupt.bytes.size() - 2; ++i) corrupt.bytes[i] = uint8_t(i * 37);
  batch.insert(batch.begin() + 2, corrupt);
  size_t total = 0;
  for (const File& f : batch) total += size_t(f.w) * f.h * 3;
  test::DeviceArray<uint8_t> out(total);
  std::vector<DeviceJpegJob> jobs;
  size_t offset = 0;
  for (const File& f : batch) {
    jobs.push_back({f.bytes.data(), f.bytes.size(), out.get() + offset, f.h, f.w});
    offset += size_t(f.w) * f.h * 3;
  }
  DeviceJpegDecoder decoder;
  const std::vector<size_t> failed = decoder.decode(ctx.cuda_handles(), jobs);
  const std::vector<uint8_t> pixels = out.download();
  std::printf("[ nvjpeg ] %s; failed jobs:", decoder.has_hardware_backend() ? "hardware engines" : "default backend");
  for (size_t i : failed) std::printf(" %zu", i);
  std::printf("\n");
  offset = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const File& f = batch[i];
    const size_t n = size_t(f.w) * f.h * 3;
    if (i != 2) {
      EXPECT_EQ(std::count(failed.begin(), failed.end(), i), 0) << "file " << i;
      const Image want = decode_jpeg(f.bytes.data(), f.bytes.size(), "host");
      Image got;
      got.width = f.w, got.height = f.h;
      got.pixels.assign(pixels.begin() + std::ptrdiff_t(offset), pixels.begin() + std::ptrdiff_t(offset + n));
      const Diff d = compare(got, want);
      std::printf("[ nvjpeg ] file %zu (%dx%d): mean |gpu - turbo| %.3f, max %d\n", i, f.w, f.h, d.mean, d.max);
      EXPECT_LE(d.mean, 2.0) << "file " << i;
      // Chroma upsampling differs at saturated edges: the H200's hardware engines gave max 66
      // and 53 on two of these files (mean 0.80 and 0.88) on their first run.
      EXPECT_LE(d.max, 96) << "file " << i;
    }
    offset += n;
  }
}

TEST(NvjpegCuda, ViewsOfGpuDecodedImagesMatchViewsOfHostDecodedOnes) {
  KD_REQUIRE_CUDA();
  Context& ctx = test::cuda_test_context();
  const std::vector<File> fs = files();
  std::vector<Image> on_gpu, on_host;
  std::vector<ViewRecipe> recipes;
  for (size_t i = 0; i < fs.size(); ++i) {
    on_gpu.push_back(decode_image(fs[i].bytes.data(), fs[i].bytes.size(), "f.jpg", JpegDecoder::nvjpeg));
    on_host.push_back(decode_image(fs[i].bytes.data(), fs[i].bytes.size(), "f.jpg", JpegDecoder::turbo));
    ViewRecipe r;
    r.a.image = int32_t(i), r.a.flip = i % 2;
    r.a.box = CropBox{float(i), float(2 * i), float(fs[i].h) * 0.7f, float(fs[i].w) * 0.6f};
    r.b.image = int32_t((i + 1) % fs.size()), r.b.box = CropBox{0, 0, float(fs[r.b.image].h), float(fs[r.b.image].w)};
    r.lambda = 0.7f;
    recipes.push_back(r);
  }
  on_gpu.push_back(on_host[0]);  // a host-decoded image in the same batch
  recipes[0].b.image = int32_t(on_gpu.size() - 1);
  on_host.push_back(on_host[0]);
  const std::vector<int64_t> res = {64, 40};
  const std::vector<Tensor> a = render_views_at(ctx, pack_images(on_gpu), recipes, Normalization(), res);
  const std::vector<Tensor> b = render_views_at(ctx, pack_images(on_host), recipes, Normalization(), res);
  for (size_t v = 0; v < res.size(); ++v) {
    const Tensor ha = ops::to_host_f32(ctx, a[v]), hb = ops::to_host_f32(ctx, b[v]);
    double mean = 0;
    for (int64_t i = 0; i < ha.numel(); ++i) mean += std::abs(ha.data<float>()[i] - hb.data<float>()[i]) * 127.5;
    mean /= double(ha.numel());
    std::printf("[ nvjpeg ] %lld-px views: mean |gpu-decoded - host-decoded| %.3f levels\n", (long long)res[v], mean);
    EXPECT_LE(mean, 2.0);
  }
  EXPECT_GE(device_jpeg_counts().decoded_on_gpu, int64_t(fs.size()));
}

}  // namespace
}  // namespace kd
#else
TEST(NvjpegCuda, NeedsCudaNvjpegAndLibjpegTurbo) {
  GTEST_SKIP() << "built without CUDA, nvJPEG or libjpeg-turbo";
}
#endif
