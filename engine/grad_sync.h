// Gradient synchronisation of data-parallel training, shared by every transport: gradient
// accumulation over micro-batches and the bucketed all-reduce that overlaps backward.
//
// Micro-batches: micro-batch 0 writes into the store's gradient buffer (zeroed by the last
// optimizer step); micro-batch k >= 1 writes into a zeroed buffer of its own, which is then
// added to the total as a whole tensor. So N ranks x K micro-batches add the same summands
// whatever N and K: 2 ranks give bit for bit what 1 rank with accumulate = 2 gives.
//
// Buckets: the flat gradient buffer, cut at parameter boundaries into pieces of about
// comm.bucket_mb (the first one small, so communication starts early), in the buffer's order,
// which is about the order backward writes (ParamStore::allocate). During the last micro-batch's
// backward, layers report each finished gradient (Param::grad_written); a bucket whose gradients
// are all written is reduced at once, in bucket order, while backward goes on. Only the last
// micro-batch communicates. Gradients are sums over the global batch (the loss is scaled by
// 1 / global batch), so the all-reduce is a sum.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/comm.h"
#include "engine/param.h"

namespace kd {

struct GradientBucket {
  int64_t offset = 0, count = 0;  // elements of the store's flat gradient buffer
  int32_t params = 0;             // parameters whose gradients it holds
};

// Buckets of at least first_bytes (the first) and bucket_bytes (the others; the last holds what
// remains), cut at parameter boundaries, covering the buffer in order.
std::vector<GradientBucket> plan_gradient_buckets(const ParamStore& store, int64_t first_bytes, int64_t bucket_bytes);

struct GradSyncOptions {
  int64_t accumulate = 1;      // micro-batches per step
  double bucket_mb = 25;       // MiB
  double first_bucket_mb = 1;  // MiB
  bool overlap = true;         // reduce buckets during backward; off: one all-reduce after it
  // Reduce even with one rank (the result does not change): exercises the bucketed path of a
  // transport on a machine with one GPU (NCCL refuses two ranks on one GPU).
  bool reduce_single_rank = false;
};

class GradientSync {
 public:
  GradientSync(ParamStore& store, Communicator& comm, const GradSyncOptions& options, Context& ctx);
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  // Around micro-batch k's backward, k = 0 .. accumulate - 1. After the last, every gradient of
  // the store holds the sum over the global batch, the same on every rank.
  void begin_micro_batch(int64_t k, Context& ctx);
  void end_micro_batch(int64_t k, Context& ctx);

  const std::vector<GradientBucket>& buckets() const { return buckets_; }
  int64_t accumulate() const { return options_.accumulate; }

 private:
  bool reduces() const { return comm_.size() > 1 || options_.reduce_single_rank; }
  void on_grad_written(const Param& p);
  void launch(size_t bucket);  // adds this micro-batch's part (accumulating) and starts its reduction

  ParamStore& store_;
  Communicator& comm_;
  GradSyncOptions options_;
  std::vector<GradientBucket> buckets_;
  std::vector<int32_t> bucket_of_;  // per parameter (declaration index)
  Tensor micro_grads_;              // micro-batches 1 .. K-1 (accumulate > 1 only)
  // The last micro-batch's bookkeeping.
  Context* ctx_ = nullptr;
  bool hooked_ = false;  // reducing buckets as backward fills them
  int64_t micro_ = 0;
  std::vector<int32_t> remaining_;  // per bucket: gradients not yet written
  std::vector<char> written_;       // per parameter
  size_t next_launch_ = 0;          // buckets [0, next_launch_) are reducing
};

}  // namespace kd
