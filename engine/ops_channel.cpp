// Per-channel ops (engine/ops.h): a convolution's bias and squeeze-excite's channel scale.
#include "engine/ops.h"
#include "engine/ops_internal.h"

namespace kd::ops {

using namespace detail;

void bias_add(Context& ctx, Tensor& y, const Tensor& bias) {
  check_activation(ctx, y, "bias_add", "y");
  KD_CHECK(y.ndim() >= 1, "bias_add: y ", y.describe(), " has no channel dimension");
  const int64_t c = y.dim(-1), rows = y.numel() / c;
  check_param(ctx, bias, {c}, "bias_add", "bias");
  dispatch(
      ctx, "bias_add",
      [&] { KD_IF_CUDA(bias_add_cuda(ctx.cuda_handles(), rows, c, bias.data<float>(), y.data<bf16>());) },
      [&](auto zero) {
        using T = decltype(zero);
        bias_add_cpu<T>(rows, c, bias.data<T>(), y.data<T>());
      });
}

void bias_backward(Context& ctx, const Tensor& dy, Tensor& dbias) {
  check_activation(ctx, dy, "bias_backward", "dy");
  KD_CHECK(dy.ndim() >= 1, "bias_backward: dy ", dy.describe(), " has no channel dimension");
  const int64_t c = dy.dim(-1), rows = dy.numel() / c;
  check_param(ctx, dbias, {c}, "bias_backward", "dbias");
  dispatch(
      ctx, "bias_backward",
      [&] { KD_IF_CUDA(bias_backward_cuda(ctx.cuda_handles(), rows, c, dy.data<bf16>(), dbias.data<float>());) },
      [&](auto zero) {
        using T = decltype(zero);
        bias_backward_cpu<T>(rows, c, dy.data<T>(), dbias.data<T>());
      });
}

namespace {

// x [n, h, w, c] and its gate s [n, 1, 1, c], both activations.
ChannelScaleShape scale_shape(const Context& ctx, const Tensor& x, const Tensor& s, const char* op) {
  check_activation(ctx, x, op, "x");
  check_activation(ctx, s, op, "gate");
  check_nhwc(x, op);
  ChannelScaleShape shape{x.dim(0), x.dim(1) * x.dim(2), x.dim(3)};
  check_shape(s, {shape.n, 1, 1, shape.c}, std::string(op) + " gate for x " + x.describe());
  return shape;
}

}  // namespace

Tensor channel_scale(Context& ctx, const Tensor& x, const Tensor& s) {
  const ChannelScaleShape shape = scale_shape(ctx, x, s, "channel_scale");
  Tensor y = new_activation(ctx, x.shape());
  dispatch(
      ctx, "channel_scale",
      [&] {
        KD_IF_CUDA(
            channel_scale_forward_cuda(ctx.cuda_handles(), shape, x.data<bf16>(), s.data<bf16>(), y.data<bf16>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        channel_scale_forward_cpu<T>(shape, x.data<T>(), s.data<T>(), y.data<T>());
      });
  return y;
}

Tensor channel_scale_backward(Context& ctx, const Tensor& x, const Tensor& s, const Tensor& dy, Tensor& ds) {
  const ChannelScaleShape shape = scale_shape(ctx, x, s, "channel_scale_backward");
  check_activation(ctx, dy, "channel_scale_backward", "dy");
  check_shape(dy, x.shape(), "channel_scale_backward dy");
  Tensor dx = new_activation(ctx, x.shape());
  ds = new_activation(ctx, s.shape());
  dispatch(
      ctx, "channel_scale_backward",
      [&] {
        KD_IF_CUDA(channel_scale_backward_cuda(ctx.cuda_handles(), shape, x.data<bf16>(), s.data<bf16>(),
                                               dy.data<bf16>(), dx.data<bf16>(), ds.data<bf16>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        channel_scale_backward_cpu<T>(shape, x.data<T>(), s.data<T>(), dy.data<T>(), dx.data<T>(), ds.data<T>());
      });
  return dx;
}

}  // namespace kd::ops
