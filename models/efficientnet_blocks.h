// The blocks of timm's EfficientNet family (timm/models/_efficientnet_blocks.py) that MobileNetV3
// uses, computing what timm computes, under timm's parameter names:
//   ConvBnAct       conv (no bias) + BatchNorm + optional activation (timm's conv + BatchNormAct2d)
//   SqueezeExcite   x * gate(conv_expand(act(conv_reduce(mean over h, w of x)))), both 1x1 convs
//                   with a bias; names se.conv_reduce.{weight,bias}, se.conv_expand.{weight,bias}
//   MobileBlock     timm's DepthwiseSeparableConv ("ds"), InvertedResidual ("ir") and ConvBnAct
//                   ("cn") blocks: a chain of ConvBnAct with the squeeze-excite (if any) before the
//                   last convolution, plus the identity shortcut when stride 1 and in == out
//                   (timm's has_skip; "cn" blocks never skip in MobileNetV3).
// Convolutions use timm's symmetric padding (get_padding) and its "goog" initialisation
// (N(0, 2 / fan_out), fan_out = k * k * c_out / groups; biases zero); BatchNorm eps 1e-5,
// momentum 0.1. timm's drop_path is 0 in these models (identity), so it is not modelled.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/layers.h"

namespace kd {

class ConvBnAct : public Layer {
 public:
  // act identity: no activation (the block's last, "linear" convolution).
  ConvBnAct(ParamStore& store, const std::string& conv_name, const std::string& bn_name, const ConvSpec& spec,
            Activation act);
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  void children(const std::function<void(Layer&)>& visit) override;
  const ConvSpec& spec() const { return conv_->spec(); }
  Conv2d& conv() { return *conv_; }
  int64_t out_size(int64_t size) const;      // output height (width) for an input height (width)
  int64_t macs(int64_t h, int64_t w) const;  // multiply-adds at input size h x w

 private:
  std::unique_ptr<Conv2d> conv_;
  std::unique_ptr<BatchNorm2d> bn_;
  std::unique_ptr<Act> act_;  // null for identity
};

class SqueezeExcite : public Layer {
 public:
  // reduce_act: after conv_reduce (MobileNetV3: ReLU); gate: on conv_expand (hard-sigmoid).
  SqueezeExcite(ParamStore& store, const std::string& name, int64_t channels, int64_t reduced, Activation reduce_act,
                Activation gate);
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  void children(const std::function<void(Layer&)>& visit) override;
  int64_t macs() const { return 2 * channels_ * reduced_; }  // the two 1x1 convs on one pixel

 private:
  std::string name_;
  int64_t channels_, reduced_;
  GlobalAvgPool pool_;
  std::unique_ptr<Conv2d> reduce_, expand_;
  Act act_, gate_;
  Tensor x_, s_;  // saved for backward: the input and the gate
};

// One block of a MobileNetV3, its sizes already rounded as timm's builder rounds them.
struct MobileBlockSpec {
  enum class Kind { ds, ir, cn };
  Kind kind = Kind::ir;
  int64_t in = 16, out = 16;
  int64_t mid = 16;  // ir: the expanded width, make_divisible(in * exp_ratio)
  int64_t kernel = 3, stride = 1;
  int64_t se_reduced = 0;  // squeeze-excite reduced channels; 0: no squeeze-excite
  Activation act = Activation::relu;
  bool skip() const { return kind != Kind::cn && stride == 1 && in == out; }
};

class MobileBlock : public Layer {
 public:
  MobileBlock(ParamStore& store, const std::string& name, const MobileBlockSpec& spec);
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  void children(const std::function<void(Layer&)>& visit) override;
  const MobileBlockSpec& spec() const { return spec_; }
  int64_t out_size(int64_t size) const;
  int64_t macs(int64_t h, int64_t w) const;  // at input size h x w

 private:
  MobileBlockSpec spec_;
  std::vector<std::unique_ptr<ConvBnAct>> convs_;
  std::unique_ptr<SqueezeExcite> se_;  // before the last of convs_
};

}  // namespace kd
