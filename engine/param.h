// Parameters: every trainable tensor of a model, named as timm names it, carved from ONE
// contiguous fp32 buffer (and one for gradients, and on a GPU one bf16 buffer of compute copies).
// One buffer makes the optimizer a single pass, the all-reduce a single call, and checkpoints
// a loop over views.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace kd {

class Context;
class ParamStore;
class SafetensorsWriter;
class TensorSource;

// How a parameter is laid out in kd versus in files (timm/PyTorch state dicts).
enum class ParamLayout : uint8_t {
  same,       // identical
  conv_oihw,  // kd stores convolution weights OHWI, files hold OIHW
};

enum class ParamInit : uint8_t {
  zeros,
  ones,
  normal,           // N(0, init_std^2)
  kaiming_fan_out,  // N(0, 2 / fan_out), fan_out = c_out * kh * kw (timm's conv init)
};

// What a frozen model's layer reads of a parameter after prepare_inference: the rest can be
// released (a teacher keeps no fp32 master weights it does not read).
enum class FrozenReads : uint8_t {
  value,    // the fp32 values (norm scales and biases)
  compute,  // the compute copy (bf16 on a GPU; == value on the CPU)
  nothing,  // a cache derived from it (weight-standardised convolutions)
};

struct Param {
  std::string name;        // e.g. "stages.0.blocks.0.conv2.weight"
  Shape shape;             // kd's layout
  Shape file_shape;        // the layout in checkpoints and timm state dicts
  ParamLayout layout = ParamLayout::same;
  bool decay = false;      // weight decay applies (conv and dense kernels only)
  ParamInit init = ParamInit::zeros;
  float init_std = 0.0f;
  FrozenReads frozen_reads = FrozenReads::value;
  bool buffer = false;             // non-trainable (ParamStore::add_buffer)
  bool host = false;               // buffer kept in host memory (a counter layers update)
  DType file_dtype = DType::f32;   // how it is saved (BatchNorm's num_batches_tracked: i64)
  Tensor value;            // fp32 master weights (f64 in a double-precision CPU context)
  Tensor grad;             // gradients in the same dtype (accumulated by backward)
  Tensor compute;          // what ops read: == value on the CPU, a bf16 copy on a GPU
  int64_t offset = 0;      // in elements, into the store's buffers (set by allocate)
  int32_t index = 0;       // declaration order
  ParamStore* store = nullptr;
  int64_t numel() const { return shape_numel(shape); }
  // The matrix view of kd's layout that second-order optimizers precondition: [rows, cols] =
  // [shape[0], the rest] (conv OHWI -> [c_out, kh * kw * c_in/groups], dense [out, in]);
  // 1-D tensors have none (view_rows() == 0).
  int64_t view_rows() const { return shape.size() >= 2 ? shape[0] : 0; }
  int64_t view_cols() const { return shape.size() >= 2 ? numel() / shape[0] : 0; }
  // Layers call this once per backward, right after the last write to `grad`: the store's hook
  // (gradient buckets of a data-parallel run) may start reducing it while backward goes on.
  void grad_written() const;
};

class ParamStore {
 public:
  // Declares a parameter; valid until allocate(). Pointers stay valid for the store's life.
  // file_shape: the shape in files when it differs only in trailing 1s (timm's 1x1-conv head).
  Param* add(const std::string& name, const Shape& shape, ParamInit init, bool decay,
             ParamLayout layout = ParamLayout::same, float init_std = 0.0f, const Shape& file_shape = {});
  // Declares a non-trainable tensor (BatchNorm's running statistics): saved and loaded under its
  // name beside the parameters, never given a gradient, never decayed or seen by an optimizer or
  // the gradient buckets. host: kept in host memory (a counter the layer increments).
  // scalar: saved as a 0-d tensor (PyTorch's num_batches_tracked); loading accepts any shape
  // with the right number of elements.
  Param* add_buffer(const std::string& name, const Shape& shape, ParamInit init, bool scalar = false,
                    DType file_dtype = DType::f32, bool host = false);
  const std::deque<Param>& buffers() const { return buffers_; }
  std::deque<Param>& buffers() { return buffers_; }

  // Allocates the buffers on the context's device; values are zero until init() or load().
  // Layout: decayed parameters first, then the rest; within each part in reverse declaration
  // order, which is about the order backward writes their gradients (so gradient buckets, cut
  // from the front of the buffer, fill one after another while backward runs). A store that is
  // not trainable (a frozen teacher) gets no gradient buffer.
  void allocate(Context& ctx, bool trainable = true);
  bool allocated() const { return values_.defined(); }
  bool trainable() const { return grads_.defined(); }

  const std::deque<Param>& params() const { return params_; }
  std::deque<Param>& params() { return params_; }
  Param& get(const std::string& name);  // a parameter or a buffer; throws naming it
  int64_t numel() const { return numel_; }
  // Elements [0, decay_numel) of the buffers belong to decayed parameters, the rest do not.
  int64_t decay_numel() const { return decay_numel_; }
  Tensor values() const { return values_; }  // [numel] fp32, all parameters back to back
  Tensor grads() const { return grads_; }
  Tensor compute_values() const { return compute_; }  // bf16 copies (GPU only)

  // Deterministic initial values from (seed, parameter name), on the host, then to the device.
  void init(uint64_t seed, Context& ctx);
  void zero_grads(Context& ctx);
  // Where backward writes: every Param::grad is re-pointed into `flat` ([numel], param dtype, on
  // the store's device) at its offset; point_grads_at(grads()) restores the store's own buffer.
  // Micro-batches write into a zeroed buffer of their own and are added as whole tensors.
  void point_grads_at(const Tensor& flat);
  // Called by Param::grad_written (null: nothing happens).
  void set_grad_hook(std::function<void(const Param&)> hook) { grad_hook_ = std::move(hook); }
  void on_grad_written(const Param& p) const {
    if (grad_hook_) grad_hook_(p);
  }
  // For a frozen model whose layers have run prepare_inference: keeps only what each parameter's
  // FrozenReads names, in buffers of their own, and frees the rest (fp32 values and compute
  // copies nobody reads). Loading and saving are refused afterwards.
  void release_for_inference(Context& ctx);
  bool released() const { return released_; }
  // Bytes of the buffers the store holds now.
  size_t bytes_held() const;

  // The offset of p in the first round's layout (decayed first, each part in declaration order):
  // optimizer state of checkpoints written before state was saved by name.
  int64_t legacy_offset(const Param& p) const;
  // Refreshes the bf16 compute copies from the fp32 values (GPU only; no-op on the CPU).
  void sync_compute(Context& ctx);

  // Load/save under the file names and layouts. Loading checks every shape (naming the tensor
  // and both shapes); `strict` also rejects missing and unexpected tensors (training state
  // stored beside the weights under "optimizer." is not unexpected). `prefix` is prepended
  // to every name in the file (checkpoints keep "student." etc.). Skipped names may be excluded.
  void load(const TensorSource& file, Context& ctx, bool strict = true, const std::string& prefix = "",
            const std::vector<std::string>& skip = {});
  void save(SafetensorsWriter& out, Context& ctx, const std::string& prefix = "") const;
 private:
  // Host f32 values -> dst (the store's dtype, any device).
  static void upload(const Tensor& dst, const float* host, Context& ctx);
  std::deque<Param> params_, buffers_;
  int64_t numel_ = 0, decay_numel_ = 0;
  Tensor buffer_values_, host_buffer_values_;  // buffers on the device / in host memory
  Tensor values_, grads_, compute_;
  Tensor kept_values_, kept_compute_;  // after release_for_inference
  bool released_ = false;
  std::function<void(const Param&)> grad_hook_;
};

// Converts between kd's layout and the file layout (host memory; T = float or double).
template <typename T>
void to_file_layout(const Param& p, const T* kd_layout, T* file_layout);
template <typename T>
void from_file_layout(const Param& p, const T* file_layout, T* kd_layout);

}  // namespace kd
