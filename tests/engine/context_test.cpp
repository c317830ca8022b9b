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

}  // namespace
}  // namespace kd
