// Parameters: every trainable tensor of a model, named as timm names it, carved from ONE
// contiguous fp32 buffer (and one for gradients, and on a GPU one bf16 buffer of compute copies).
// One buffer makes the optimizer a single pass, the all-reduce a single call, and checkpoints
// a loop over views.
#pragma once
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace kd {

class Context;
class SafetensorsFile;
class SafetensorsWriter;

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

struct Param {
  std::string name;        // e.g. "stages.0.blocks.0.conv2.weight"
  Shape shape;             // kd's layout
  Shape file_shape;        // the layout in checkpoints and timm state dicts
  ParamLayout layout = ParamLayout::same;
  bool decay = false;      // weight decay applies (conv and dense kernels only)
  ParamInit init = ParamInit::zeros;
  float init_std = 0.0f;
  Tensor value;            // fp32 master weights (f64 in a double-precision CPU context)
  Tensor grad;             // gradients in the same dtype (accumulated by backward)
  Tensor compute;          // what ops read: == value on the CPU, a bf16 copy on a GPU
  int64_t offset = 0;      // in elements, into the store's buffers (set by allocate)
  int64_t numel() const { return shape_numel(shape); }
};

class ParamStore {
 public:
  // Declares a parameter; valid until allocate(). Pointers stay valid for the store's life.
  // file_shape: the shape in files when it differs only in trailing 1s (timm's 1x1-conv head).
  Param* add(const std::string& name, const Shape& shape, ParamInit init, bool decay,
             ParamLayout layout = ParamLayout::same, float init_std = 0.0f, const Shape& file_shape = {});
  // Allocates the buffers on the context's device; values are zero until init() or load().
  void allocate(Context& ctx);
  bool allocated() const { return values_.defined(); }

  const std::deque<Param>& params() const { return params_; }
  std::deque<Param>& params() { return params_; }
  Param& get(const std::string& name);  // throws naming the parameter
  int64_t numel() const { return numel_; }
  // Elements [0, decay_numel) of the buffers belong to decayed parameters, the rest do not.
  int64_t decay_numel() const { return decay_numel_; }
  Tensor values() const { return values_; }  // [numel] fp32, all parameters back to back
  Tensor grads() const { return grads_; }
  Tensor compute_values() const { return compute_; }  // bf16 copies (GPU only)

  // Deterministic initial values from (seed, parameter name), on the host, then to the device.
  void init(uint64_t seed, Context& ctx);
  void zero_grads(Context& ctx);
  // Refreshes the bf16 compute copies from the fp32 values (GPU only; no-op on the CPU).
  void sync_compute(Context& ctx);

  // Load/save under the file names and layouts. Loading checks every shape (naming the tensor
  // and both shapes); `strict` also rejects missing and unexpected tensors (training state
  // stored beside the weights under "optimizer." is not unexpected). `prefix` is prepended
  // to every name in the file (checkpoints keep "student." etc.). Skipped names may be excluded.
  void load(const SafetensorsFile& file, Context& ctx, bool strict = true, const std::string& prefix = "",
            const std::vector<std::string>& skip = {});
  void save(SafetensorsWriter& out, Context& ctx, const std::string& prefix = "") const;
 private:
  // Host f32 values -> dst (the store's dtype, any device).
  static void upload(const Tensor& dst, const float* host, Context& ctx);
  std::deque<Param> params_;
  int64_t numel_ = 0, decay_numel_ = 0;
  Tensor values_, grads_, compute_;
};

// Converts between kd's layout and the file layout (host memory; T = float or double).
template <typename T>
void to_file_layout(const Param& p, const T* kd_layout, T* file_layout);
template <typename T>
void from_file_layout(const Param& p, const T* file_layout, T* kd_layout);

}  // namespace kd
