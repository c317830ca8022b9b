// SyncBatchNorm: BatchNorm whose training statistics are those of every rank's batch. The
// kernels' stages (kernels/batchnorm.h) run around two collectives of the job's communicator:
// an all-gather of each rank's moments [count, mean, m2] (f64, 1 + 2c values) in the forward,
// an all-reduce of each rank's (sum dy, sum dy * x_hat) (f64, 2c values) in the backward. Every
// rank combines the same gathered moments in rank order, so the statistics and running
// statistics are bit for bit the same on every rank.
#include "engine/comm.h"
#include "engine/ops_internal.h"

namespace kd::ops {

using namespace detail;

namespace {

void check_comm(const Context& ctx, const Communicator& comm, const char* op) {
  KD_CHECK(comm.accepts(ctx.device()), op, ": the ", comm.transport(), " communicator cannot carry ",
           device_name(ctx.device()), " tensors (sync_bn needs the job's data communicator)");
}

}  // namespace

Tensor batchnorm_train_synced(Context& ctx, Communicator& comm, const Tensor& x, const Tensor& gamma,
                              const Tensor& beta, float eps, float momentum, Tensor& running_mean,
                              Tensor& running_var, Tensor& mean, Tensor& rstd, Tensor& total_count) {
  check_activation(ctx, x, "batchnorm_train_synced", "input");
  check_comm(ctx, comm, "batchnorm_train_synced");
  const int64_t c = x.dim(-1);
  const BatchNormShape s{x.numel() / c, c};
  check_param(ctx, gamma, {c}, "batchnorm_train_synced", "gamma");
  const int64_t width = batchnorm_moments_size(c);
  Tensor moments = Tensor::empty({width}, DType::f64, ctx);
  Tensor gathered = Tensor::empty({comm.size(), width}, DType::f64, ctx);
  Tensor y = new_activation(ctx, x.shape());
  mean = Tensor::empty({c}, ctx.param_dtype(), ctx);
  rstd = Tensor::empty({c}, ctx.param_dtype(), ctx);
  total_count = Tensor::empty({1}, DType::f64, ctx);
  auto exchange = [&] {
    comm.wait(comm.all_gather(moments.data<double>(), gathered.data<double>(), width, DType::f64, ctx), ctx);
  };
  dispatch(
      ctx, "batchnorm_train_synced",
      [&] {
        KD_IF_CUDA(const CudaHandles& h = ctx.cuda_handles();
                   batchnorm_moments_cuda(h, s, x.data<bf16>(), moments.data<double>()); exchange();
                   batchnorm_finish_moments_cuda(h, c, comm.size(), gathered.data<double>(), eps, momentum,
                                                 mean.data<float>(), rstd.data<float>(), total_count.data<double>(),
                                                 running_mean.data<float>(), running_var.data<float>());
                   batchnorm_normalize_cuda(h, s, x.data<bf16>(), mean.data<float>(), rstd.data<float>(),
                                            gamma.data<float>(), beta.data<float>(), y.data<bf16>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        batchnorm_moments_cpu<T>(s, x.data<T>(), moments.data<double>());
        exchange();
        batchnorm_finish_moments_cpu<T>(c, comm.size(), gathered.data<double>(), T(eps), T(momentum), mean.data<T>(),
                                        rstd.data<T>(), total_count.data<double>(), running_mean.data<T>(),
                                        running_var.data<T>());
        batchnorm_normalize_cpu<T>(s, x.data<T>(), mean.data<T>(), rstd.data<T>(), gamma.data<T>(), beta.data<T>(),
                                   y.data<T>());
      });
  return y;
}

Tensor batchnorm_backward_synced(Context& ctx, Communicator& comm, const Tensor& x, const Tensor& gamma,
                                 const Tensor& mean, const Tensor& rstd, const Tensor& total_count, const Tensor& dy,
                                 Tensor& dgamma, Tensor& dbeta) {
  check_activation(ctx, dy, "batchnorm_backward_synced", "dy");
  check_comm(ctx, comm, "batchnorm_backward_synced");
  KD_CHECK(total_count.defined() && total_count.dtype() == DType::f64 && total_count.numel() == 1,
           "batchnorm_backward_synced: the forward's total row count is missing");
  const int64_t c = x.dim(-1);
  const BatchNormShape s{x.numel() / c, c};
  const int64_t width = batchnorm_grad_sums_size(c);
  Tensor local = Tensor::empty({width}, DType::f64, ctx);
  Tensor total = Tensor::empty({width}, DType::f64, ctx);
  Tensor dx = new_activation(ctx, x.shape());
  // The all-reduce runs in place on `total`, a copy of the local sums (the parameter gradients
  // take the local ones); on the GPU the stage writes both, in stream order.
  auto exchange = [&] {
    comm.wait(comm.all_reduce(total.data<double>(), width, DType::f64, ReduceOp::sum, ctx), ctx);
  };
  dispatch(
      ctx, "batchnorm_backward_synced",
      [&] {
        KD_IF_CUDA(const CudaHandles& h = ctx.cuda_handles();
                   batchnorm_grad_sums_cuda(h, s, x.data<bf16>(), gamma.data<float>(), mean.data<float>(),
                                            rstd.data<float>(), dy.data<bf16>(), local.data<double>(),
                                            total.data<double>());
                   exchange();
                   batchnorm_backward_from_sums_cuda(h, s, x.data<bf16>(), gamma.data<float>(), mean.data<float>(),
                                                     rstd.data<float>(), dy.data<bf16>(), local.data<double>(),
                                                     total.data<double>(), total_count.data<double>(),
                                                     dx.data<bf16>(), dgamma.data<float>(), dbeta.data<float>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        batchnorm_grad_sums_cpu<T>(s, x.data<T>(), mean.data<T>(), rstd.data<T>(), dy.data<T>(),
                                   local.data<double>());
        total.copy_from(local);
        exchange();
        batchnorm_backward_from_sums_cpu<T>(s, x.data<T>(), gamma.data<T>(), mean.data<T>(), rstd.data<T>(),
                                            dy.data<T>(), local.data<double>(), total.data<double>(),
                                            total_count.data<double>()[0], dx.data<T>(), dgamma.data<T>(),
                                            dbeta.data<T>());
      });
  return dx;
}

}  // namespace kd::ops
