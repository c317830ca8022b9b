// AsyncReadback (engine/readback.h): a device-to-host copy the host does not wait for, which the
// training loop reads its statistics windows with.
#include "engine/readback.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "tests/support/testing.h"

namespace kd {
namespace {

std::vector<double> pattern(size_t n, double seed) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = seed + 0.5 * double(i) - 3.0 * double(i % 7);
  return v;
}

// Each start copies the bytes as they are when the copy runs (later writes do not show), also
// after the buffer grows; a second start before the first arrived is refused.
void check_round_trips(Context& ctx) {
  AsyncReadback read(ctx);
  EXPECT_TRUE(read.ready()) << "nothing in flight";
  for (size_t n : {size_t(12), size_t(5000), size_t(40)}) {
    const std::vector<double> want = pattern(n, double(n));
    Tensor src = Tensor::empty({int64_t(n)}, DType::f64, ctx);
    copy_bytes(src.raw(), ctx.device(), want.data(), Device::cpu, n * sizeof(double), &ctx);
    read.start(src.raw(), n * sizeof(double));
    fill_zero(src.raw(), ctx.device(), src.nbytes(), &ctx);  // queued after the copy
    const auto* got = static_cast<const double*>(read.wait());
    EXPECT_EQ(std::memcmp(got, want.data(), n * sizeof(double)), 0) << n;
    EXPECT_TRUE(read.ready());
    EXPECT_EQ(read.bytes(), n * sizeof(double));
  }
}

TEST(AsyncReadback, TheCpuCopyArrivesAtOnce) {
  auto ctx = Context::cpu();
  check_round_trips(*ctx);
  AsyncReadback read(*ctx);
  double x = 4.5;
  read.start(&x, sizeof x);
  EXPECT_FALSE(read.in_flight());
  EXPECT_EQ(*static_cast<const double*>(read.wait()), 4.5);
}

TEST(AsyncReadback, TheGpuCopyArrivesWithoutAWaitAndIsThenReady) {
  KD_REQUIRE_CUDA();
  auto ctx = Context::cuda(0);
  check_round_trips(*ctx);
  AsyncReadback read(*ctx);
  Tensor src = Tensor::empty({64}, DType::f64, *ctx);
  fill_zero(src.raw(), Device::cuda, src.nbytes(), ctx.get());
  read.start(src.raw(), src.nbytes());
  EXPECT_TRUE(read.in_flight());
  ctx->synchronize();
  EXPECT_TRUE(read.ready()) << "arrived once the stream drained";
  AsyncReadback dropped(*ctx);
  dropped.start(src.raw(), src.nbytes());  // destroyed in flight: waits before freeing
}

}  // namespace
}  // namespace kd
