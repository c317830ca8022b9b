#include "models/resnet.h"

#include "engine/ops.h"
#include "models/arch_args.h"
#include "models/registry.h"

namespace kd {

bool parse_resnet_arch(const std::string& arch, ResNetConfig* out) {
  ResNetConfig c;
  if (arch == "resnet18") {
    c.depths = {2, 2, 2, 2}, c.bottleneck = false;
  } else if (arch == "resnet34") {
    c.depths = {3, 4, 6, 3}, c.bottleneck = false;
  } else if (arch == "resnet50") {
    c.depths = {3, 4, 6, 3}, c.bottleneck = true;
  } else if (arch == "resnet101") {
    c.depths = {3, 4, 23, 3}, c.bottleneck = true;
  } else {
    const auto args = parse_arch_call(arch, "resnet", {"depths", "width", "block"},
                                      "resnet(depths=1-1, width=8, block=basic)");
    if (!args) return false;
    KD_CHECK(args->count("depths"), "arch '", arch, "': depths is required");
    c.depths = arch_depths(arch, args->at("depths"));
    if (args->count("width")) c.width = arch_positive_int(arch, "width", args->at("width"));
    if (args->count("block")) {
      const std::string& block = args->at("block");
      KD_CHECK(block == "basic" || block == "bottleneck", "arch '", arch, "': block '", block,
               "' is not one of basic, bottleneck");
      c.bottleneck = block == "bottleneck";
    }
  }
  *out = c;
  return true;
}

namespace {

ConvSpec conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  ConvSpec s;
  s.c_in = in, s.c_out = out, s.kernel = kernel, s.stride = stride;
  return s;
}

int64_t conv_out(int64_t size, int64_t kernel, int64_t stride) {
  return (size + 2 * same_padding(kernel, stride) - kernel) / stride + 1;
}

}  // namespace

ResNetBlock::ResNetBlock(ParamStore& store, const std::string& name, int64_t in, int64_t planes, int64_t stride,
                         bool bottleneck)
    : out_(bottleneck ? 4 * planes : planes), stride_(stride), bottleneck_(bottleneck) {
  // Declared in timm's order, so the parameter listing reads like timm's state dict.
  if (bottleneck) {
    convs_.push_back(std::make_unique<Conv2d>(store, name + ".conv1", conv(in, planes, 1, 1)));
    bns_.push_back(std::make_unique<BatchNorm2d>(store, name + ".bn1", planes));
    convs_.push_back(std::make_unique<Conv2d>(store, name + ".conv2", conv(planes, planes, 3, stride)));
    bns_.push_back(std::make_unique<BatchNorm2d>(store, name + ".bn2", planes));
    convs_.push_back(std::make_unique<Conv2d>(store, name + ".conv3", conv(planes, out_, 1, 1)));
    bns_.push_back(std::make_unique<BatchNorm2d>(store, name + ".bn3", out_, 1e-5f, 0.1f, /*zero_gamma=*/true));
  } else {
    convs_.push_back(std::make_unique<Conv2d>(store, name + ".conv1", conv(in, planes, 3, stride)));
    bns_.push_back(std::make_unique<BatchNorm2d>(store, name + ".bn1", planes));
    convs_.push_back(std::make_unique<Conv2d>(store, name + ".conv2", conv(planes, planes, 3, 1)));
    bns_.push_back(std::make_unique<BatchNorm2d>(store, name + ".bn2", planes, 1e-5f, 0.1f, /*zero_gamma=*/true));
  }
  for (size_t i = 0; i < convs_.size(); ++i) acts_.push_back(std::make_unique<Act>(Activation::relu));
  if (stride != 1 || in != out_) {
    down_conv_ = std::make_unique<Conv2d>(store, name + ".downsample.0", conv(in, out_, 1, stride));
    down_bn_ = std::make_unique<BatchNorm2d>(store, name + ".downsample.1", out_);
  }
}

// y = relu(bn_last(conv_last(... relu(bn1(conv1(x))))) + shortcut(x)); acts_.back() is after the sum.
Tensor ResNetBlock::forward(Context& ctx, const Tensor& x, Mode mode) {
  Tensor y = x;
  const size_t n = convs_.size();
  for (size_t i = 0; i < n; ++i) {
    y = bns_[i]->forward(ctx, convs_[i]->forward(ctx, y, mode), mode);
    if (i + 1 < n) y = acts_[i]->forward(ctx, y, mode);
  }
  Tensor shortcut = down_conv_ ? down_bn_->forward(ctx, down_conv_->forward(ctx, x, mode), mode) : x;
  return acts_.back()->forward(ctx, ops::add(ctx, y, shortcut), mode);
}

Tensor ResNetBlock::backward(Context& ctx, const Tensor& dy) {
  const Tensor g = acts_.back()->backward(ctx, dy);  // reaches both the main path and the shortcut
  Tensor gm = g;
  for (size_t i = convs_.size(); i-- > 0;) {
    if (i + 1 < convs_.size()) gm = acts_[i]->backward(ctx, gm);
    gm = convs_[i]->backward(ctx, bns_[i]->backward(ctx, gm));
  }
  const Tensor gs = down_conv_ ? down_conv_->backward(ctx, down_bn_->backward(ctx, g)) : g;
  return ops::add(ctx, gm, gs);
}

void ResNetBlock::children(const std::function<void(Layer&)>& visit) {
  for (size_t i = 0; i < convs_.size(); ++i) visit(*convs_[i]), visit(*bns_[i]);
  for (auto& a : acts_) visit(*a);
  if (down_conv_) visit(*down_conv_), visit(*down_bn_);
}

int64_t ResNetBlock::macs(int64_t h, int64_t w) const {
  int64_t total = 0;
  for (const auto& c : convs_) {
    const ConvSpec& s = c->spec();
    const int64_t oh = conv_out(h, s.kernel, s.stride), ow = conv_out(w, s.kernel, s.stride);
    total += oh * ow * s.kernel * s.kernel * s.c_in * s.c_out / s.groups;
    h = oh, w = ow;
  }
  if (down_conv_) total += h * w * down_conv_->spec().c_in * down_conv_->spec().c_out;
  return total;
}

ResNet::ResNet(const ModelSpec& spec, const ResNetConfig& config) : Model(spec), config_(config) {
  conv1_ = std::make_unique<Conv2d>(params_, "conv1", conv(spec.in_channels, config.width, 7, 2));
  bn1_ = std::make_unique<BatchNorm2d>(params_, "bn1", config.width);
  pool_ = std::make_unique<MaxPool2d>(3, 2, 1, /*pad_with_zero=*/false);
  int64_t in = config.width;
  for (size_t i = 0; i < config.depths.size(); ++i) {
    const int64_t planes = config.width << i;
    for (int64_t j = 0; j < config.depths[i]; ++j) {
      const std::string name = "layer" + std::to_string(i + 1) + "." + std::to_string(j);
      blocks_.push_back(
          std::make_unique<ResNetBlock>(params_, name, in, planes, j == 0 && i > 0 ? 2 : 1, config.bottleneck));
      in = blocks_.back()->out_channels();
    }
  }
  fc_ = std::make_unique<Linear>(params_, "fc", in, spec.num_classes, /*file_4d=*/false,
                                 spec.zero_head ? Linear::Init::zeros : Linear::Init::timm_head);
}

Tensor ResNet::forward(Context& ctx, const Tensor& x, Mode mode) {
  KD_CHECK(x.ndim() == 4 && x.dim(3) == spec_.in_channels, spec_.arch, ": expected images [n, h, w, ",
           spec_.in_channels, "], got ", x.describe());
  Tensor y = act1_.forward(ctx, bn1_->forward(ctx, conv1_->forward(ctx, x, mode), mode), mode);
  y = pool_->forward(ctx, y, mode);
  for (auto& b : blocks_) y = b->forward(ctx, y, mode);
  return fc_->forward(ctx, gap_.forward(ctx, y, mode), mode);
}

Tensor ResNet::backward(Context& ctx, const Tensor& dy) {
  Tensor g = gap_.backward(ctx, fc_->backward(ctx, dy));
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) g = (*it)->backward(ctx, g);
  g = pool_->backward(ctx, g);
  return conv1_->backward(ctx, bn1_->backward(ctx, act1_.backward(ctx, g)));
}

void ResNet::children(const std::function<void(Layer&)>& visit) {
  visit(*conv1_), visit(*bn1_), visit(act1_), visit(*pool_);
  for (auto& b : blocks_) visit(*b);
  visit(gap_), visit(*fc_);
}

int64_t ResNet::forward_macs(int64_t h, int64_t w) const {
  h = conv_out(h, 7, 2), w = conv_out(w, 7, 2);
  int64_t total = h * w * 49 * spec_.in_channels * config_.width;
  h = (h + 2 - 3) / 2 + 1, w = (w + 2 - 3) / 2 + 1;  // max-pool
  for (const auto& b : blocks_) {
    total += b->macs(h, w);
    if (b->stride() == 2) h = (h - 1) / 2 + 1, w = (w - 1) / 2 + 1;
  }
  return total + blocks_.back()->out_channels() * spec_.num_classes;
}

ArchFamily resnet_family() {
  ArchFamily f;
  f.name = "resnet";
  f.examples = {"resnet18", "resnet34", "resnet50", "resnet101 (timm's, BatchNorm)",
                "resnet(depths=1-1, width=8, block=basic)"};
  f.build = [](const ModelSpec& spec) -> std::unique_ptr<Model> {
    ResNetConfig c;
    if (!parse_resnet_arch(spec.arch, &c)) return nullptr;
    return std::make_unique<ResNet>(spec, c);
  };
  return f;
}

}  // namespace kd
