// Context::host_staging: the pinned upload buffer of a CUDA context (ops::augment's uploads).
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

}  // namespace
}  // namespace kd
