// CudaGraph (engine/cuda_graph.h): work captured once from a context's stream and replayed; its
// pool memory private to it; a capture that cannot work fails with a message and leaves the
// context usable.
#include "engine/cuda_graph.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "tests/support/testing.h"
#if KD_HAVE_CUDA
#include "kernels/optim.h"
#endif

namespace kd {
namespace {

TEST(CudaGraph, ACpuContextCannotCapture) {
  auto cpu = Context::cpu();
  bool ran = false;
  const std::string why = test::error_of([&] { CudaGraph::capture(*cpu, [&] { ran = true; }); });
  EXPECT_NE(why.find("CUDA graphs need a CUDA context"), std::string::npos) << why;
  EXPECT_FALSE(ran);
}

#if KD_HAVE_CUDA

std::vector<float> read(Context& ctx, const Tensor& t) {
  std::vector<float> out(size_t(t.numel()));
  copy_bytes(out.data(), Device::cpu, t.raw(), Device::cuda, t.nbytes(), &ctx);
  return out;
}

// x <- 2 x + 1 per replay, through a pool temporary allocated inside the capture: nothing runs at
// capture, each launch applies it once, and memory allocated outside afterwards is never the
// temporary's (a replay would overwrite it).
TEST(CudaGraph, ReplaysApplyTheCapturedWorkOnItsOwnMemory) {
  KD_REQUIRE_CUDA();
  auto ctx = Context::cuda(0);
  const int64_t n = 1000 + 3;  // a scalar tail after the 16-byte vectors
  Tensor x = Tensor::empty({n}, DType::f32, *ctx), ones = Tensor::empty({n}, DType::f32, *ctx);
  std::vector<float> x0(static_cast<size_t>(n)), one(static_cast<size_t>(n), 1.0f);
  for (int64_t i = 0; i < n; ++i) x0[size_t(i)] = 0.25f * float(i % 17) - 1.5f;
  copy_bytes(x.raw(), Device::cuda, x0.data(), Device::cpu, x.nbytes(), ctx.get());
  copy_bytes(ones.raw(), Device::cuda, one.data(), Device::cpu, ones.nbytes(), ctx.get());
  void* temporary = nullptr;
  auto graph = CudaGraph::capture(*ctx, [&] {
    Tensor t = Tensor::empty({n}, DType::f32, *ctx);  // from the graph's private blocks
    temporary = t.raw();
    copy_bytes(t.raw(), Device::cuda, x.raw(), Device::cuda, x.nbytes(), ctx.get());
    accumulate_cuda(ctx->cuda_handles(), n, t.data<float>(), x.data<float>());     // x = 2 x
    accumulate_cuda(ctx->cuda_handles(), n, ones.data<float>(), x.data<float>());  // x = 2 x + 1
  });
  EXPECT_GE(graph->nodes(), 3u);
  EXPECT_GE(graph->private_bytes(), size_t(n) * sizeof(float));
  EXPECT_EQ(read(*ctx, x), x0) << "nothing runs at capture";
  std::vector<Tensor> outside;
  for (int i = 0; i < 4; ++i) {
    outside.push_back(Tensor::empty({n}, DType::f32, *ctx));
    EXPECT_NE(outside.back().raw(), temporary);
  }
  for (int r = 0; r < 3; ++r) graph->launch();
  const std::vector<float> got = read(*ctx, x);
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(got[size_t(i)], 8.0f * x0[size_t(i)] + 7.0f) << i;  // three times x -> 2 x + 1
  graph.reset();                                                  // its blocks go back to the pool
  bool reused = false;
  for (int i = 0; i < 4 && !reused; ++i)
    reused = outside.emplace_back(Tensor::empty({n}, DType::f32, *ctx)).raw() == temporary;
  EXPECT_TRUE(reused) << "a destroyed graph's memory is the pool's again";
}

// A read-back and a staging upload cannot be captured: each fails naming the problem, nothing of
// it ran, and the stream works afterwards.
TEST(CudaGraph, AnUncapturableStepFailsWithAMessageAndTheContextGoesOn) {
  KD_REQUIRE_CUDA();
  auto ctx = Context::cuda(0);
  Tensor x = Tensor::empty({64}, DType::f32, *ctx);
  std::vector<float> x0(64, 3.0f);
  copy_bytes(x.raw(), Device::cuda, x0.data(), Device::cpu, x.nbytes(), ctx.get());
  const std::string readback = test::error_of([&] {
    CudaGraph::capture(*ctx, [&] {
      scale_cuda(ctx->cuda_handles(), 64, 2.0f, x.data<float>());
      x.to(Device::cpu, ctx.get());
    });
  });
  EXPECT_NE(readback.find("CUDA graph capture failed"), std::string::npos) << readback;
  const std::string staging = test::error_of([&] {
    CudaGraph::capture(*ctx, [&] {
      std::memcpy(ctx->host_staging(16), x0.data(), 16);
      ctx->upload_staging(x.raw(), 16);
    });
  });
  EXPECT_NE(staging.find("host_staging"), std::string::npos) << staging;
  EXPECT_FALSE(ctx->capturing());
  scale_cuda(ctx->cuda_handles(), 64, 0.5f, x.data<float>());
  for (float v : read(*ctx, x)) ASSERT_EQ(v, 1.5f) << "the captured scale never ran; the later one did";
}

#endif

}  // namespace
}  // namespace kd
