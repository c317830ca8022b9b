// Per-channel ops (engine/ops.h): a convolution's bias, squeeze-excite's channel scale, and the
// channel padding of small-channel convolutions.
#include <algorithm>

#include "engine/ops.h"
#include "engine/ops_internal.h"
#include "kernels/channel_pad.h"

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

namespace {

// pad (c_to > c_from) or slice (c_to < c_from) the last dimension of t.
Tensor resize_channels(Context& ctx, const Tensor& t, int64_t c_to, const char* op) {
  KD_CHECK(t.defined() && t.ndim() >= 1, op, ": needs a tensor with a channel dimension, got ",
           t.defined() ? t.describe() : std::string("none"));
  KD_CHECK(t.device() == ctx.device(), op, ": ", t.describe(), " is not on ", device_name(ctx.device()));
  const int64_t c_from = t.dim(-1), rows = t.numel() / std::max<int64_t>(c_from, 1);
  const bool pad = c_to >= c_from;
  Shape shape = t.shape();
  shape.back() = c_to;
  Tensor y = Tensor::empty(shape, t.dtype(), ctx);
  const int64_t c = pad ? c_from : c_to, c_pad = pad ? c_to : c_from;
  if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
    const CudaHandles& h = ctx.cuda_handles();
    if (t.dtype() == DType::bf16)
      pad ? pad_channels_cuda(h, rows, c, c_pad, t.data<bf16>(), y.data<bf16>())
          : slice_channels_cuda(h, rows, c, c_pad, t.data<bf16>(), y.data<bf16>());
    else
      pad ? pad_channels_cuda(h, rows, c, c_pad, t.data<float>(), y.data<float>())
          : slice_channels_cuda(h, rows, c, c_pad, t.data<float>(), y.data<float>());
#else
    no_cuda_path(op);
#endif
  } else if (t.dtype() == DType::f64) {
    pad ? pad_channels_cpu(rows, c, c_pad, t.data<double>(), y.data<double>())
        : slice_channels_cpu(rows, c, c_pad, t.data<double>(), y.data<double>());
  } else {
    pad ? pad_channels_cpu(rows, c, c_pad, t.data<float>(), y.data<float>())
        : slice_channels_cpu(rows, c, c_pad, t.data<float>(), y.data<float>());
  }
  return y;
}

}  // namespace

Tensor pad_channels(Context& ctx, const Tensor& t, int64_t c_pad) {
  KD_CHECK(t.defined() && t.ndim() >= 1 && c_pad >= t.dim(-1), "pad_channels: cannot pad ",
           t.defined() ? t.describe() : std::string("none"), " to ", c_pad, " channels");
  return resize_channels(ctx, t, c_pad, "pad_channels");
}

Tensor slice_channels(Context& ctx, const Tensor& t, int64_t c) {
  KD_CHECK(t.defined() && t.ndim() >= 1 && c >= 1 && c <= t.dim(-1), "slice_channels: cannot slice ",
           t.defined() ? t.describe() : std::string("none"), " to ", c, " channels");
  return resize_channels(ctx, t, c, "slice_channels");
}

}  // namespace kd::ops
