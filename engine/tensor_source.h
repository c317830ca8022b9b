// Named tensors in a file, as ParamStore::load reads weights: a safetensors file (timm's and kd's
// own checkpoints), or BiT's original .npz release read through a renaming adapter. Every error
// names the file and the tensor.
#pragma once
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace kd {

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual const std::string& path() const = 0;
  virtual std::vector<std::string> names() const = 0;  // sorted
  virtual bool contains(const std::string& name) const = 0;
  virtual Shape shape_of(const std::string& name) const = 0;  // throws naming the missing tensor
  // A host copy converted to f32 or f64, its shape checked against `expected`.
  virtual Tensor tensor_as(const std::string& name, const Shape& expected, DType to) const = 0;
};

}  // namespace kd
