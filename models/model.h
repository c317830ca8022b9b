// A model: a hand-written graph of layers that maps NHWC images to f32 logits, owning its
// parameters. Architectures are named by strings that fully describe them, so a checkpoint
// (which stores the string) can rebuild its model:
//   resnetv2_50x1_bit, resnetv2_152x2_bit, ...       timm's BiT models (depth 26/50/101/152, width 1..4)
//   resnetv2(depths=1-1-1, width=32, stem=conv3)      any BiT ResNetV2: blocks per stage, stem width
//                                                     (stage channels 4*width*2^i), stem fixed|conv3,
//                                                     optional groups=G (GroupNorm groups, default 32)
//   resnet18, resnet34, resnet50, resnet101           timm's ResNets (BatchNorm)
//   resnet(depths=1-1, width=8, block=basic)           any of them: blocks per stage, stem width (stage
//                                                     planes width*2^i), block basic|bottleneck
//   mobilenetv3_large_100, mobilenetv3_small_075, ...  timm's MobileNet v3
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/layer.h"
#include "engine/layers.h"
#include "engine/param.h"

namespace kd {

struct ModelSpec {
  std::string arch = "resnetv2_50x1_bit";
  int64_t num_classes = 1000;
  int64_t in_channels = 3;
  bool zero_head = false;  // dense head initialised to zero (the distillation student's recipe)
};

class Model : public Layer {
 public:
  // forward: images [n, h, w, c] in the activation dtype -> logits f32 [n, num_classes]
  ParamStore& params() { return params_; }
  const ParamStore& params() const { return params_; }
  const ModelSpec& spec() const { return spec_; }
  // Multiply-adds of one image's forward pass at h x w (convolutions and the head).
  virtual int64_t forward_macs(int64_t h, int64_t w) const = 0;
  // The classifier's parameters (model.reset_head: everything else loads from a checkpoint of
  // another class count, the head starts fresh).
  virtual std::vector<std::string> head_params() const { return {}; }
  // Whether backward returns the gradient of the images (default, for tests and analysis). Off,
  // the first convolution skips its data gradient and backward returns an undefined tensor: the
  // training step never reads it (StepRunner turns it off for the student).
  void set_input_gradient(bool needed);
  // The convolution that reads the images (null: none).
  virtual Conv2d* input_conv() { return nullptr; }
  // Human-readable one-line summary: "resnetv2_50x1_bit: 25.55 M parameters, 153 tensors".
  std::string summary() const;
  // A teacher: frozen, its inference caches computed, and every parameter buffer it will not
  // read again released (the store must have been allocated untrainable: no gradients).
  void freeze_for_inference(Context& ctx);

 protected:
  explicit Model(const ModelSpec& spec) : spec_(spec) {}
  ModelSpec spec_;
  ParamStore params_;
};

// Builds the model and declares its parameters (not yet allocated: call params().allocate(ctx)
// then init() or load()). Unknown or malformed arch strings throw naming the known ones.
std::unique_ptr<Model> create_model(const ModelSpec& spec);
// Builds, allocates on ctx and initialises from seed in one call.
std::unique_ptr<Model> create_model(const ModelSpec& spec, Context& ctx, uint64_t seed);
std::vector<std::string> known_archs();

}  // namespace kd
