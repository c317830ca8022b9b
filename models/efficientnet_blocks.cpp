#include "models/efficientnet_blocks.h"

#include "engine/ops.h"

namespace kd {

namespace {

int64_t conv_out(int64_t size, const ConvSpec& s) {
  const int64_t pad = s.padding >= 0 ? s.padding : same_padding(s.kernel, s.stride, s.dilation);
  return (size + 2 * pad - s.dilation * (s.kernel - 1) - 1) / s.stride + 1;
}

ConvSpec goog_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups, bool bias) {
  ConvSpec s;
  s.c_in = in, s.c_out = out, s.kernel = kernel, s.stride = stride, s.groups = groups, s.bias = bias;
  s.fan_out_per_group = true;
  return s;
}

}  // namespace

// --- ConvBnAct -------------------------------------------------------------------------------------

ConvBnAct::ConvBnAct(ParamStore& store, const std::string& conv_name, const std::string& bn_name, const ConvSpec& spec,
                     Activation act) {
  conv_ = std::make_unique<Conv2d>(store, conv_name, spec);
  bn_ = std::make_unique<BatchNorm2d>(store, bn_name, spec.c_out);
  if (act != Activation::identity) act_ = std::make_unique<Act>(act);
}

Tensor ConvBnAct::forward(Context& ctx, const Tensor& x, Mode mode) {
  Tensor y = bn_->forward(ctx, conv_->forward(ctx, x, mode), mode);
  return act_ ? act_->forward(ctx, y, mode) : y;
}

Tensor ConvBnAct::backward(Context& ctx, const Tensor& dy) {
  const Tensor g = act_ ? act_->backward(ctx, dy) : dy;
  return conv_->backward(ctx, bn_->backward(ctx, g));
}

void ConvBnAct::children(const std::function<void(Layer&)>& visit) {
  visit(*conv_), visit(*bn_);
  if (act_) visit(*act_);
}

int64_t ConvBnAct::out_size(int64_t size) const { return conv_out(size, spec()); }

int64_t ConvBnAct::macs(int64_t h, int64_t w) const {
  const ConvSpec& s = spec();
  return out_size(h) * out_size(w) * s.kernel * s.kernel * (s.c_in / s.groups) * s.c_out;
}

// --- SqueezeExcite -----------------------------------------------------------------------------------

SqueezeExcite::SqueezeExcite(ParamStore& store, const std::string& name, int64_t channels, int64_t reduced,
                             Activation reduce_act, Activation gate)
    : name_(name), channels_(channels), reduced_(reduced), act_(reduce_act), gate_(gate) {
  KD_CHECK(channels > 0 && reduced > 0, name, ": squeeze-excite needs positive channels, got ", channels, " -> ",
           reduced);
  reduce_ = std::make_unique<Conv2d>(store, name + ".conv_reduce", goog_conv(channels, reduced, 1, 1, 1, true));
  expand_ = std::make_unique<Conv2d>(store, name + ".conv_expand", goog_conv(reduced, channels, 1, 1, 1, true));
}

// s = gate(expand(act(reduce(mean_hw(x))))) as [n, 1, 1, c]; y = x * s.
Tensor SqueezeExcite::forward(Context& ctx, const Tensor& x, Mode mode) {
  KD_CHECK(x.ndim() == 4 && x.dim(3) == channels_, name_, ": expected [n, h, w, ", channels_, "], got ", x.describe());
  const int64_t n = x.dim(0);
  Tensor s = pool_.forward(ctx, x, mode).reshape({n, 1, 1, channels_});
  s = act_.forward(ctx, reduce_->forward(ctx, s, mode), mode);
  s = gate_.forward(ctx, expand_->forward(ctx, s, mode), mode);
  if (mode == Mode::train) x_ = x, s_ = s;
  return ops::channel_scale(ctx, x, s);
}

// dx = dy * s + (the gradient through the gate's mean over h, w).
Tensor SqueezeExcite::backward(Context& ctx, const Tensor& dy) {
  require_saved(x_, name_);
  Tensor ds;
  const Tensor dx = ops::channel_scale_backward(ctx, x_, s_, dy, ds);
  Tensor g = expand_->backward(ctx, gate_.backward(ctx, ds));
  g = reduce_->backward(ctx, act_.backward(ctx, g));
  g = pool_.backward(ctx, g.reshape({x_.dim(0), channels_}));
  x_ = s_ = Tensor();
  return ops::add(ctx, dx, g);
}

void SqueezeExcite::children(const std::function<void(Layer&)>& visit) {
  visit(pool_), visit(*reduce_), visit(act_), visit(*expand_), visit(gate_);
}

// --- MobileBlock ---------------------------------------------------------------------------------------

MobileBlock::MobileBlock(ParamStore& store, const std::string& name, const MobileBlockSpec& spec) : spec_(spec) {
  const std::string p = name + ".";
  const Activation act = spec.act, none = Activation::identity;
  auto add = [&](const std::string& conv, const std::string& bn, const ConvSpec& s, Activation a) {
    convs_.push_back(std::make_unique<ConvBnAct>(store, p + conv, p + bn, s, a));
  };
  auto add_se = [&](int64_t channels) {
    if (spec.se_reduced > 0)
      se_ = std::make_unique<SqueezeExcite>(store, p + "se", channels, spec.se_reduced, Activation::relu,
                                            Activation::hardsigmoid);
  };
  // Declared in timm's order, so the parameter listing reads like timm's state dict.
  switch (spec.kind) {
    case MobileBlockSpec::Kind::ds:
      add("conv_dw", "bn1", goog_conv(spec.in, spec.in, spec.kernel, spec.stride, spec.in, false), act);
      add_se(spec.in);
      add("conv_pw", "bn2", goog_conv(spec.in, spec.out, 1, 1, 1, false), none);
      break;
    case MobileBlockSpec::Kind::ir:
      add("conv_pw", "bn1", goog_conv(spec.in, spec.mid, 1, 1, 1, false), act);
      add("conv_dw", "bn2", goog_conv(spec.mid, spec.mid, spec.kernel, spec.stride, spec.mid, false), act);
      add_se(spec.mid);
      add("conv_pwl", "bn3", goog_conv(spec.mid, spec.out, 1, 1, 1, false), none);
      break;
    case MobileBlockSpec::Kind::cn:
      KD_CHECK(spec.se_reduced == 0, name, ": a ConvBnAct block has no squeeze-excite");
      add("conv", "bn1", goog_conv(spec.in, spec.out, spec.kernel, spec.stride, 1, false), act);
      break;
  }
}

Tensor MobileBlock::forward(Context& ctx, const Tensor& x, Mode mode) {
  Tensor y = x;
  for (size_t i = 0; i < convs_.size(); ++i) {
    if (se_ && i + 1 == convs_.size()) y = se_->forward(ctx, y, mode);
    y = convs_[i]->forward(ctx, y, mode);
  }
  return spec_.skip() ? ops::add(ctx, y, x) : y;
}

Tensor MobileBlock::backward(Context& ctx, const Tensor& dy) {
  Tensor g = dy;
  for (size_t i = convs_.size(); i-- > 0;) {
    g = convs_[i]->backward(ctx, g);
    if (se_ && i + 1 == convs_.size()) g = se_->backward(ctx, g);
  }
  return spec_.skip() ? ops::add(ctx, g, dy) : g;
}

void MobileBlock::children(const std::function<void(Layer&)>& visit) {
  for (size_t i = 0; i < convs_.size(); ++i) {
    if (se_ && i + 1 == convs_.size()) visit(*se_);
    visit(*convs_[i]);
  }
}

int64_t MobileBlock::out_size(int64_t size) const {
  for (const auto& c : convs_) size = c->out_size(size);
  return size;
}

int64_t MobileBlock::macs(int64_t h, int64_t w) const {
  int64_t total = 0;
  for (size_t i = 0; i < convs_.size(); ++i) {
    if (se_ && i + 1 == convs_.size()) total += se_->macs();
    total += convs_[i]->macs(h, w);
    h = convs_[i]->out_size(h), w = convs_[i]->out_size(w);
  }
  return total;
}

}  // namespace kd
