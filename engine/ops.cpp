#include "engine/ops.h"

#include <type_traits>

#include "engine/ops_internal.h"
#include "kernels/conv_onednn.h"
#include "kernels/conv_wgrad_im2col.h"
#include "kernels/linear.h"
#include "kernels/weight_std.h"

namespace kd::ops {

using namespace detail;

DType activation_dtype(const Context& ctx) { return ctx.activation_dtype(); }

// --- convolution --------------------------------------------------------------------------

Conv2dShape conv_shape_for(const Tensor& x, Conv2dShape s) {
  check_nhwc(x, "conv2d");
  s.n = x.dim(0), s.h = x.dim(1), s.w = x.dim(2), s.c_in = x.dim(3);
  validate(s);
  return s;
}

static Shape conv_weight_shape(const Conv2dShape& s) { return {s.c_out, s.kh, s.kw, s.c_in_per_group()}; }

int64_t conv_compute_channels(const Context& ctx, const Conv2dShape& s) {
  constexpr int64_t kTensorCoreChannels = 8;  // bf16 tensor-core engines want channels in 8s
  return ctx.conv_pad_channels() && s.groups == 1 && s.c_in < kTensorCoreChannels ? kTensorCoreChannels : s.c_in;
}

// A convolution's shape and FLOPs (2 x its multiply-adds, each direction) for an active OpProfile.
static void profile_conv(const Conv2dShape& s) {
  if (OpProfile::active()) profile_detail(s.describe(), 2.0 * double(s.macs()));
}

static Conv2dShape with_channels(Conv2dShape s, int64_t c_in) {
  s.c_in = c_in;
  return s;
}

Tensor conv2d(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dShape& s) {
  check_activation(ctx, x, "conv2d", "input");
  check_shape(x, {s.n, s.h, s.w, s.c_in}, "conv2d input (" + s.describe() + ")");
  check_shape(w, conv_weight_shape(s), "conv2d weight (" + s.describe() + ")");
  if (const int64_t c = conv_compute_channels(ctx, s); c != s.c_in)
    return conv2d(ctx, pad_channels(ctx, x, c), pad_channels(ctx, w, c), with_channels(s, c));
  Tensor y = new_activation(ctx, {s.n, s.out_h(), s.out_w(), s.c_out});
  profile_conv(s);
  dispatch(
      ctx, "conv2d",
      [&] { KD_IF_CUDA(conv2d_forward_cuda(ctx.cuda_handles(), s, x.data<bf16>(), w.data<bf16>(), y.data<bf16>());) },
      [&](auto zero) {
        using T = decltype(zero);
        if constexpr (std::is_same_v<T, float>)
          if (conv2d_forward_onednn(s, x.data<T>(), w.data<T>(), y.data<T>())) return;
        conv2d_forward_cpu<T>(s, x.data<T>(), w.data<T>(), y.data<T>());
      });
  return y;
}

Tensor conv2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dShape& s) {
  check_activation(ctx, dy, "conv2d_backward_data", "dy");
  check_shape(dy, {s.n, s.out_h(), s.out_w(), s.c_out}, "conv2d dy (" + s.describe() + ")");
  if (const int64_t c = conv_compute_channels(ctx, s); c != s.c_in)
    return slice_channels(ctx, conv2d_backward_data(ctx, dy, pad_channels(ctx, w, c), with_channels(s, c)), s.c_in);
  Tensor dx = new_activation(ctx, {s.n, s.h, s.w, s.c_in});
  profile_conv(s);
  dispatch(
      ctx, "conv2d_backward_data",
      [&] {
        KD_IF_CUDA(conv2d_backward_data_cuda(ctx.cuda_handles(), s, dy.data<bf16>(), w.data<bf16>(), dx.data<bf16>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        if constexpr (std::is_same_v<T, float>)
          if (conv2d_backward_data_onednn(s, dy.data<T>(), w.data<T>(), dx.data<T>())) return;
        conv2d_backward_data_cpu<T>(s, dy.data<T>(), w.data<T>(), dx.data<T>());
      });
  return dx;
}

void conv2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dShape& s, Tensor& dw) {
  check_param(ctx, dw, conv_weight_shape(s), "conv2d_backward_filter", "dw");
  if (const int64_t c = conv_compute_channels(ctx, s); c != s.c_in) {
    // dw's padded copy takes the += (the padded channels' gradients start at zero and are dropped).
    Tensor dw_padded = pad_channels(ctx, dw, c);
    conv2d_backward_filter(ctx, pad_channels(ctx, x, c), dy, with_channels(s, c), dw_padded);
    dw.copy_from(slice_channels(ctx, dw_padded, s.c_in), &ctx);
    return;
  }
  profile_conv(s);
  dispatch(
      ctx, "conv2d_backward_filter",
      [&] {
        KD_IF_CUDA(if (ctx.conv_wgrad_im2col() && conv_wgrad_im2col_applies(s)) {
          conv2d_backward_filter_im2col_cuda(ctx.cuda_handles(), s, x.data<bf16>(), dy.data<bf16>(), dw.data<float>());
        } else {
          conv2d_backward_filter_cuda(ctx.cuda_handles(), s, x.data<bf16>(), dy.data<bf16>(), dw.data<float>());
        })
      },
      [&](auto zero) {
        using T = decltype(zero);
        if constexpr (std::is_same_v<T, float>)
          if (conv2d_backward_filter_onednn(s, x.data<T>(), dy.data<T>(), dw.data<T>())) return;
        conv2d_backward_filter_cpu<T>(s, x.data<T>(), dy.data<T>(), dw.data<T>());
      });
}

// --- weight standardisation ------------------------------------------------------------------

void weight_std(Context& ctx, const Tensor& w, float eps, Tensor& w_hat, Tensor& mean, Tensor& rstd) {
  const int64_t c_out = w.dim(0), k = w.numel() / c_out;
  check_param(ctx, w, w.shape(), "weight_std", "w");
  w_hat = Tensor::empty(w.shape(), activation_dtype(ctx), ctx);
  mean = Tensor::empty({c_out}, ctx.param_dtype(), ctx);
  rstd = Tensor::empty({c_out}, ctx.param_dtype(), ctx);
  dispatch(
      ctx, "weight_std",
      [&] {
        KD_IF_CUDA(weight_std_forward_cuda(ctx.cuda_handles(), c_out, k, eps, w.data<float>(), w_hat.data<bf16>(),
                                           mean.data<float>(), rstd.data<float>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        weight_std_forward_cpu<T>(c_out, k, eps, w.data<T>(), w_hat.data<T>(), mean.data<T>(), rstd.data<T>());
      });
}

void weight_std_backward(Context& ctx, const Tensor& w, const Tensor& mean, const Tensor& rstd, const Tensor& dw_hat,
                         Tensor& dw) {
  const int64_t c_out = w.dim(0), k = w.numel() / c_out;
  check_param(ctx, dw_hat, w.shape(), "weight_std_backward", "dw_hat");
  check_param(ctx, dw, w.shape(), "weight_std_backward", "dw");
  dispatch(
      ctx, "weight_std_backward",
      [&] {
        KD_IF_CUDA(weight_std_backward_cuda(ctx.cuda_handles(), c_out, k, w.data<float>(), mean.data<float>(),
                                            rstd.data<float>(), dw_hat.data<float>(), dw.data<float>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        weight_std_backward_cpu<T>(c_out, k, w.data<T>(), mean.data<T>(), rstd.data<T>(), dw_hat.data<T>(),
                                   dw.data<T>());
      });
}

// --- normalisation ------------------------------------------------------------------------------

Tensor groupnorm(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t groups, float eps,
                 bool relu, Tensor* mean, Tensor* rstd) {
  check_activation(ctx, x, "groupnorm", "input");
  check_nhwc(x, "groupnorm");
  GroupNormShape s{x.dim(0), x.dim(1) * x.dim(2), x.dim(3), groups};
  validate(s);
  check_param(ctx, gamma, {s.c}, "groupnorm", "gamma");
  check_param(ctx, beta, {s.c}, "groupnorm", "beta");
  Tensor y = new_activation(ctx, x.shape());
  Tensor m = Tensor::empty({s.n, groups}, ctx.param_dtype(), ctx),
         r = Tensor::empty({s.n, groups}, ctx.param_dtype(), ctx);
  if (OpProfile::active())  // minimal bytes: x read once, y written once
    profile_detail(shape_str(x.shape()) + " g" + std::to_string(groups), 0, 2.0 * double(x.nbytes()));
  dispatch(
      ctx, "groupnorm",
      [&] {
        KD_IF_CUDA(groupnorm_forward_cuda(ctx.cuda_handles(), s, eps, x.data<bf16>(), gamma.data<float>(),
                                          beta.data<float>(), relu, y.data<bf16>(), m.data<float>(), r.data<float>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        groupnorm_forward_cpu<T>(s, eps, x.data<T>(), gamma.data<T>(), beta.data<T>(), relu, y.data<T>(), m.data<T>(),
                                 r.data<T>());
      });
  if (mean) *mean = m;
  if (rstd) *rstd = r;
  return y;
}

Tensor groupnorm_backward(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                          const Tensor& rstd, int64_t groups, bool relu, const Tensor& dy, Tensor& dgamma,
                          Tensor& dbeta) {
  check_activation(ctx, dy, "groupnorm_backward", "dy");
  check_shape(dy, x.shape(), "groupnorm_backward dy");
  GroupNormShape s{x.dim(0), x.dim(1) * x.dim(2), x.dim(3), groups};
  check_param(ctx, dgamma, {s.c}, "groupnorm_backward", "dgamma");
  check_param(ctx, dbeta, {s.c}, "groupnorm_backward", "dbeta");
  Tensor dx = new_activation(ctx, x.shape());
  if (OpProfile::active())  // minimal bytes: x and dy read once, dx written once
    profile_detail(shape_str(x.shape()) + " g" + std::to_string(groups), 0, 3.0 * double(x.nbytes()));
  dispatch(
      ctx, "groupnorm_backward",
      [&] {
        KD_IF_CUDA(groupnorm_backward_cuda(ctx.cuda_handles(), s, x.data<bf16>(), gamma.data<float>(),
                                           beta.data<float>(), mean.data<float>(), rstd.data<float>(), relu,
                                           dy.data<bf16>(), dx.data<bf16>(), dgamma.data<float>(),
                                           dbeta.data<float>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        groupnorm_backward_cpu<T>(s, x.data<T>(), gamma.data<T>(), beta.data<T>(), mean.data<T>(), rstd.data<T>(), relu,
                                  dy.data<T>(), dx.data<T>(), dgamma.data<T>(), dbeta.data<T>());
      });
  return dx;
}

Tensor batchnorm_train(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                       float momentum, Tensor& running_mean, Tensor& running_var, Tensor& mean, Tensor& rstd) {
  check_activation(ctx, x, "batchnorm", "input");
  const int64_t c = x.dim(-1);
  BatchNormShape s{x.numel() / c, c};
  Tensor y = new_activation(ctx, x.shape());
  mean = Tensor::empty({c}, ctx.param_dtype(), ctx);
  rstd = Tensor::empty({c}, ctx.param_dtype(), ctx);
  dispatch(
      ctx, "batchnorm",
      [&] {
        KD_IF_CUDA(batchnorm_forward_train_cuda(ctx.cuda_handles(), s, eps, momentum, x.data<bf16>(),
                                                gamma.data<float>(), beta.data<float>(), y.data<bf16>(),
                                                mean.data<float>(), rstd.data<float>(), running_mean.data<float>(),
                                                running_var.data<float>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        batchnorm_forward_train_cpu<T>(s, eps, momentum, x.data<T>(), gamma.data<T>(), beta.data<T>(), y.data<T>(),
                                       mean.data<T>(), rstd.data<T>(), running_mean.data<T>(), running_var.data<T>());
      });
  return y;
}

Tensor batchnorm_eval(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                      const Tensor& running_mean, const Tensor& running_var) {
  check_activation(ctx, x, "batchnorm", "input");
  const int64_t c = x.dim(-1);
  BatchNormShape s{x.numel() / c, c};
  Tensor y = new_activation(ctx, x.shape());
  dispatch(
      ctx, "batchnorm",
      [&] {
        KD_IF_CUDA(batchnorm_forward_eval_cuda(ctx.cuda_handles(), s, eps, x.data<bf16>(), gamma.data<float>(),
                                               beta.data<float>(), running_mean.data<float>(),
                                               running_var.data<float>(), y.data<bf16>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        batchnorm_forward_eval_cpu<T>(s, eps, x.data<T>(), gamma.data<T>(), beta.data<T>(), running_mean.data<T>(),
                                      running_var.data<T>(), y.data<T>());
      });
  return y;
}

Tensor batchnorm_backward(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
                          const Tensor& dy, Tensor& dgamma, Tensor& dbeta) {
  check_activation(ctx, dy, "batchnorm_backward", "dy");
  const int64_t c = x.dim(-1);
  BatchNormShape s{x.numel() / c, c};
  Tensor dx = new_activation(ctx, x.shape());
  dispatch(
      ctx, "batchnorm_backward",
      [&] {
        KD_IF_CUDA(batchnorm_backward_cuda(ctx.cuda_handles(), s, x.data<bf16>(), gamma.data<float>(),
                                           mean.data<float>(), rstd.data<float>(), dy.data<bf16>(), dx.data<bf16>(),
                                           dgamma.data<float>(), dbeta.data<float>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        batchnorm_backward_cpu<T>(s, x.data<T>(), gamma.data<T>(), mean.data<T>(), rstd.data<T>(), dy.data<T>(),
                                  dx.data<T>(), dgamma.data<T>(), dbeta.data<T>());
      });
  return dx;
}

// --- pooling, pointwise, dense -------------------------------------------------------------------

Tensor maxpool(Context& ctx, const Tensor& x, MaxPoolShape s, Tensor* argmax) {
  check_activation(ctx, x, "maxpool", "input");
  check_nhwc(x, "maxpool");
  s.n = x.dim(0), s.h = x.dim(1), s.w = x.dim(2), s.c = x.dim(3);
  validate(s);
  Tensor y = new_activation(ctx, {s.n, s.out_h(), s.out_w(), s.c});
  Tensor idx = Tensor::empty(y.shape(), DType::i32, ctx);
  dispatch(
      ctx, "maxpool",
      [&] {
        KD_IF_CUDA(maxpool_forward_cuda(ctx.cuda_handles(), s, x.data<bf16>(), y.data<bf16>(), idx.data<int32_t>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        maxpool_forward_cpu<T>(s, x.data<T>(), y.data<T>(), idx.data<int32_t>());
      });
  if (argmax) *argmax = idx;
  return y;
}

Tensor maxpool_backward(Context& ctx, const Tensor& argmax, const Tensor& dy, const MaxPoolShape& s) {
  check_activation(ctx, dy, "maxpool_backward", "dy");
  check_shape(dy, {s.n, s.out_h(), s.out_w(), s.c}, "maxpool_backward dy");
  Tensor dx = new_activation(ctx, {s.n, s.h, s.w, s.c});
  dispatch(
      ctx, "maxpool_backward",
      [&] {
        KD_IF_CUDA(
            maxpool_backward_cuda(ctx.cuda_handles(), s, argmax.data<int32_t>(), dy.data<bf16>(), dx.data<bf16>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        maxpool_backward_cpu<T>(s, argmax.data<int32_t>(), dy.data<T>(), dx.data<T>());
      });
  return dx;
}

Tensor global_avgpool(Context& ctx, const Tensor& x) {
  check_activation(ctx, x, "global_avgpool", "input");
  check_nhwc(x, "global_avgpool");
  const int64_t n = x.dim(0), hw = x.dim(1) * x.dim(2), c = x.dim(3);
  Tensor y = new_activation(ctx, {n, c});
  dispatch(
      ctx, "global_avgpool",
      [&] { KD_IF_CUDA(global_avgpool_forward_cuda(ctx.cuda_handles(), n, hw, c, x.data<bf16>(), y.data<bf16>());) },
      [&](auto zero) {
        using T = decltype(zero);
        global_avgpool_forward_cpu<T>(n, hw, c, x.data<T>(), y.data<T>());
      });
  return y;
}

Tensor global_avgpool_backward(Context& ctx, const Tensor& dy, const Shape& x_shape) {
  check_activation(ctx, dy, "global_avgpool_backward", "dy");
  const int64_t n = x_shape[0], hw = x_shape[1] * x_shape[2], c = x_shape[3];
  check_shape(dy, {n, c}, "global_avgpool_backward dy");
  Tensor dx = new_activation(ctx, x_shape);
  dispatch(
      ctx, "global_avgpool_backward",
      [&] { KD_IF_CUDA(global_avgpool_backward_cuda(ctx.cuda_handles(), n, hw, c, dy.data<bf16>(), dx.data<bf16>());) },
      [&](auto zero) {
        using T = decltype(zero);
        global_avgpool_backward_cpu<T>(n, hw, c, dy.data<T>(), dx.data<T>());
      });
  return dx;
}

Tensor activation(Context& ctx, Activation a, const Tensor& x) {
  check_activation(ctx, x, "activation", "input");
  Tensor y = new_activation(ctx, x.shape());
  dispatch(
      ctx, "activation",
      [&] { KD_IF_CUDA(activation_forward_cuda(ctx.cuda_handles(), a, x.numel(), x.data<bf16>(), y.data<bf16>());) },
      [&](auto zero) {
        using T = decltype(zero);
        activation_forward_cpu<T>(a, x.numel(), x.data<T>(), y.data<T>());
      });
  return y;
}

Tensor activation_backward(Context& ctx, Activation a, const Tensor& x, const Tensor& dy) {
  check_activation(ctx, dy, "activation_backward", "dy");
  check_shape(dy, x.shape(), "activation_backward dy");
  Tensor dx = new_activation(ctx, x.shape());
  dispatch(
      ctx, "activation_backward",
      [&] {
        KD_IF_CUDA(activation_backward_cuda(ctx.cuda_handles(), a, x.numel(), x.data<bf16>(), dy.data<bf16>(),
                                            dx.data<bf16>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        activation_backward_cpu<T>(a, x.numel(), x.data<T>(), dy.data<T>(), dx.data<T>());
      });
  return dx;
}

Tensor add(Context& ctx, const Tensor& a, const Tensor& b) {
  check_activation(ctx, a, "add", "a");
  check_activation(ctx, b, "add", "b");
  check_shape(b, a.shape(), "add: b");
  Tensor y = new_activation(ctx, a.shape());
  dispatch(
      ctx, "add",
      [&] { KD_IF_CUDA(add_cuda(ctx.cuda_handles(), a.numel(), a.data<bf16>(), b.data<bf16>(), y.data<bf16>());) },
      [&](auto zero) {
        using T = decltype(zero);
        add_cpu<T>(a.numel(), a.data<T>(), b.data<T>(), y.data<T>());
      });
  return y;
}

Tensor linear(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_activation(ctx, x, "linear", "input");
  KD_CHECK(x.ndim() == 2 && w.ndim() == 2 && w.dim(1) == x.dim(1), "linear: input ", x.describe(),
           " does not match weight ", w.describe());
  LinearShape s{x.dim(0), x.dim(1), w.dim(0)};
  if (bias.defined()) check_param(ctx, bias, {s.out}, "linear", "bias");
  Tensor y = Tensor::empty({s.rows, s.out}, ctx.param_dtype(), ctx);
  dispatch(
      ctx, "linear",
      [&] {
        KD_IF_CUDA(linear_forward_cuda(ctx.cuda_handles(), s, x.data<bf16>(), w.data<bf16>(),
                                       bias.defined() ? bias.data<float>() : nullptr, y.data<float>());)
      },
      [&](auto zero) {
        using T = decltype(zero);
        linear_forward_cpu<T>(s, x.data<T>(), w.data<T>(), bias.defined() ? bias.data<T>() : nullptr, y.data<T>());
      });
  return y;
}

Tensor linear_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& dw, Tensor& dbias,
                       bool need_dx) {
  LinearShape s{x.dim(0), x.dim(1), w.dim(0)};
  check_param(ctx, dy, {s.rows, s.out}, "linear_backward", "dy");
  check_param(ctx, dw, {s.out, s.in}, "linear_backward", "dw");
  Tensor dx = need_dx ? new_activation(ctx, x.shape()) : Tensor();
  dispatch(
      ctx, "linear_backward",
      [&] {
        KD_IF_CUDA(linear_backward_cuda(ctx.cuda_handles(), s, x.data<bf16>(), w.data<bf16>(), dy.data<float>(),
                                        need_dx ? dx.data<bf16>() : nullptr, dw.data<float>(),
                                        dbias.defined() ? dbias.data<float>() : nullptr);)
      },
      [&](auto zero) {
        using T = decltype(zero);
        linear_backward_cpu<T>(s, x.data<T>(), w.data<T>(), dy.data<T>(), need_dx ? dx.data<T>() : nullptr,
                               dw.data<T>(), dbias.defined() ? dbias.data<T>() : nullptr);
      });
  return dx;
}

}  // namespace kd::ops
