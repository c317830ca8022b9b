#include "models/mobilenet_v3.h"

#include <cmath>

#include "engine/ops.h"
#include "models/registry.h"

namespace kd {

bool parse_mobilenetv3_arch(const std::string& arch, MobileNetV3Config* out) {
  struct Known {
    const char* arch;
    bool large;
    double multiplier;
  };
  static const Known known[] = {{"mobilenetv3_large_100", true, 1.0},
                                {"mobilenetv3_large_075", true, 0.75},
                                {"mobilenetv3_small_100", false, 1.0},
                                {"mobilenetv3_small_075", false, 0.75},
                                {"mobilenetv3_small_050", false, 0.5}};
  for (const Known& k : known)
    if (arch == k.arch) {
      out->large = k.large, out->multiplier = k.multiplier;
      return true;
    }
  return false;
}

int64_t make_divisible(double v, int64_t divisor) {
  int64_t rounded = std::max(divisor, int64_t(v + double(divisor) / 2) / divisor * divisor);
  if (double(rounded) < 0.9 * v) rounded += divisor;
  return rounded;
}

namespace {

using Kind = MobileBlockSpec::Kind;

// One entry of timm's arch_def, e.g. 'ir_r3_k5_s2_e3_c40_se0.25_nre': kind, repeats, kernel,
// stride, expansion ratio, output channels, squeeze-excite ratio, ReLU (nre) or hard-swish.
struct ArchRow {
  Kind kind;
  int repeats, kernel, stride;
  double exp_ratio;
  int out;
  double se_ratio;
  bool relu;
};
using ArchStage = std::vector<ArchRow>;

// _gen_mobilenet_v3's arch_def for the non-minimal variants.
const std::vector<ArchStage>& arch_def(bool large) {
  static const std::vector<ArchStage> large_def = {
      {{Kind::ds, 1, 3, 1, 1.0, 16, 0.0, true}},
      {{Kind::ir, 1, 3, 2, 4.0, 24, 0.0, true}, {Kind::ir, 1, 3, 1, 3.0, 24, 0.0, true}},
      {{Kind::ir, 3, 5, 2, 3.0, 40, 0.25, true}},
      {{Kind::ir, 1, 3, 2, 6.0, 80, 0.0, false},
       {Kind::ir, 1, 3, 1, 2.5, 80, 0.0, false},
       {Kind::ir, 2, 3, 1, 2.3, 80, 0.0, false}},
      {{Kind::ir, 2, 3, 1, 6.0, 112, 0.25, false}},
      {{Kind::ir, 3, 5, 2, 6.0, 160, 0.25, false}},
      {{Kind::cn, 1, 1, 1, 1.0, 960, 0.0, false}},
  };
  static const std::vector<ArchStage> small_def = {
      {{Kind::ds, 1, 3, 2, 1.0, 16, 0.25, true}},
      {{Kind::ir, 1, 3, 2, 4.5, 24, 0.0, true}, {Kind::ir, 1, 3, 1, 3.67, 24, 0.0, true}},
      {{Kind::ir, 1, 5, 2, 4.0, 40, 0.25, false}, {Kind::ir, 2, 5, 1, 6.0, 40, 0.25, false}},
      {{Kind::ir, 2, 5, 1, 3.0, 48, 0.25, false}},
      {{Kind::ir, 3, 5, 2, 6.0, 96, 0.25, false}},
      {{Kind::cn, 1, 1, 1, 1.0, 576, 0.0, false}},
  };
  return large ? large_def : small_def;
}

}  // namespace

MobileNetV3Layout mobilenetv3_layout(const MobileNetV3Config& config) {
  MobileNetV3Layout layout;
  // fix_stem = multiplier < 0.75: the stem keeps 16 channels; otherwise round_chs_fn(16).
  layout.stem = config.multiplier < 0.75 ? 16 : make_divisible(16 * config.multiplier);
  layout.head_features = config.large ? 1280 : 1024;
  int64_t in = layout.stem;
  for (const ArchStage& rows : arch_def(config.large)) {
    std::vector<MobileBlockSpec> stage;
    for (const ArchRow& row : rows)
      for (int r = 0; r < row.repeats; ++r) {
        MobileBlockSpec b;
        b.kind = row.kind;
        b.in = in;
        b.out = make_divisible(row.out * config.multiplier);  // round_channels(out, multiplier)
        b.mid = row.kind == Kind::ir ? make_divisible(double(in) * row.exp_ratio) : in;
        b.kernel = row.kernel;
        b.stride = stage.empty() ? row.stride : 1;  // only a stage's first block strides
        // se_from_exp: the ratio applies to the block's (expanded) width, rounded by
        // round_channels at multiplier 1.
        if (row.se_ratio > 0) b.se_reduced = make_divisible(double(b.mid) * row.se_ratio);
        b.act = row.relu ? Activation::relu : Activation::hardswish;
        stage.push_back(b);
        in = b.out;
      }
    layout.stages.push_back(stage);
  }
  return layout;
}

MobileNetV3::MobileNetV3(const ModelSpec& spec, const MobileNetV3Config& config)
    : Model(spec), layout_(mobilenetv3_layout(config)) {
  ConvSpec stem;
  stem.c_in = spec.in_channels, stem.c_out = layout_.stem, stem.kernel = 3, stem.stride = 2;
  stem.fan_out_per_group = true;
  stem_ = std::make_unique<ConvBnAct>(params_, "conv_stem", "bn1", stem, Activation::hardswish);
  for (size_t i = 0; i < layout_.stages.size(); ++i)
    for (size_t j = 0; j < layout_.stages[i].size(); ++j)
      blocks_.push_back(std::make_unique<MobileBlock>(params_, "blocks." + std::to_string(i) + "." + std::to_string(j),
                                                      layout_.stages[i][j]));
  ConvSpec head;
  head.c_in = blocks_.back()->spec().out, head.c_out = layout_.head_features, head.bias = true;
  head.fan_out_per_group = true;
  conv_head_ = std::make_unique<Conv2d>(params_, "conv_head", head);
  classifier_ =
      std::make_unique<Linear>(params_, "classifier", layout_.head_features, spec.num_classes,
                               /*file_4d=*/false, spec.zero_head ? Linear::Init::zeros : Linear::Init::timm_head);
}

Tensor MobileNetV3::forward(Context& ctx, const Tensor& x, Mode mode) {
  KD_CHECK(x.ndim() == 4 && x.dim(3) == spec_.in_channels, spec_.arch, ": expected images [n, h, w, ",
           spec_.in_channels, "], got ", x.describe());
  Tensor y = stem_->forward(ctx, x, mode);
  for (auto& b : blocks_) y = b->forward(ctx, y, mode);
  const int64_t n = x.dim(0), c = y.dim(3);
  y = conv_head_->forward(ctx, gap_.forward(ctx, y, mode).reshape({n, 1, 1, c}), mode);
  y = act_head_.forward(ctx, y, mode).reshape({n, layout_.head_features});
  return classifier_->forward(ctx, y, mode);
}

Tensor MobileNetV3::backward(Context& ctx, const Tensor& dy) {
  const int64_t n = dy.dim(0);
  Tensor g = classifier_->backward(ctx, dy).reshape({n, 1, 1, layout_.head_features});
  g = conv_head_->backward(ctx, act_head_.backward(ctx, g));
  g = gap_.backward(ctx, g.reshape({n, g.dim(3)}));
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) g = (*it)->backward(ctx, g);
  return stem_->backward(ctx, g);
}

void MobileNetV3::children(const std::function<void(Layer&)>& visit) {
  visit(*stem_);
  for (auto& b : blocks_) visit(*b);
  visit(gap_), visit(*conv_head_), visit(act_head_), visit(*classifier_);
}

int64_t MobileNetV3::forward_macs(int64_t h, int64_t w) const {
  int64_t total = stem_->macs(h, w);
  h = stem_->out_size(h), w = stem_->out_size(w);
  for (const auto& b : blocks_) {
    total += b->macs(h, w);
    h = b->out_size(h), w = b->out_size(w);
  }
  const int64_t c = blocks_.back()->spec().out;
  return total + c * layout_.head_features + layout_.head_features * spec_.num_classes;
}

ArchFamily mobilenetv3_family() {
  ArchFamily f;
  f.name = "mobilenetv3";
  f.examples = {"mobilenetv3_large_100", "mobilenetv3_large_075", "mobilenetv3_small_100", "mobilenetv3_small_075",
                "mobilenetv3_small_050 (timm's MobileNetV3)"};
  f.build = [](const ModelSpec& spec) -> std::unique_ptr<Model> {
    MobileNetV3Config c;
    if (!parse_mobilenetv3_arch(spec.arch, &c)) return nullptr;
    return std::make_unique<MobileNetV3>(spec, c);
  };
  return f;
}

}  // namespace kd
