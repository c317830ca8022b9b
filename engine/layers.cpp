#include "engine/layers.h"

#include <algorithm>
#include <cmath>

#include "engine/comm.h"
#include "engine/fp8_teacher.h"

namespace kd {

// --- Conv2d -------------------------------------------------------------------------------------

Conv2d::Conv2d(ParamStore& store, const std::string& name, const ConvSpec& spec) : spec_(spec), name_(name) {
  KD_CHECK(spec.c_in % spec.groups == 0 && spec.c_out % spec.groups == 0, name, ": ", spec.groups,
           " groups do not divide ", spec.c_in, " -> ", spec.c_out, " channels");
  if (spec_.padding < 0) spec_.padding = same_padding(spec.kernel, spec.stride, spec.dilation);
  const Shape shape{spec.c_out, spec.kernel, spec.kernel, spec.c_in / spec.groups};
  if (spec.fan_out_per_group) {
    const double fan_out = double(spec.c_out * spec.kernel * spec.kernel / spec.groups);
    weight_ = store.add(name + ".weight", shape, ParamInit::normal, /*decay=*/true, ParamLayout::conv_oihw,
                        float(std::sqrt(2.0 / fan_out)));
  } else {
    weight_ = store.add(name + ".weight", shape, ParamInit::kaiming_fan_out, /*decay=*/true, ParamLayout::conv_oihw);
  }
  // Frozen, a standardised conv reads only its cached w_hat; a plain one its compute copy.
  weight_->frozen_reads = spec.weight_std ? FrozenReads::nothing : FrozenReads::compute;
  if (spec.bias) bias_ = store.add(name + ".bias", {spec.c_out}, ParamInit::zeros, /*decay=*/false);
}

Conv2dShape Conv2d::geometry() const {
  Conv2dShape s;
  s.c_out = spec_.c_out;
  s.kh = s.kw = spec_.kernel;
  s.stride_h = s.stride_w = spec_.stride;
  s.pad_h = s.pad_w = spec_.padding;
  s.dilation_h = s.dilation_w = spec_.dilation;
  s.groups = spec_.groups;
  return s;
}

void Conv2d::on_frozen(bool frozen) {
  KD_CHECK(frozen || !spec_.weight_std || weight_->value.defined(), name_,
           ": the fp32 weights of this frozen model were released for inference; load the model again to train it");
  cached_w_hat_ = Tensor();
  if (!frozen) fp8_.reset();  // weights that change would need new scales
}

void Conv2d::on_prepare_inference(Context& ctx) {
  KD_CHECK(frozen_, name_, ": prepare_inference on a layer that is not frozen");
  if (spec_.weight_std) effective_weight(ctx, nullptr, nullptr);  // fills the cache
}

Tensor Conv2d::effective_weight(Context& ctx, Tensor* mean, Tensor* rstd) {
  if (!spec_.weight_std) return weight_->compute;
  if (frozen_ && cached_w_hat_.defined()) return cached_w_hat_;
  Tensor w_hat, m, r;
  ops::weight_std(ctx, weight_->value, spec_.weight_std_eps, w_hat, m, r);
  if (frozen_) cached_w_hat_ = w_hat;
  if (mean) *mean = m;
  if (rstd) *rstd = r;
  return w_hat;
}

Tensor Conv2d::forward(Context& ctx, const Tensor& x, Mode mode) {
  const Conv2dShape s = ops::conv_shape_for(x, geometry());
  KD_CHECK(s.c_in == spec_.c_in, name_, ": expected ", spec_.c_in, " input channels, got ", x.describe());
  const bool train = mode == Mode::train;
  KD_CHECK(!(train && frozen_), name_, ": training-mode forward through a frozen layer");
  Tensor mean, rstd;
  Tensor w = effective_weight(ctx, &mean, &rstd);
  if (fp8_) {  // inference in FP8 (engine/fp8_teacher.h)
    KD_CHECK(!train, name_, ": FP8 is for inference only (a frozen teacher)");
    Tensor y = fp8_conv_forward(ctx, *fp8_, x, w, s, name_);
    if (bias_) ops::bias_add(ctx, y, bias_->value);
    return y;
  }
  Tensor y = ops::conv2d(ctx, x, w, s);
  if (bias_) ops::bias_add(ctx, y, bias_->value);
  if (train) {
    x_ = x, w_hat_ = w, mean_ = mean, rstd_ = rstd, shape_ = s;
  }
  return y;
}

Tensor Conv2d::backward(Context& ctx, const Tensor& dy) {
  require_saved(x_, name_);
  if (bias_) {
    ops::bias_backward(ctx, dy, bias_->grad);
    bias_->grad_written();
  }
  Tensor dx = input_gradient_ ? ops::conv2d_backward_data(ctx, dy, w_hat_, shape_) : Tensor();
  if (spec_.weight_std) {
    Tensor dw_hat = Tensor::empty(weight_->shape, ctx.param_dtype(), ctx);
    fill_zero(dw_hat.raw(), ctx.device(), dw_hat.nbytes(), &ctx);
    ops::conv2d_backward_filter(ctx, x_, dy, shape_, dw_hat);
    ops::weight_std_backward(ctx, weight_->value, mean_, rstd_, dw_hat, weight_->grad);
  } else {
    ops::conv2d_backward_filter(ctx, x_, dy, shape_, weight_->grad);
  }
  weight_->grad_written();
  x_ = w_hat_ = mean_ = rstd_ = Tensor();
  return dx;
}

// --- GroupNormAct ----------------------------------------------------------------------------------

static int64_t largest_divisor_at_most(int64_t c, int64_t limit) {
  for (int64_t g = std::min(c, limit); g > 1; --g)
    if (c % g == 0) return g;
  return 1;
}

GroupNormAct::GroupNormAct(ParamStore& store, const std::string& name, int64_t channels, int64_t groups, float eps,
                           bool relu)
    : name_(name), groups_(largest_divisor_at_most(channels, groups)), eps_(eps), relu_(relu) {
  gamma_ = store.add(name + ".weight", {channels}, ParamInit::ones, /*decay=*/false);
  beta_ = store.add(name + ".bias", {channels}, ParamInit::zeros, /*decay=*/false);
}

Tensor GroupNormAct::forward(Context& ctx, const Tensor& x, Mode mode) {
  if (mode == Mode::eval) return ops::groupnorm(ctx, x, gamma_->value, beta_->value, groups_, eps_, relu_, nullptr, nullptr);
  Tensor y = ops::groupnorm(ctx, x, gamma_->value, beta_->value, groups_, eps_, relu_, &mean_, &rstd_);
  x_ = x;
  return y;
}

Tensor GroupNormAct::backward(Context& ctx, const Tensor& dy) {
  require_saved(x_, name_);
  Tensor dx = ops::groupnorm_backward(ctx, x_, gamma_->value, beta_->value, mean_, rstd_, groups_, relu_, dy,
                                      gamma_->grad, beta_->grad);
  gamma_->grad_written();
  beta_->grad_written();
  x_ = mean_ = rstd_ = Tensor();
  return dx;
}

// --- BatchNorm2d -------------------------------------------------------------------------------------

BatchNorm2d::BatchNorm2d(ParamStore& store, const std::string& name, int64_t channels, float eps, float momentum,
                         bool zero_gamma)
    : name_(name), eps_(eps), momentum_(momentum) {
  gamma_ = store.add(name + ".weight", {channels}, zero_gamma ? ParamInit::zeros : ParamInit::ones, /*decay=*/false);
  beta_ = store.add(name + ".bias", {channels}, ParamInit::zeros, /*decay=*/false);
  running_mean_ = store.add_buffer(name + ".running_mean", {channels}, ParamInit::zeros);
  running_var_ = store.add_buffer(name + ".running_var", {channels}, ParamInit::ones);
  num_batches_ = store.add_buffer(name + ".num_batches_tracked", {1}, ParamInit::zeros, /*scalar=*/true, DType::i64,
                                  /*host=*/true);
}

Tensor BatchNorm2d::forward(Context& ctx, const Tensor& x, Mode mode) {
  if (mode == Mode::eval || frozen_)
    return ops::batchnorm_eval(ctx, x, gamma_->value, beta_->value, eps_, running_mean_->value, running_var_->value);
  Tensor y;
  if (comm_ && comm_->size() > 1) {
    y = ops::batchnorm_train_synced(ctx, *comm_, x, gamma_->value, beta_->value, eps_, momentum_,
                                    running_mean_->value, running_var_->value, mean_, rstd_, total_count_);
  } else {
    y = ops::batchnorm_train(ctx, x, gamma_->value, beta_->value, eps_, momentum_, running_mean_->value,
                             running_var_->value, mean_, rstd_);
    total_count_ = Tensor();
  }
  Tensor& count = num_batches_->value;  // host memory
  if (count.dtype() == DType::f64)
    count.data<double>()[0] += 1;
  else
    count.data<float>()[0] += 1;
  x_ = x;
  return y;
}

Tensor BatchNorm2d::backward(Context& ctx, const Tensor& dy) {
  require_saved(x_, name_);
  Tensor dx = total_count_.defined()
                  ? ops::batchnorm_backward_synced(ctx, *comm_, x_, gamma_->value, mean_, rstd_, total_count_, dy,
                                                   gamma_->grad, beta_->grad)
                  : ops::batchnorm_backward(ctx, x_, gamma_->value, mean_, rstd_, dy, gamma_->grad, beta_->grad);
  gamma_->grad_written();
  beta_->grad_written();
  x_ = mean_ = rstd_ = total_count_ = Tensor();
  return dx;
}

Tensor Act::forward(Context& ctx, const Tensor& x, Mode mode) {
  if (mode == Mode::train) x_ = x;
  return ops::activation(ctx, a_, x);
}

Tensor Act::backward(Context& ctx, const Tensor& dy) {
  require_saved(x_, "activation");
  Tensor dx = ops::activation_backward(ctx, a_, x_, dy);
  x_ = Tensor();
  return dx;
}

// --- pooling -----------------------------------------------------------------------------------------

MaxPool2d::MaxPool2d(int64_t kernel, int64_t stride, int64_t padding, bool pad_with_zero) {
  shape_.k = kernel, shape_.stride = stride, shape_.pad = padding, shape_.pad_with_zero = pad_with_zero;
}

Tensor MaxPool2d::forward(Context& ctx, const Tensor& x, Mode mode) {
  MaxPoolShape s = shape_;
  s.n = x.dim(0), s.h = x.dim(1), s.w = x.dim(2), s.c = x.dim(3);
  if (mode == Mode::eval) return ops::maxpool(ctx, x, s, nullptr);
  shape_ = s;
  return ops::maxpool(ctx, x, s, &argmax_);
}

Tensor MaxPool2d::backward(Context& ctx, const Tensor& dy) {
  require_saved(argmax_, "maxpool");
  Tensor dx = ops::maxpool_backward(ctx, argmax_, dy, shape_);
  argmax_ = Tensor();
  return dx;
}

Tensor GlobalAvgPool::forward(Context& ctx, const Tensor& x, Mode mode) {
  if (mode == Mode::train) x_shape_ = x.shape();
  return ops::global_avgpool(ctx, x);
}

Tensor GlobalAvgPool::backward(Context& ctx, const Tensor& dy) {
  KD_CHECK(!x_shape_.empty(), "global_avgpool: backward called without a training-mode forward");
  return ops::global_avgpool_backward(ctx, dy, x_shape_);
}

// --- Linear --------------------------------------------------------------------------------------------

Linear::Linear(ParamStore& store, const std::string& name, int64_t in, int64_t out, bool file_4d, Init init)
    : name_(name) {
  const bool zero = init == Init::zeros;
  weight_ = store.add(name + ".weight", {out, in}, zero ? ParamInit::zeros : ParamInit::normal, /*decay=*/true,
                      ParamLayout::same, zero ? 0.0f : 0.01f, file_4d ? Shape{out, in, 1, 1} : Shape{});
  weight_->frozen_reads = FrozenReads::compute;
  bias_ = store.add(name + ".bias", {out}, ParamInit::zeros, /*decay=*/false);
}

Tensor Linear::forward(Context& ctx, const Tensor& x, Mode mode) {
  Tensor y = ops::linear(ctx, x, weight_->compute, bias_->value);
  if (mode == Mode::train) x_ = x;
  return y;
}

Tensor Linear::backward(Context& ctx, const Tensor& dy) {
  require_saved(x_, name_);
  Tensor dx = ops::linear_backward(ctx, x_, weight_->compute, dy, weight_->grad, bias_->grad, /*need_dx=*/true);
  weight_->grad_written();
  bias_->grad_written();
  x_ = Tensor();
  return dx;
}

}  // namespace kd
