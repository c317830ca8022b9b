// Context: everything one device needs to run ops: the memory pool for activations, and on a
// GPU the stream, cuDNN/cuBLAS handles and the shared workspace. The CPU context is the same
// type with no handles. One context per device per process; ops on it run in stream order.
#pragma once
#include <memory>
#include <string>

#include "engine/pool.h"
#include "engine/tensor.h"
#include "kernels/cuda_handles.h"

namespace kd {

// True when kd was built with CUDA and a device is usable. Without a driver (the dev/CI
// machines) the runtime reports an error rather than zero devices; both mean "no".
bool cuda_available(std::string* why_not = nullptr);
// How many CUDA devices this process sees (0 without a driver, or built without CUDA).
int cuda_device_count();

class Context {
 public:
  // precision f32 (training and inference) or f64 (exact references in tests)
  static std::unique_ptr<Context> cpu(DType precision = DType::f32);
  static std::unique_ptr<Context> cuda(int device_index = 0);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  Device device() const { return device_; }
  bool is_cuda() const { return device_ == Device::cuda; }
  int device_index() const { return device_index_; }
  MemoryPool& pool() { return *pool_; }
  // Activations: bf16 on a GPU, the precision on the CPU. Parameters, gradients, statistics and
  // logits: f32 on a GPU, the precision on the CPU.
  DType activation_dtype() const { return device_ == Device::cuda ? DType::bf16 : precision_; }
  DType param_dtype() const { return device_ == Device::cuda ? DType::f32 : precision_; }
  const CudaHandles& cuda_handles() const;  // throws on a CPU context
  // cuDNN autotuning (time the candidate engines once per convolution shape) and where earlier
  // runs' choices are kept (not owned; null: none). No effect on a CPU context.
  void set_autotune(bool on, TuningStore* store);
  // GroupNorm's forward in one pass over memory (kernels/groupnorm_one_pass.h). No effect on a
  // CPU context.
  void set_groupnorm_one_pass(bool on);
  // Convolutions with fewer than 8 input channels (the RGB stem) run on inputs and weights
  // zero-padded to 8 channels (kernels/channel_pad.h), which tensor cores take. Either device
  // (on the CPU it only exercises the path in tests).
  void set_conv_pad_channels(bool on) { conv_pad_channels_ = on; }
  bool conv_pad_channels() const { return conv_pad_channels_; }
  // Weight gradients of patch convolutions as im2col + one GEMM (kernels/conv_wgrad_im2col.h)
  // instead of cuDNN's. No effect on a CPU context.
  void set_conv_wgrad_im2col(bool on) { conv_wgrad_im2col_ = on; }
  bool conv_wgrad_im2col() const { return conv_wgrad_im2col_; }
  void synchronize();
  // Uploads that do not wait (issue 16). host_staging() hands out page-locked host memory of at
  // least `bytes` (a DMA straight from it: no driver staging copy, no page faults of a fresh
  // buffer), the next of a ring of kStagingSlots buffers; upload_staging() copies the first
  // `bytes` of it to `device_dst` in stream order and returns at once. A buffer is handed out
  // again only after its last copy finished (an event, not a stream wait), so the host runs at
  // most kStagingSlots uploads ahead of the device. The pointer is valid until the next
  // host_staging(). CUDA contexts only.
  static constexpr int kStagingSlots = 4;
  uint8_t* host_staging(size_t bytes);
  void upload_staging(void* device_dst, size_t bytes);
  // The same upload into the slot's own device buffer (not the pool's), for kernels queued on
  // this context's stream after the call: with a copy stream (set_copy_stream, issue 16 item 4)
  // the copy runs there while the stream computes what was queued before, and the stream waits
  // for it by an event. The buffer is rewritten only after the kernels queued before the next
  // host_staging() ran, so it is theirs until then.
  const uint8_t* upload_staging_for_kernels(size_t bytes);
  // Seconds the host has spent in host_staging() waiting for a slot's copy (the device is more
  // than the ring behind): with no other waits in the step, the host's time per step less this
  // is what enqueueing it costs, the bound that CUDA graphs would lower. 0 on a CPU context.
  double staging_wait_seconds() const;
  // Uploads for kernels on a copy stream of their own (run.copy_stream), or on the context's
  // stream (off: the copy waits for the work queued before it). No effect on a CPU context.
  void set_copy_stream(bool on);
  // Set while a CUDA graph captures this context's stream (engine/cuda_graph.h): the host-side
  // paths that a replay would not repeat (a staging upload, growing the shared workspace) then
  // fail with a message instead of being captured wrong.
  void set_capturing(bool on) { capturing_ = on; }
  bool capturing() const { return capturing_; }
  // From now on the shared workspace keeps every buffer it outgrows (a captured graph's kernels
  // still use the old one; freeing it would leave replays writing freed memory). CUDA only.
  void keep_workspace_buffers();
  std::string describe() const;  // "cpu (2 threads)" / "cuda:0 NVIDIA H100 80GB HBM3 (sm_90)"

 private:
  Context(Device device, int device_index);
  struct CudaState;
  Device device_;
  int device_index_;
  DType precision_ = DType::f32;
  bool conv_pad_channels_ = false;
  bool conv_wgrad_im2col_ = false;
  bool capturing_ = false;
  std::unique_ptr<MemoryPool> pool_;
  std::unique_ptr<CudaState> cuda_;
};

// The CPU path's process-wide settings (run.cpu_backend, run.threads): the backend by name (auto,
// onednn, reference; throws naming an unknown one) and the OpenMP threads (0: leave as they are).
void configure_cpu_path(const std::string& backend, int64_t threads);

// "cpu", "cuda", "cuda:N" or "auto" (cuda when a device is usable, else cpu).
std::unique_ptr<Context> make_context(const std::string& device);

// Raw device memory, used by the pool and the parameter store.
void* device_alloc(size_t bytes, int device_index);
void device_free(void* p);
// Device memory not yet allocated by anyone on cuda:device_index (cudaMemGetInfo's free).
size_t device_free_bytes(int device_index);
// Copies between any two devices. Device-to-device copies with a CUDA context are ordered on its
// stream and return at once; the others are synchronous with respect to the context's stream.
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes, Context* ctx);
void fill_zero(void* dst, Device dev, size_t bytes, Context* ctx);
// A host tensor's copy on the context's device, without a host wait on a GPU (through the
// staging ring above); on the CPU a plain copy.
Tensor upload(Context& ctx, const Tensor& host);

}  // namespace kd
