// BiT ResNetV2 exactly as timm's resnetv2_*_bit computes it (../shared/RESNETV2.md):
// weight-standardised convolutions (eps 1e-8), GroupNorm(32) + ReLU, pre-activation bottlenecks
// with the stride on the 3x3 conv and a projection on block 0 of every stage, a final
// GroupNorm + ReLU, global average pooling and a dense head (timm: 1x1 conv).
#pragma once
#include <memory>
#include <vector>

#include "engine/layers.h"
#include "models/model.h"

namespace kd {

struct ResNetV2Config {
  std::vector<int64_t> depths{3, 4, 6, 3};  // bottleneck units per stage
  int64_t width = 64;                       // stem channels; stage i outputs 4 * width * 2^i
  enum class Stem { fixed, conv3 } stem = Stem::fixed;
  // fixed: 7x7/2 conv, zero pad 1, 3x3/2 max-pool (BiT). conv3: one 3x3/2 conv, no pool (small images).
  int64_t groups = 32;  // GroupNorm groups (BiT: 32); narrower layers use the largest divisor below
};

// Parses "resnetv2_50x1_bit" style names and "resnetv2(depths=..., width=..., stem=..., groups=...)".

// Returns false when the string is not a ResNetV2 arch; throws when it is one but malformed.
bool parse_resnetv2_arch(const std::string& arch, ResNetV2Config* out);

class PreActBottleneck : public Layer {
 public:
  PreActBottleneck(ParamStore& store, const std::string& name, int64_t in, int64_t out, int64_t stride, bool project,
                   int64_t groups);
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  void children(const std::function<void(Layer&)>& visit) override;
  int64_t macs(int64_t h, int64_t w) const;            // at input size h x w
  void output_size(int64_t* h, int64_t* w) const;      // spatial size after this block

 private:
  GroupNormAct norm1_, norm2_, norm3_;
  Conv2d conv1_, conv2_, conv3_;
  std::unique_ptr<Conv2d> downsample_;
};

class ResNetV2 : public Model {
 public:
  ResNetV2(const ModelSpec& spec, const ResNetV2Config& config);
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  void children(const std::function<void(Layer&)>& visit) override;
  int64_t forward_macs(int64_t h, int64_t w) const override;
  Conv2d* input_conv() override { return stem_conv_.get(); }
  std::vector<std::string> head_params() const override { return {"head.fc.weight", "head.fc.bias"}; }

 private:
  ResNetV2Config config_;
  std::unique_ptr<Conv2d> stem_conv_;
  std::unique_ptr<MaxPool2d> stem_pool_;
  std::vector<std::unique_ptr<PreActBottleneck>> blocks_;
  std::unique_ptr<GroupNormAct> norm_;
  GlobalAvgPool pool_;
  std::unique_ptr<Linear> head_;
};

}  // namespace kd
