// The building blocks of the models: convolution (optionally weight-standardised), GroupNorm
// with fused ReLU, BatchNorm, activations, pooling and the dense classifier head. Each declares
// its parameters in a ParamStore under timm's names at construction.
#pragma once
#include <memory>
#include <string>

#include "engine/layer.h"
#include "engine/ops.h"

namespace kd {

struct Fp8ConvState;  // engine/fp8_teacher.h

// timm's symmetric padding for a given kernel/stride/dilation: ((s - 1) + d (k - 1)) / 2
inline int64_t same_padding(int64_t kernel, int64_t stride, int64_t dilation = 1) {
  return ((stride - 1) + dilation * (kernel - 1)) / 2;
}

struct ConvSpec {
  int64_t c_in = 1, c_out = 1, kernel = 1, stride = 1, groups = 1, dilation = 1;
  int64_t padding = -1;         // -1: same_padding(kernel, stride, dilation)
  bool weight_std = false;      // BiT's StdConv2d
  float weight_std_eps = 1e-8f;
  bool bias = false;  // a per-channel bias `<name>.bias` (zero-initialised, not decayed)
  // Initial weights N(0, 2 / fan_out) with fan_out = c_out * k * k (PyTorch's kaiming fan-out, as
  // timm's ResNets), or c_out * k * k / groups (timm's EfficientNet/MobileNet "goog" init).
  bool fan_out_per_group = false;
};

class Conv2d : public Layer {
 public:
  Conv2d(ParamStore& store, const std::string& name, const ConvSpec& spec);
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  const ConvSpec& spec() const { return spec_; }
  const std::string& name() const { return name_; }
  Conv2dShape geometry() const;  // kernel, stride, padding, groups (n/h/w/c_in unset)
  // FP8 inference (engine/fp8_teacher.h: enable_fp8); null turns it off.
  void set_fp8(std::shared_ptr<Fp8ConvState> state) { fp8_ = std::move(state); }
  Fp8ConvState* fp8() const { return fp8_.get(); }
  // Whether backward computes dx (default). The layer that reads the images needs none in
  // training: its data gradient is a whole convolution of work nobody reads.
  void set_input_gradient(bool needed) { input_gradient_ = needed; }

 protected:
  void on_frozen(bool frozen) override;
  void on_prepare_inference(Context& ctx) override;

 private:
  // The weights the convolution reads: standardised (and cached when frozen) or the raw copy.
  Tensor effective_weight(Context& ctx, Tensor* mean, Tensor* rstd);
  ConvSpec spec_;
  Param* weight_;
  Param* bias_ = nullptr;  // with spec.bias
  std::string name_;
  Tensor x_, w_hat_, mean_, rstd_;  // saved for backward
  Conv2dShape shape_;
  Tensor cached_w_hat_;             // frozen layers only
  std::shared_ptr<Fp8ConvState> fp8_;
  bool input_gradient_ = true;
};

class GroupNormAct : public Layer {
 public:
  // groups: 32 in BiT; channel counts below it use the largest divisor of c not above `groups`.
  GroupNormAct(ParamStore& store, const std::string& name, int64_t channels, int64_t groups = 32, float eps = 1e-5f,
               bool relu = true);
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  int64_t groups() const { return groups_; }

 private:
  Param *gamma_, *beta_;
  std::string name_;
  int64_t groups_;
  float eps_;
  bool relu_;
  Tensor x_, mean_, rstd_;
};

// BatchNorm2d over NHWC, as PyTorch computes it: training mode normalises with the batch's
// statistics and updates the running ones (running = (1 - momentum) running + momentum batch,
// the variance unbiased), eval mode (and a frozen layer) uses the running statistics. Parameters
// name.weight/bias; buffers name.running_mean/running_var/num_batches_tracked (timm's names).
// In data-parallel training each micro-batch normalises with its own statistics by default, so
// a BatchNorm model is not rank-count invariant; after sync_batch_statistics(comm) (the config's
// sync_bn) the statistics are those of the micro-batch over every rank (docs/design.md).
class BatchNorm2d : public Layer {
 public:
  BatchNorm2d(ParamStore& store, const std::string& name, int64_t channels, float eps = 1e-5f, float momentum = 0.1f,
              bool zero_gamma = false);
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;

 protected:
  int64_t on_sync_batch_statistics(Communicator* comm) override {
    comm_ = comm;
    return 1;
  }

 private:
  Param *gamma_, *beta_, *running_mean_, *running_var_, *num_batches_;
  std::string name_;
  float eps_, momentum_;
  Communicator* comm_ = nullptr;
  Tensor x_, mean_, rstd_, total_count_;  // total_count_: set by a synced forward
};

// An element-wise activation (ReLU, hard-swish, sigmoid) as a layer: saves its input in training.
class Act : public Layer {
 public:
  explicit Act(Activation a) : a_(a) {}
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;

 private:
  Activation a_;
  Tensor x_;
};

class MaxPool2d : public Layer {
 public:
  MaxPool2d(int64_t kernel, int64_t stride, int64_t padding, bool pad_with_zero);
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;

 private:
  MaxPoolShape shape_;
  Tensor argmax_;
};

class GlobalAvgPool : public Layer {
 public:
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;

 private:
  Shape x_shape_;
};

// Dense classifier: f32 logits [n, classes] from features [n, c]. timm's BiT head is a 1x1 conv,
// so its file shape is [classes, c, 1, 1] (file_4d) while kd stores [classes, c].
class Linear : public Layer {
 public:
  enum class Init { timm_head, zeros };  // timm: N(0, 0.01^2), bias 0; zeros: the distillation student's head
  Linear(ParamStore& store, const std::string& name, int64_t in, int64_t out, bool file_4d, Init init);
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;  // dy f32 logits gradient

 private:
  Param *weight_, *bias_;
  std::string name_;
  Tensor x_;
};

}  // namespace kd
