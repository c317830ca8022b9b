// The layer contract. forward(train) saves what backward needs; forward(eval) saves nothing
// (teachers run that way, so their activations are freed layer by layer). backward consumes
// the saved tensors, returns the input gradient and accumulates parameter gradients (+=).
//
// Composite layers (blocks, models) list their parts in children(); freezing and inference
// preparation walk that graph, so a new model gets them without code of its own.
#pragma once
#include <functional>
#include <string>

#include "engine/context.h"
#include "engine/param.h"
#include "engine/tensor.h"

namespace kd {

class Communicator;

enum class Mode : uint8_t { train, eval };

class Layer {
 public:
  virtual ~Layer() = default;
  virtual Tensor forward(Context& ctx, const Tensor& x, Mode mode) = 0;
  virtual Tensor backward(Context& ctx, const Tensor& dy) = 0;
  // The layers this one is made of (none for a leaf).
  virtual void children(const std::function<void(Layer&)>& visit) {}
  // Frozen layers may cache values derived from their parameters (standardised weights).
  // Changing parameters of a frozen layer requires set_frozen(false) first. Applies to children.
  void set_frozen(bool frozen) {
    frozen_ = frozen;
    on_frozen(frozen);
    children([frozen](Layer& l) { l.set_frozen(frozen); });
  }
  bool frozen() const { return frozen_; }
  // For a frozen layer: computes now what inference will read (caches), so that values it does
  // not read afterwards can be released (ParamStore::release_for_inference). Applies to children.
  void prepare_inference(Context& ctx) {
    on_prepare_inference(ctx);
    children([&ctx](Layer& l) { l.prepare_inference(ctx); });
  }
  // Layers with batch statistics (BatchNorm) take them over the batches of every rank of `comm`
  // in training (SyncBatchNorm); null: over this rank's batch only (the default). Applies to
  // children; returns how many layers take statistics this way.
  int64_t sync_batch_statistics(Communicator* comm) {
    int64_t layers = on_sync_batch_statistics(comm);
    children([&](Layer& l) { layers += l.sync_batch_statistics(comm); });
    return layers;
  }

 protected:
  virtual int64_t on_sync_batch_statistics(Communicator* comm) { return 0; }
  virtual void on_frozen(bool frozen) {}
  virtual void on_prepare_inference(Context& ctx) {}
  bool frozen_ = false;
};

// Checks that backward follows a training-mode forward.
inline void require_saved(const Tensor& t, const std::string& layer) {
  KD_CHECK(t.defined(), layer, ": backward called without a training-mode forward");
}

}  // namespace kd
