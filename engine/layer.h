// The layer contract. forward(train) saves what backward needs; forward(eval) saves nothing
// (teachers run that way, so their activations are freed layer by layer). backward consumes
// the saved tensors, returns the input gradient and accumulates parameter gradients (+=).
#pragma once
#include <string>

#include "engine/context.h"
#include "engine/param.h"
#include "engine/tensor.h"

namespace kd {

enum class Mode : uint8_t { train, eval };

class Layer {
 public:
  virtual ~Layer() = default;
  virtual Tensor forward(Context& ctx, const Tensor& x, Mode mode) = 0;
  virtual Tensor backward(Context& ctx, const Tensor& dy) = 0;
  // Frozen layers may cache values derived from their parameters (standardised weights).
  // Changing parameters of a frozen layer requires set_frozen(false) first.
  virtual void set_frozen(bool frozen) { frozen_ = frozen; }
  bool frozen() const { return frozen_; }

 protected:
  bool frozen_ = false;
};

// Checks that backward follows a training-mode forward.
inline void require_saved(const Tensor& t, const std::string& layer) {
  KD_CHECK(t.defined(), layer, ": backward called without a training-mode forward");
}

}  // namespace kd
