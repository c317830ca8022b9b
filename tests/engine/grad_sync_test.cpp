// Gradient buckets and micro-batches: buckets cover the gradient buffer in order at parameter
// boundaries; during the last backward each bucket is reduced as soon as its last gradient is
// written, in bucket order, while backward goes on; K micro-batches add up to exactly what one
// pass over the same micro-batches adds when each is computed alone.
#include "engine/grad_sync.h"

#include <gtest/gtest.h>

#include <cstring>

#include "engine/bootstrap.h"
#include "engine/comm_nccl.h"
#include "engine/layers.h"
#include "engine/ops.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

// A communicator that claims two ranks and reduces nothing (the identity). Each all-reduce
// snapshots its data when it starts and notes how far backward had come (`stage`).
class RecordingComm final : public Communicator {
 public:
  RecordingComm() : Communicator(0, 2) {}
  struct Call {
    int64_t offset;  // into the gradient buffer `base`
    std::vector<float> snapshot;
    int stage;
  };
  const char* transport() const override { return "recording"; }
  bool accepts(Device) const override { return true; }
  CommTicket all_reduce(void* data, int64_t count, DType dtype, ReduceOp, Context&) override {
    EXPECT_EQ(dtype, DType::f32);
    const float* p = static_cast<const float*>(data);
    calls.push_back({p - base, std::vector<float>(p, p + count), stage});
    return CommTicket{int64_t(calls.size())};
  }
  CommTicket broadcast(void*, int64_t, DType, int, Context&) override { return CommTicket{0}; }
  CommTicket all_gather(const void*, void*, int64_t, DType, Context&) override { return CommTicket{0}; }
  void wait(CommTicket, Context&) override {}
  void wait_all(Context&) override { ++waits; }
  void all_reduce_host(double*, int64_t, ReduceOp) override {}
  std::vector<std::string> all_gather_host(const std::string& mine) override { return {mine, mine}; }
  void barrier() override {}
  std::vector<Call> calls;
  const float* base = nullptr;
  int stage = 0;
  int waits = 0;
};

// conv 3->16 -> GN+ReLU -> conv 16->32 -> GN+ReLU -> conv 32->32 -> pool -> dense 32->5
struct TinyNet {
  ParamStore store;
  Conv2d c1, c2, c3;
  GroupNormAct n1, n2;
  GlobalAvgPool pool;
  Linear head;
  static ConvSpec spec(int64_t in, int64_t out) {
    ConvSpec s;
    s.c_in = in, s.c_out = out, s.kernel = 3, s.weight_std = true;
    return s;
  }
  TinyNet()
      : c1(store, "c1", spec(3, 16)),
        c2(store, "c2", spec(16, 32)),
        c3(store, "c3", spec(32, 32)),
        n1(store, "n1", 16, 4),
        n2(store, "n2", 32, 4),
        head(store, "head", 32, 5, false, Linear::Init::timm_head) {}
  Tensor forward(Context& ctx, const Tensor& x) {
    Tensor y = n1.forward(ctx, c1.forward(ctx, x, Mode::train), Mode::train);
    y = n2.forward(ctx, c2.forward(ctx, y, Mode::train), Mode::train);
    return head.forward(ctx, pool.forward(ctx, c3.forward(ctx, y, Mode::train), Mode::train), Mode::train);
  }
  // *stage counts the layers whose backward has finished (0: none, 7: all).
  void backward(Context& ctx, const Tensor& dy, int* stage = nullptr) {
    int none = 0;
    int& k = stage ? *stage : none;
    k = 0;
    Tensor g = head.backward(ctx, dy);
    k = 1;
    g = pool.backward(ctx, g);
    k = 2;
    g = c3.backward(ctx, g);
    k = 3;
    g = n2.backward(ctx, g);
    k = 4;
    g = c2.backward(ctx, g);
    k = 5;
    g = n1.backward(ctx, g);
    k = 6;
    c1.backward(ctx, g);
    k = 7;
  }
};

Tensor images(Context& ctx, uint64_t seed) {
  Tensor x = Tensor::zeros_cpu({2, 8, 8, 3}, DType::f32);
  const auto v = test::random_vector<float>(size_t(x.numel()), seed);
  std::copy(v.begin(), v.end(), x.data<float>());
  return ops::to_activation(ctx, x);
}

// One micro-batch: forward, a fixed logits gradient, backward.
void micro_batch(Context& ctx, TinyNet& net, uint64_t seed, int* stage = nullptr) {
  Tensor logits = net.forward(ctx, images(ctx, seed));
  Tensor dy = Tensor::zeros_cpu(logits.shape(), DType::f32);
  const auto v = test::random_vector<float>(size_t(dy.numel()), seed + 100);
  std::copy(v.begin(), v.end(), dy.data<float>());
  net.backward(ctx, ctx.is_cuda() ? dy.to(Device::cuda, &ctx) : dy, stage);
}

std::vector<float> grads_of(const ParamStore& store, Context* ctx = nullptr) {
  const Tensor host = store.grads().is_cuda() ? store.grads().to(Device::cpu, ctx) : store.grads();
  const float* g = host.data<float>();
  return std::vector<float>(g, g + store.numel());
}

TEST(GradientBuckets, CoverTheBufferInOrderAtParameterBoundaries) {
  auto ctx = Context::cpu();
  TinyNet net;
  net.store.allocate(*ctx);
  // The layout is backward's order: the head first, the first conv last among the kernels.
  EXPECT_EQ(net.store.get("head.weight").offset, 0);
  EXPECT_LT(net.store.get("c3.weight").offset, net.store.get("c1.weight").offset);
  for (int64_t first : {4, 400, 1 << 20})
    for (int64_t size : {4, 4000, 30000, 1 << 22}) {
      const auto buckets = plan_gradient_buckets(net.store, first, size);
      int64_t next = 0, params = 0;
      for (size_t b = 0; b < buckets.size(); ++b) {
        EXPECT_EQ(buckets[b].offset, next);
        EXPECT_GT(buckets[b].count, 0);
        if (b + 1 < buckets.size()) {
          EXPECT_GE(buckets[b].count * 4, b == 0 ? first : size);
        }
        next += buckets[b].count, params += buckets[b].params;
        bool boundary = false;  // every bucket starts where a parameter starts
        for (const Param& p : net.store.params()) boundary |= p.offset == buckets[b].offset;
        EXPECT_TRUE(boundary);
      }
      EXPECT_EQ(next, net.store.numel());
      EXPECT_EQ(params, int64_t(net.store.params().size()));
    }
  EXPECT_EQ(plan_gradient_buckets(net.store, 4, 4).size(), net.store.params().size()) << "tiny buckets: one each";
}

TEST(GradientSync, BucketsStartDuringBackwardAsSoonAsTheirGradientsAreWritten) {
  auto ctx = Context::cpu();
  TinyNet net, reference;
  for (TinyNet* n : {&net, &reference}) {
    n->store.allocate(*ctx);
    n->store.init(3, *ctx);
  }
  micro_batch(*ctx, reference, 1);
  const std::vector<float> want = grads_of(reference.store);
  RecordingComm comm;
  comm.base = net.store.grads().data<float>();
  GradSyncOptions o;
  o.first_bucket_mb = 100.0 / (1 << 20), o.bucket_mb = 3000.0 / (1 << 20);  // several small buckets
  GradientSync sync(net.store, comm, o, *ctx);
  ASSERT_GE(sync.buckets().size(), 3u);
  sync.begin_micro_batch(0, *ctx);
  micro_batch(*ctx, net, 1, &comm.stage);
  const int stages_seen_before_end = int(comm.calls.size());
  sync.end_micro_batch(0, *ctx);
  EXPECT_EQ(stages_seen_before_end, int(sync.buckets().size())) << "every bucket started during backward";
  ASSERT_EQ(comm.calls.size(), sync.buckets().size());
  EXPECT_EQ(comm.waits, 1);
  for (size_t b = 0; b < comm.calls.size(); ++b) {
    const RecordingComm::Call& call = comm.calls[b];
    EXPECT_EQ(call.offset, sync.buckets()[b].offset) << "bucket order";
    // Started only once complete: what it reduced is the final gradient, bit for bit.
    EXPECT_EQ(call.snapshot, std::vector<float>(want.begin() + call.offset,
                                                want.begin() + call.offset + int64_t(call.snapshot.size())))
        << "bucket " << b;
  }
  EXPECT_LT(comm.calls.front().stage, 3) << "the head's bucket starts before the convolutions' backward";
  EXPECT_EQ(comm.calls.back().stage, 6) << "the last bucket (the first conv) starts when c1 finishes";
  EXPECT_EQ(grads_of(net.store), want);
}

TEST(GradientSync, MicroBatchesAddAsWholeTensorsWhateverTheBuckets) {
  auto ctx = Context::cpu();
  // The reference: each micro-batch's gradient computed alone, then added in order.
  std::vector<std::vector<float>> parts;
  for (uint64_t seed : {11, 12, 13}) {
    TinyNet alone;
    alone.store.allocate(*ctx);
    alone.store.init(3, *ctx);
    micro_batch(*ctx, alone, seed);
    parts.push_back(grads_of(alone.store));
  }
  std::vector<float> want = parts[0];
  for (size_t k = 1; k < parts.size(); ++k)
    for (size_t i = 0; i < want.size(); ++i) want[i] += parts[k][i];
  for (bool two_ranks : {false, true})
    for (bool overlap : {false, true}) {
      TinyNet net;
      net.store.allocate(*ctx);
      net.store.init(3, *ctx);
      RecordingComm recording;
      recording.base = net.store.grads().data<float>();
      auto local = make_local_communicator();
      Communicator& comm = two_ranks ? static_cast<Communicator&>(recording) : *local;
      GradSyncOptions o;
      o.accumulate = 3, o.overlap = overlap, o.first_bucket_mb = o.bucket_mb = 2000.0 / (1 << 20);
      GradientSync sync(net.store, comm, o, *ctx);
      for (int64_t k = 0; k < 3; ++k) {
        sync.begin_micro_batch(k, *ctx);
        micro_batch(*ctx, net, uint64_t(11 + k), &recording.stage);
        sync.end_micro_batch(k, *ctx);
      }
      EXPECT_EQ(grads_of(net.store), want) << "ranks " << (two_ranks ? 2 : 1) << ", overlap " << overlap;
      if (two_ranks) {
        // Only the last micro-batch communicates: every bucket once (or the whole buffer once).
        EXPECT_EQ(recording.calls.size(), overlap ? sync.buckets().size() : 1u);
        for (const auto& call : recording.calls) EXPECT_EQ(call.stage == 7, !overlap);
      }
      // The next step starts from the store's own buffer.
      EXPECT_EQ(net.store.params().front().grad.raw(),
                static_cast<void*>(net.store.grads().data<float>() + net.store.params().front().offset));
    }
}

// The bucketed path on a GPU through NCCL (one rank: buckets reduce to themselves): the
// collectives run on NCCL's stream, ordered after the backward kernels that wrote each bucket by
// events, and the gradients come out as without communication, with 1 and 3 micro-batches.
TEST(GradientSync, NcclBucketsOnOneGpuGiveTheLocalGradients) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  auto ctx = Context::cuda(0);
  CommOptions co;
  co.timeout_s = 60;
  auto nccl = make_nccl_communicator(make_local_bootstrap(), *ctx, co);
  auto local = make_local_communicator();
  for (int64_t accumulate : {1, 3})
    for (bool overlap : {true, false}) {
      std::vector<float> result[2];
      for (int use_nccl = 0; use_nccl < 2; ++use_nccl) {
        TinyNet net;
        net.store.allocate(*ctx);
        net.store.init(3, *ctx);
        GradSyncOptions o;
        o.accumulate = accumulate, o.overlap = overlap, o.reduce_single_rank = true;
        o.first_bucket_mb = o.bucket_mb = 2000.0 / (1 << 20);
        GradientSync sync(net.store, use_nccl ? *nccl : *local, o, *ctx);
        for (int64_t k = 0; k < accumulate; ++k) {
          sync.begin_micro_batch(k, *ctx);
          micro_batch(*ctx, net, uint64_t(21 + k));
          sync.end_micro_batch(k, *ctx);
        }
        result[use_nccl] = grads_of(net.store, ctx.get());
      }
      EXPECT_EQ(result[1], result[0]) << "accumulate " << accumulate << ", overlap " << overlap;
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
