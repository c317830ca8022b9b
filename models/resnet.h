// ResNet with BatchNorm exactly as timm's resnet18/34/50/101 compute it (timm/models/resnet.py,
// the v1.5 variant): a 7x7/2 stem conv + BN + ReLU and a 3x3/2 max-pool; stages of BasicBlocks
// (3x3, 3x3) or Bottlenecks (1x1, 3x3 with the stride, 1x1 x4 expansion), each block's shortcut a
// 1x1 conv + BN where the shape changes, ReLU after the residual sum; global average pool and a
// dense head `fc` ([classes, features], not a 1x1 conv). Parameter and buffer names are timm's:
//   conv1.weight, bn1.{weight,bias,running_mean,running_var,num_batches_tracked},
//   layer{1..4}.{j}.conv{1,2[,3]}.weight, layer{i}.{j}.bn{1,2[,3]}.*,
//   layer{i}.0.downsample.0.weight (conv), layer{i}.0.downsample.1.* (BN), fc.weight, fc.bias.
// Initialisation as timm: convs kaiming-normal (fan out), BN 1/0, the last BN of every block
// zero (zero_init_last), so a block starts as its shortcut.
#pragma once
#include <memory>
#include <vector>

#include "engine/layers.h"
#include "models/model.h"

namespace kd {

struct ResNetConfig {
  std::vector<int64_t> depths{3, 4, 6, 3};  // blocks per stage
  bool bottleneck = true;                   // Bottleneck (resnet50/101) or BasicBlock (resnet18/34)
  int64_t width = 64;                       // stem channels; stage i has width << i planes
};

// "resnet18", "resnet34", "resnet50", "resnet101", or a small one for tests and experiments,
// "resnet(depths=1-1, width=8, block=basic)" (block: basic | bottleneck, the default; width
// defaults to 64) -> true and the config; anything else false.
bool parse_resnet_arch(const std::string& arch, ResNetConfig* out);

class ResNetBlock : public Layer {
 public:
  ResNetBlock(ParamStore& store, const std::string& name, int64_t in, int64_t planes, int64_t stride, bool bottleneck);
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  void children(const std::function<void(Layer&)>& visit) override;
  int64_t out_channels() const { return out_; }
  int64_t macs(int64_t h, int64_t w) const;  // at input size h x w
  int64_t stride() const { return stride_; }

 private:
  int64_t out_, stride_;
  bool bottleneck_;
  std::vector<std::unique_ptr<Conv2d>> convs_;     // conv1, conv2[, conv3]
  std::vector<std::unique_ptr<BatchNorm2d>> bns_;  // bn1, bn2[, bn3]
  std::vector<std::unique_ptr<Act>> acts_;         // after bn1, bn2 (bottleneck), and after the sum
  std::unique_ptr<Conv2d> down_conv_;
  std::unique_ptr<BatchNorm2d> down_bn_;
};

class ResNet : public Model {
 public:
  ResNet(const ModelSpec& spec, const ResNetConfig& config);
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  void children(const std::function<void(Layer&)>& visit) override;
  int64_t forward_macs(int64_t h, int64_t w) const override;
  Conv2d* input_conv() override { return conv1_.get(); }
  std::vector<std::string> head_params() const override { return {"fc.weight", "fc.bias"}; }

 private:
  ResNetConfig config_;
  std::unique_ptr<Conv2d> conv1_;
  std::unique_ptr<BatchNorm2d> bn1_;
  Act act1_{Activation::relu};
  std::unique_ptr<MaxPool2d> pool_;
  std::vector<std::unique_ptr<ResNetBlock>> blocks_;
  GlobalAvgPool gap_;
  std::unique_ptr<Linear> fc_;
};

}  // namespace kd
