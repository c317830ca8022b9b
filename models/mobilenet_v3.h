// MobileNetV3 exactly as timm's _gen_mobilenet_v3 builds it (timm/models/mobilenetv3.py):
//   mobilenetv3_large_100, mobilenetv3_large_075, mobilenetv3_small_100, mobilenetv3_small_075,
//   mobilenetv3_small_050 (the suffix is the channel multiplier in percent).
// Stem: conv_stem 3x3/2 (16 channels, rounded by the multiplier unless it is below 0.75) + bn1 +
// hard-swish. Blocks (efficientnet_blocks.h) in stages named blocks.{stage}.{j}, with timm's
// arch_def: per block kind (ds / ir / cn), kernel, stride (only a stage's first block strides),
// expansion ratio, output channels, squeeze-excite ratio 0.25 of the expanded width (ReLU inside,
// hard-sigmoid gate) and ReLU ("nre") or hard-swish. Channels are rounded with timm's
// make_divisible(v, 8): max(8, int(v + 4) // 8 * 8), plus 8 when that falls below 0.9 v.
// Head ("efficient head"): global average pool -> conv_head 1x1 with bias (1280 large / 1024
// small features, not scaled) -> hard-swish -> flatten -> classifier (Linear). No dropout or
// drop-path (timm's defaults are 0). BatchNorm eps 1e-5, momentum 0.1.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/layers.h"
#include "models/efficientnet_blocks.h"
#include "models/model.h"

namespace kd {

struct MobileNetV3Config {
  bool large = true;
  double multiplier = 1.0;  // channel multiplier
};

// "mobilenetv3_large_100" etc. -> true and the config; anything else false.
bool parse_mobilenetv3_arch(const std::string& arch, MobileNetV3Config* out);

// timm's make_divisible(v, divisor) with its defaults (min_value = divisor, round_limit = 0.9).
int64_t make_divisible(double v, int64_t divisor = 8);

// The blocks of each stage, rounded as timm's EfficientNetBuilder rounds them.
struct MobileNetV3Layout {
  int64_t stem = 16, head_features = 1280;
  std::vector<std::vector<MobileBlockSpec>> stages;
};
MobileNetV3Layout mobilenetv3_layout(const MobileNetV3Config& config);

class MobileNetV3 : public Model {
 public:
  MobileNetV3(const ModelSpec& spec, const MobileNetV3Config& config);
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  void children(const std::function<void(Layer&)>& visit) override;
  int64_t forward_macs(int64_t h, int64_t w) const override;
  Conv2d* input_conv() override { return &stem_->conv(); }
  std::vector<std::string> head_params() const override { return {"classifier.weight", "classifier.bias"}; }

 private:
  MobileNetV3Layout layout_;
  std::unique_ptr<ConvBnAct> stem_;
  std::vector<std::unique_ptr<MobileBlock>> blocks_;
  GlobalAvgPool gap_;
  std::unique_ptr<Conv2d> conv_head_;
  Act act_head_{Activation::hardswish};
  std::unique_ptr<Linear> classifier_;
};

}  // namespace kd
