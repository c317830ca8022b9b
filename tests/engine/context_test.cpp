// Context::host_staging / upload_staging / upload: the ring of pinned upload buffers of a CUDA
// context (ops::augment's uploads, the labels, the fixed teacher's logits), which never waits for
// the stream.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "engine/context.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

TEST(Context, CpuContextHasNoHostStaging) {
  auto cpu = Context::cpu();
  const std::string why = test::error_of([&] { cpu->host_staging(16); });
  EXPECT_NE(why.find("host_staging"), std::string::npos) << why;
}

// A buffer of the asked size that uploads and downloads byte for byte, also after it has grown.
TEST(Context, HostStagingRoundTripsAndGrows) {
  KD_REQUIRE_CUDA();
  auto ctx = Context::cuda(0);
  for (size_t bytes : {size_t(1000), size_t(5) << 20, size_t(3000)}) {
    uint8_t* host = ctx->host_staging(bytes);
    ASSERT_NE(host, nullptr);
    for (size_t i = 0; i < bytes; ++i) host[i] = uint8_t((i * 131 + bytes) % 251);
    const std::vector<uint8_t> want(host, host + bytes);
    void* dev = device_alloc(bytes, 0);
    copy_bytes(dev, Device::cuda, host, Device::cpu, bytes, ctx.get());
    std::vector<uint8_t> back(bytes, 0);
    copy_bytes(back.data(), Device::cpu, dev, Device::cuda, bytes, ctx.get());
    device_free(dev);
    EXPECT_EQ(std::memcmp(back.data(), want.data(), bytes), 0) << bytes << " bytes";
  }
}

// Uploads without a host wait, many more than the ring has buffers, each of another size and
// content: every one arrives intact (a buffer is reused only after
// its copy), and upload() of a host tensor keeps shape, dtype and bytes.
TEST(Context, UploadsThroughTheStagingRingArriveIntact) {
  auto cpu = Context::cpu();
  Tensor host = Tensor::zeros_cpu({3, 5}, DType::i32);
  for (int64_t i = 0; i < host.numel(); ++i) host.data<int32_t>()[i] = int32_t(7 * i - 20);
  const Tensor same = upload(*cpu, host);
  EXPECT_EQ(same.device(), Device::cpu);
  EXPECT_EQ(std::memcmp(same.raw(), host.raw(), host.nbytes()), 0);
  EXPECT_NE(same.raw(), host.raw()) << "a copy";
  KD_REQUIRE_CUDA();
  auto ctx = Context::cuda(0);
  const int uploads = 4 * Context::kStagingSlots + 3;
  std::vector<std::vector<uint8_t>> sent;
  std::vector<void*> on_device;
  for (int k = 0; k < uploads; ++k) {
    const size_t bytes = size_t(1000 + 37 * k) << (k % 3 == 0 ? 10 : 0);
    std::vector<uint8_t> data(bytes);
    for (size_t i = 0; i < bytes; ++i) data[i] = uint8_t((i * 131 + size_t(k) * 17) % 251);
    std::memcpy(ctx->host_staging(bytes), data.data(), bytes);
    on_device.push_back(device_alloc(bytes, 0));
    ctx->upload_staging(on_device.back(), bytes);
    sent.push_back(std::move(data));
  }
  const Tensor dev = upload(*ctx, host);
  EXPECT_EQ(dev.device(), Device::cuda);
  EXPECT_EQ(dev.shape(), host.shape());
  const Tensor back = dev.to(Device::cpu, ctx.get());
  EXPECT_EQ(std::memcmp(back.raw(), host.raw(), host.nbytes()), 0);
  for (int k = 0; k < uploads; ++k) {
    std::vector<uint8_t> got(sent[size_t(k)].size());
    copy_bytes(got.data(), Device::cpu, on_device[size_t(k)], Device::cuda, got.size(), ctx.get());
    device_free(on_device[size_t(k)]);
    EXPECT_EQ(got, sent[size_t(k)]) << "upload " << k;
  }
}

// Uploads for kernels (the augment's pixels) into the ring's own device buffers, with and without
// the copy stream: each is read on the context's stream right after (a device-to-device copy
// stands for the kernel) while later uploads are already queued on the copy stream; every copy
// taken reads its own upload, also when a slot's device buffer grows.
TEST(Context, UploadsForKernelsOnTheCopyStreamAreReadAfterTheyArrive) {
  KD_REQUIRE_CUDA();
  auto ctx = Context::cuda(0);
  for (bool copy_stream : {true, false}) {
    ctx->set_copy_stream(copy_stream);
    const int uploads = 5 * Context::kStagingSlots + 1;
    std::vector<std::vector<uint8_t>> sent;
    std::vector<Tensor> taken;
    for (int k = 0; k < uploads; ++k) {
      const size_t bytes = (size_t(3000 + 101 * k)) << (k % 4 == 1 ? 11 : 0);  // some grow their slot
      std::vector<uint8_t> data(bytes);
      for (size_t i = 0; i < bytes; ++i) data[i] = uint8_t((i * 29 + size_t(k) * 71 + copy_stream) % 253);
      std::memcpy(ctx->host_staging(bytes), data.data(), bytes);
      const uint8_t* dev = ctx->upload_staging_for_kernels(bytes);
      Tensor copy = Tensor::empty({int64_t(bytes)}, DType::u8, *ctx);
      copy_bytes(copy.raw(), Device::cuda, dev, Device::cuda, bytes, ctx.get());
      taken.push_back(copy);
      sent.push_back(std::move(data));
    }
    for (int k = 0; k < uploads; ++k) {
      const Tensor back = taken[size_t(k)].to(Device::cpu, ctx.get());
      EXPECT_EQ(std::memcmp(back.raw(), sent[size_t(k)].data(), sent[size_t(k)].size()), 0)
          << "upload " << k << (copy_stream ? " on the copy stream" : " on the compute stream");
    }
  }
}

}  // namespace
}  // namespace kd
