#include "engine/grad_sync.h"

#include <algorithm>

#include "kernels/optim.h"

namespace kd {

std::vector<GradientBucket> plan_gradient_buckets(const ParamStore& store, int64_t first_bytes, int64_t bucket_bytes) {
  KD_CHECK(first_bytes > 0 && bucket_bytes > 0, "gradient buckets must have a positive size (comm.bucket_mb, ",
           "comm.first_bucket_mb)");
  std::vector<const Param*> order;
  for (const Param& p : store.params()) order.push_back(&p);
  std::sort(order.begin(), order.end(), [](const Param* a, const Param* b) { return a->offset < b->offset; });
  const int64_t element = int64_t(store.values().defined() ? dtype_size(store.values().dtype()) : 4);
  std::vector<GradientBucket> buckets;
  GradientBucket open;
  for (const Param* p : order) {
    if (open.params == 0) open.offset = p->offset;
    KD_CHECK(p->offset == open.offset + open.count, "gradient buckets: parameter '", p->name,
             "' is not contiguous with the one before it");
    open.count += p->numel();
    ++open.params;
    if (open.count * element >= (buckets.empty() ? first_bytes : bucket_bytes)) {
      buckets.push_back(open);
      open = GradientBucket{};
    }
  }
  if (open.params > 0) buckets.push_back(open);
  return buckets;
}

GradientSync::GradientSync(ParamStore& store, Communicator& comm, const GradSyncOptions& options, Context& ctx)
    : store_(store), comm_(comm), options_(options) {
  KD_CHECK(options.accumulate >= 1, "optim.accumulate must be at least 1, got ", options.accumulate);
  KD_CHECK(store.trainable(), "gradient sync over a parameter store without gradients");
  KD_CHECK(comm.accepts(ctx.device()), "the ", comm.transport(), " communicator cannot reduce gradients on ",
           device_name(ctx.device()));
  KD_CHECK(ctx.param_dtype() == DType::f32 || !reduces(), "data-parallel gradients must be f32, not ",
           dtype_name(ctx.param_dtype()));
  buckets_ = plan_gradient_buckets(store, int64_t(options.first_bucket_mb * double(1 << 20)),
                                   int64_t(options.bucket_mb * double(1 << 20)));
  bucket_of_.assign(store.params().size(), -1);
  for (size_t b = 0; b < buckets_.size(); ++b)
    for (const Param& p : store.params())
      if (p.offset >= buckets_[b].offset && p.offset < buckets_[b].offset + buckets_[b].count)
        bucket_of_[size_t(p.index)] = int32_t(b);
  if (options.accumulate > 1) micro_grads_ = Tensor::empty({store.numel()}, ctx.param_dtype(), ctx);
  store_.set_grad_hook([this](const Param& p) { on_grad_written(p); });
}

GradientSync::~GradientSync() {
  store_.set_grad_hook(nullptr);
  if (store_.trainable()) store_.point_grads_at(store_.grads());
}

void GradientSync::begin_micro_batch(int64_t k, Context& ctx) {
  KD_CHECK(k >= 0 && k < options_.accumulate, "micro-batch ", k, " of ", options_.accumulate);
  ctx_ = &ctx;
  micro_ = k;
  if (k == 0) {
    store_.point_grads_at(store_.grads());
  } else {
    fill_zero(micro_grads_.raw(), ctx.device(), micro_grads_.nbytes(), &ctx);
    store_.point_grads_at(micro_grads_);
  }
  hooked_ = k == options_.accumulate - 1 && reduces() && options_.overlap;
  if (hooked_) {
    remaining_.assign(buckets_.size(), 0);
    for (const GradientBucket& b : buckets_) remaining_[size_t(&b - buckets_.data())] = b.params;
    written_.assign(store_.params().size(), 0);
    next_launch_ = 0;
  }
}

void GradientSync::on_grad_written(const Param& p) {
  if (!hooked_) return;
  KD_CHECK(!written_[size_t(p.index)], "gradient of '", p.name, "' written twice in one backward pass");
  written_[size_t(p.index)] = 1;
  --remaining_[size_t(bucket_of_[size_t(p.index)])];
  // Buckets start in order (every rank issues the same collectives in the same order).
  while (next_launch_ < buckets_.size() && remaining_[next_launch_] == 0) launch(next_launch_++);
  comm_.progress();
}

void GradientSync::launch(size_t b) {
  const GradientBucket& bucket = buckets_[b];
  float* total = store_.grads().data<float>() + bucket.offset;
  if (micro_ > 0) {
    const float* part = micro_grads_.data<float>() + bucket.offset;
    if (ctx_->is_cuda()) {
#if KD_HAVE_CUDA
      accumulate_cuda(ctx_->cuda_handles(), bucket.count, part, total);
#endif
    } else {
      accumulate_cpu(bucket.count, part, total);
    }
  }
  comm_.all_reduce(total, bucket.count, DType::f32, ReduceOp::sum, *ctx_);
}

void GradientSync::end_micro_batch(int64_t k, Context& ctx) {
  KD_CHECK(k == micro_ && ctx_ == &ctx, "end_micro_batch(", k, ") does not match begin_micro_batch(", micro_, ")");
  const bool last = k == options_.accumulate - 1;
  if (hooked_) {
    while (next_launch_ < buckets_.size()) launch(next_launch_++);  // gradients nobody wrote
    hooked_ = false;
  } else if (k > 0) {
    // The whole micro-batch gradient at once; with more than one rank, then the one reduction.
    const int64_t n = store_.numel();
    if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
      accumulate_cuda(ctx.cuda_handles(), n, micro_grads_.data<float>(), store_.grads().data<float>());
#endif
    } else if (ctx.param_dtype() == DType::f64) {
      double* total = store_.grads().data<double>();
      const double* part = micro_grads_.data<double>();
      for (int64_t i = 0; i < n; ++i) total[i] += part[i];
    } else {
      accumulate_cpu(n, micro_grads_.data<float>(), store_.grads().data<float>());
    }
  }
  if (last && reduces() && !options_.overlap)
    comm_.all_reduce(store_.grads().data<float>(), store_.numel(), DType::f32, ReduceOp::sum, ctx);
  if (last) {
    comm_.wait_all(ctx);
    store_.point_grads_at(store_.grads());
  }
}

}  // namespace kd
