// Communicators with one rank: the local one on the CPU, and NCCL on one GPU (NCCL refuses two
// ranks on one GPU, so this is what a one-GPU machine can run; more ranks are tested over MPI).
#include "engine/comm.h"

#include <gtest/gtest.h>

#include "engine/bootstrap.h"
#include "engine/comm_nccl.h"
#include "engine/cuda_graph.h"
#include "tests/support/testing.h"
#if KD_HAVE_CUDA
#include "kernels/optim.h"
#endif

namespace kd {
namespace {

TEST(LocalComm, CollectivesOfOneRankKeepTheDataAndAllGatherCopies) {
  auto ctx = Context::cpu();
  auto comm = make_local_communicator();
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->size(), 1);
  auto x = test::random_vector<float>(37, 1);
  const auto before = x;
  comm->wait(comm->all_reduce(x.data(), 37, DType::f32, ReduceOp::sum, *ctx), *ctx);
  comm->wait(comm->broadcast(x.data(), 37, DType::f32, 0, *ctx), *ctx);
  EXPECT_EQ(x, before);
  std::vector<float> gathered(37, 0.0f);
  comm->all_gather(x.data(), gathered.data(), 37, DType::f32, *ctx);
  comm->wait_all(*ctx);
  EXPECT_EQ(gathered, x);
  double host[2] = {1.5, -2};
  comm->all_reduce_host(host, 2, ReduceOp::max);
  EXPECT_EQ(host[0], 1.5);
  EXPECT_EQ(comm->all_gather_host("abc"), std::vector<std::string>{"abc"});
  EXPECT_THROW(comm->all_reduce(x.data(), 1, DType::bf16, ReduceOp::sum, *ctx), Error);
  EXPECT_THROW(comm->broadcast(x.data(), 1, DType::f32, 1, *ctx), Error);
}

TEST(LocalBootstrap, OneRankBroadcastsAndGathersItself) {
  auto b = make_local_bootstrap();
  std::vector<uint8_t> blob = {1, 2, 3};
  b->broadcast(blob, 0);
  EXPECT_EQ(blob, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(b->all_gather(blob), std::vector<std::vector<uint8_t>>{blob});
}

#if KD_HAVE_CUDA
std::vector<float> download(Context& ctx, const Tensor& t) {
  const Tensor h = t.to(Device::cpu, &ctx);
  return std::vector<float>(h.data<float>(), h.data<float>() + h.numel());
}

std::unique_ptr<Communicator> one_rank_nccl(Context& ctx) {
  CommOptions o;
  o.timeout_s = 60;
  return make_nccl_communicator(make_local_bootstrap(), ctx, o);
}
#endif

TEST(NcclComm, OneRankOnOneGpuRunsEveryCollective) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  auto ctx = Context::cuda(0);
  auto comm = one_rank_nccl(*ctx);
  EXPECT_STREQ(comm->transport(), "nccl");
  EXPECT_TRUE(comm->accepts(Device::cuda));
  EXPECT_FALSE(comm->accepts(Device::cpu));
  const auto values = test::random_vector<float>(1 << 20, 2);
  Tensor host = Tensor::zeros_cpu({1 << 20}, DType::f32);
  std::copy(values.begin(), values.end(), host.data<float>());
  Tensor x = host.to(Device::cuda, ctx.get());
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
    comm->wait(comm->all_reduce(x.raw(), x.numel(), DType::f32, op, *ctx), *ctx);
    EXPECT_EQ(download(*ctx, x), values) << "one rank: the reduction is the identity";
  }
  comm->wait(comm->broadcast(x.raw(), x.numel(), DType::f32, 0, *ctx), *ctx);
  Tensor y = Tensor::empty({1 << 20}, DType::f32, *ctx);
  comm->all_gather(x.raw(), y.raw(), x.numel(), DType::f32, *ctx);
  comm->wait_all(*ctx);
  EXPECT_EQ(download(*ctx, y), values);
  double h[3] = {1, 2, 3};
  comm->all_reduce_host(h, 3, ReduceOp::sum);
  EXPECT_EQ(h[2], 3.0);
  comm->barrier();
  EXPECT_NE(comm->describe().find("nccl"), std::string::npos);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

// NCCL collectives inside a captured CUDA graph (run.cuda_graph with several ranks): the
// all-reduce becomes a node, ordered after the scale before it and before the one after; each
// replay applies both (x -> 2 x, then x -> 3 x around the identity reduction of one rank); the
// watchdog watches each launch (watch_launch) and wait_all after the capture has nothing left.
TEST(NcclComm, CollectivesCapturedInAGraphRunAtEveryReplay) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  auto ctx = Context::cuda(0);
  auto comm = one_rank_nccl(*ctx);
  EXPECT_TRUE(comm->captures_collectives());
  const auto values = test::random_vector<float>(4096 + 3, 3);
  Tensor host = Tensor::zeros_cpu({int64_t(values.size())}, DType::f32);
  std::copy(values.begin(), values.end(), host.data<float>());
  Tensor x = host.to(Device::cuda, ctx.get());
  auto graph = CudaGraph::capture(*ctx, [&] {
    scale_cuda(ctx->cuda_handles(), x.numel(), 2.0f, x.data<float>());
    // avg, not sum: one rank's in-place sum may be no work at all for NCCL, while avg multiplies
    // by 1/1 in a kernel, so a real NCCL node is captured (the values stay exact)
    comm->wait(comm->all_reduce(x.raw(), x.numel(), DType::f32, ReduceOp::avg, *ctx), *ctx);
    scale_cuda(ctx->cuda_handles(), x.numel(), 3.0f, x.data<float>());
    comm->wait_all(*ctx);
  });
  EXPECT_EQ(download(*ctx, x), values) << "nothing runs at capture";
  for (int r = 0; r < 2; ++r) {
    graph->launch();
    comm->watch_launch(*ctx, "replay " + std::to_string(r));
  }
  comm->wait_all(*ctx);
  const std::vector<float> got = download(*ctx, x);
  for (size_t i = 0; i < values.size(); ++i) {
    float want = values[i];
    for (int r = 0; r < 2; ++r) want = (want * 2.0f) * 3.0f;
    ASSERT_EQ(got[i], want) << i;
  }
  // Uncaptured collectives still work (and are watched) afterwards.
  comm->wait(comm->all_reduce(x.raw(), x.numel(), DType::f32, ReduceOp::max, *ctx), *ctx);
  EXPECT_EQ(download(*ctx, x), got);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
