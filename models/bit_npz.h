// BiT's original weight release (google-research/big_transfer, e.g. BiT-M-R152x2.npz) read as if
// it were a timm resnetv2 state dict, so ParamStore::load reads it unchanged. The naming and
// layouts are those of timm's own npz loader (timm/models/resnetv2.py, _load_weights):
//
//   timm name                                    npz array (prefix P = "resnet/")
//   stem.conv.weight                             P root_block/standardized_conv2d/kernel
//   stages.{i}.blocks.{j}.conv{1,2,3}.weight     P block{i+1}/unit{j+1:02d}/{a,b,c}/standardized_conv2d/kernel
//   stages.{i}.blocks.{j}.norm{1,2,3}.weight     P block{i+1}/unit{j+1:02d}/{a,b,c}/group_norm/gamma
//   stages.{i}.blocks.{j}.norm{1,2,3}.bias       P block{i+1}/unit{j+1:02d}/{a,b,c}/group_norm/beta
//   stages.{i}.blocks.{j}.downsample.conv.weight P block{i+1}/unit{j+1:02d}/a/proj/standardized_conv2d/kernel
//   norm.weight, norm.bias                       P group_norm/gamma, P group_norm/beta
//   head.fc.weight, head.fc.bias                 P head/conv2d/kernel, P head/conv2d/bias
//
// Kernels are TensorFlow's HWIO [kh, kw, c_in, c_out] and become PyTorch's OIHW (axes 3, 2, 0, 1;
// the head's [1, 1, C, N] becomes [N, C, 1, 1]). GroupNorm scales and offsets may be stored as
// [C] or with leading 1s ([1, 1, 1, C]); they are presented as [C]. The prefix is whatever
// precedes root_block/standardized_conv2d/kernel (timm assumes "resnet/"). Arrays that map to no
// timm name keep their own name, so a strict load lists them as tensors the model does not have.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/npz.h"

namespace kd {

class BitNpzSource : public TensorSource {
 public:
  // Throws naming the file when it holds no BiT root block (not a BiT ResNetV2 archive).
  explicit BitNpzSource(NpzFile npz);
  static std::unique_ptr<BitNpzSource> open(const std::string& path);

  const std::string& path() const override { return npz_.path(); }
  std::vector<std::string> names() const override;  // timm names, plus unmapped arrays as they are
  bool contains(const std::string& name) const override { return arrays_.count(name) != 0; }
  Shape shape_of(const std::string& name) const override;
  Tensor tensor_as(const std::string& name, const Shape& expected, DType to) const override;

  // The npz array a name is read from (itself for an unmapped array); throws for unknown names.
  const std::string& array_of(const std::string& name) const { return find(name).array; }
  const std::string& prefix() const { return prefix_; }
  const NpzFile& npz() const { return npz_; }

 private:
  enum class Layout { same, hwio_to_oihw, vector };
  struct Array {
    std::string array;  // npz name
    Layout layout = Layout::same;
  };
  const Array& find(const std::string& name) const;
  NpzFile npz_;
  std::string prefix_;
  std::map<std::string, Array> arrays_;  // by presented name
};

// The timm name of a BiT npz array under `prefix`, or "" when it has none (also for spellings
// timm would not find, such as "unit1" for "unit01").
std::string bit_npz_to_timm_name(const std::string& array, const std::string& prefix);

}  // namespace kd
