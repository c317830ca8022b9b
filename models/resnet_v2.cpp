#include "models/resnet_v2.h"

#include <map>
#include <regex>

#include "models/arch_args.h"
#include "models/registry.h"

namespace kd {

// --- arch strings ------------------------------------------------------------------------------

static std::vector<int64_t> bit_depths(int depth) {
  static const std::map<int, std::vector<int64_t>> table{
      {26, {2, 2, 2, 2}}, {50, {3, 4, 6, 3}}, {101, {3, 4, 23, 3}}, {152, {3, 8, 36, 3}}};
  auto it = table.find(depth);
  return it == table.end() ? std::vector<int64_t>{} : it->second;
}

bool parse_resnetv2_arch(const std::string& arch, ResNetV2Config* out) {
  std::smatch m;
  static const std::regex timm_name(R"(resnetv2_(\d+)x(\d+)_bit)");
  if (std::regex_match(arch, m, timm_name)) {
    const int depth = std::stoi(m[1]), factor = std::stoi(m[2]);
    ResNetV2Config c;
    c.depths = bit_depths(depth);
    KD_CHECK(!c.depths.empty(), "arch '", arch, "': depth ", depth, " is not one of 26, 50, 101, 152");
    KD_CHECK(factor >= 1 && factor <= 4, "arch '", arch, "': width factor ", factor, " is not in 1..4");
    c.width = 64 * factor;
    c.stem = ResNetV2Config::Stem::fixed;
    *out = c;
    return true;
  }
  const auto args = parse_arch_call(arch, "resnetv2", {"depths", "width", "stem", "groups"},
                                    "resnetv2(depths=1-1-1, width=32, stem=conv3)");
  if (!args) return false;
  KD_CHECK(args->count("depths") && args->count("width"), "arch '", arch, "': depths and width are required");
  ResNetV2Config c;
  c.depths = arch_depths(arch, args->at("depths"));
  c.width = arch_positive_int(arch, "width", args->at("width"));
  if (args->count("groups")) c.groups = arch_positive_int(arch, "groups", args->at("groups"));
  if (args->count("stem")) {
    const std::string& stem = args->at("stem");
    KD_CHECK(stem == "fixed" || stem == "conv3", "arch '", arch, "': stem '", stem, "' is not one of fixed, conv3");
    c.stem = stem == "fixed" ? ResNetV2Config::Stem::fixed : ResNetV2Config::Stem::conv3;
  }
  *out = c;
  return true;
}

// --- bottleneck --------------------------------------------------------------------------------------

static ConvSpec std_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  ConvSpec s;
  s.c_in = in, s.c_out = out, s.kernel = kernel, s.stride = stride, s.weight_std = true, s.weight_std_eps = 1e-8f;
  return s;
}

PreActBottleneck::PreActBottleneck(ParamStore& store, const std::string& name, int64_t in, int64_t out,
                                   int64_t stride, bool project, int64_t groups)
    : norm1_(store, name + ".norm1", in, groups),
      norm2_(store, name + ".norm2", out / 4, groups),
      norm3_(store, name + ".norm3", out / 4, groups),
      conv1_(store, name + ".conv1", std_conv(in, out / 4, 1, 1)),
      conv2_(store, name + ".conv2", std_conv(out / 4, out / 4, 3, stride)),
      conv3_(store, name + ".conv3", std_conv(out / 4, out, 1, 1)) {
  // timm declares downsample before the norms; parameter order does not matter to kd (names do).
  if (project) downsample_ = std::make_unique<Conv2d>(store, name + ".downsample.conv", std_conv(in, out, 1, stride));
}

Tensor PreActBottleneck::forward(Context& ctx, const Tensor& x, Mode mode) {
  Tensor x_pre = norm1_.forward(ctx, x, mode);
  Tensor shortcut = downsample_ ? downsample_->forward(ctx, x_pre, mode) : x;
  Tensor y = conv1_.forward(ctx, x_pre, mode);
  x_pre = Tensor();
  y = conv2_.forward(ctx, norm2_.forward(ctx, y, mode), mode);
  y = conv3_.forward(ctx, norm3_.forward(ctx, y, mode), mode);
  return ops::add(ctx, y, shortcut);
}

Tensor PreActBottleneck::backward(Context& ctx, const Tensor& dy) {
  Tensor g = conv3_.backward(ctx, dy);
  g = norm3_.backward(ctx, g);
  g = conv2_.backward(ctx, g);
  g = norm2_.backward(ctx, g);
  Tensor dx_pre = conv1_.backward(ctx, g);
  if (downsample_) {
    dx_pre = ops::add(ctx, dx_pre, downsample_->backward(ctx, dy));
    return norm1_.backward(ctx, dx_pre);
  }
  return ops::add(ctx, norm1_.backward(ctx, dx_pre), dy);
}

void PreActBottleneck::children(const std::function<void(Layer&)>& visit) {
  for (Layer* l : std::initializer_list<Layer*>{&norm1_, &norm2_, &norm3_, &conv1_, &conv2_, &conv3_}) visit(*l);
  if (downsample_) visit(*downsample_);
}

void PreActBottleneck::output_size(int64_t* h, int64_t* w) const {
  const Conv2dShape s2 = conv2_.geometry();
  *h = (*h + 2 * s2.pad_h - s2.kh) / s2.stride_h + 1;
  *w = (*w + 2 * s2.pad_w - s2.kw) / s2.stride_w + 1;
}

int64_t PreActBottleneck::macs(int64_t h, int64_t w) const {
  int64_t oh = h, ow = w;
  output_size(&oh, &ow);
  const int64_t in = conv1_.spec().c_in, mid = conv1_.spec().c_out, out = conv3_.spec().c_out;
  int64_t total = h * w * in * mid + oh * ow * 9 * mid * mid + oh * ow * mid * out;
  if (downsample_) total += oh * ow * in * out;
  return total;
}

// --- the network ----------------------------------------------------------------------------------------

ResNetV2::ResNetV2(const ModelSpec& spec, const ResNetV2Config& config) : Model(spec), config_(config) {
  const bool fixed = config.stem == ResNetV2Config::Stem::fixed;
  stem_conv_ = std::make_unique<Conv2d>(params_, "stem.conv",
                                        std_conv(spec.in_channels, config.width, fixed ? 7 : 3, 2));
  if (fixed) stem_pool_ = std::make_unique<MaxPool2d>(3, 2, 1, /*pad_with_zero=*/true);
  int64_t in = config.width;
  for (size_t i = 0; i < config.depths.size(); ++i) {
    const int64_t out = 4 * config.width << i;
    for (int64_t j = 0; j < config.depths[i]; ++j) {
      const std::string name = "stages." + std::to_string(i) + ".blocks." + std::to_string(j);
      const int64_t stride = (j == 0 && i > 0) ? 2 : 1;
      blocks_.push_back(std::make_unique<PreActBottleneck>(params_, name, in, out, stride, j == 0, config.groups));
      in = out;
    }
  }
  norm_ = std::make_unique<GroupNormAct>(params_, "norm", in, config.groups);
  head_ = std::make_unique<Linear>(params_, "head.fc", in, spec.num_classes, /*file_4d=*/true,
                                   spec.zero_head ? Linear::Init::zeros : Linear::Init::timm_head);
}

Tensor ResNetV2::forward(Context& ctx, const Tensor& x, Mode mode) {
  KD_CHECK(x.ndim() == 4 && x.dim(3) == spec_.in_channels, spec_.arch, ": expected images [n, h, w, ",
           spec_.in_channels, "], got ", x.describe());
  Tensor y = stem_conv_->forward(ctx, x, mode);
  if (stem_pool_) y = stem_pool_->forward(ctx, y, mode);
  for (auto& b : blocks_) y = b->forward(ctx, y, mode);
  y = norm_->forward(ctx, y, mode);
  y = pool_.forward(ctx, y, mode);
  return head_->forward(ctx, y, mode);
}

Tensor ResNetV2::backward(Context& ctx, const Tensor& dy) {
  Tensor g = head_->backward(ctx, dy);
  g = pool_.backward(ctx, g);
  g = norm_->backward(ctx, g);
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) g = (*it)->backward(ctx, g);
  if (stem_pool_) g = stem_pool_->backward(ctx, g);
  return stem_conv_->backward(ctx, g);
}

void ResNetV2::children(const std::function<void(Layer&)>& visit) {
  visit(*stem_conv_);
  if (stem_pool_) visit(*stem_pool_);
  for (auto& b : blocks_) visit(*b);
  visit(*norm_);
  visit(pool_);
  visit(*head_);
}

int64_t ResNetV2::forward_macs(int64_t h, int64_t w) const {
  const int64_t k = stem_conv_->spec().kernel;
  h = (h + 2 * (k / 2) - k) / 2 + 1, w = (w + 2 * (k / 2) - k) / 2 + 1;
  int64_t total = h * w * k * k * spec_.in_channels * config_.width;
  if (stem_pool_) h = (h + 2 - 3) / 2 + 1, w = (w + 2 - 3) / 2 + 1;
  for (const auto& b : blocks_) {
    total += b->macs(h, w);
    b->output_size(&h, &w);
  }
  return total + config_.width * 4 * (int64_t(1) << (config_.depths.size() - 1)) * spec_.num_classes;
}

ArchFamily resnetv2_family() {
  ArchFamily f;
  f.name = "resnetv2";
  f.examples = {"resnetv2_{26,50,101,152}x{1,2,3,4}_bit (e.g. resnetv2_50x1_bit, resnetv2_152x2_bit)",
                "resnetv2(depths=D1-D2-..., width=W, stem=fixed|conv3[, groups=G])"};
  f.build = [](const ModelSpec& spec) -> std::unique_ptr<Model> {
    ResNetV2Config c;
    if (!parse_resnetv2_arch(spec.arch, &c)) return nullptr;
    return std::make_unique<ResNetV2>(spec, c);
  };
  return f;
}

}  // namespace kd
