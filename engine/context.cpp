#include "engine/context.h"

#include <omp.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu_backend.h"

#if KD_HAVE_CUDA
#include "kernels/cuda_check.h"
#endif

namespace kd {

#if KD_HAVE_CUDA

namespace {
class StreamWorkspace final : public CudaWorkspace {
 public:
  StreamWorkspace(cudaStream_t stream, const bool* capturing) : stream_(stream), capturing_(capturing) {}
  ~StreamWorkspace() override {
    if (data_) cudaFreeAsync(data_, stream_);
    for (void* p : outgrown_) cudaFreeAsync(p, stream_);
  }
  // After a CUDA graph captured kernels that use the buffer, a buffer it outgrows stays allocated
  // (until the context goes): a replay still writes it.
  void keep_outgrown() { keep_outgrown_ = true; }
  void* get(size_t bytes) override {
    if (bytes <= bytes_) return data_;
    // A captured free would free the buffer again at every replay.
    KD_CHECK(!*capturing_, "the shared workspace would grow from ", bytes_, " to ", bytes,
             " bytes inside a captured CUDA graph (the steps before the capture should have grown it)");
    if (data_ && keep_outgrown_)
      outgrown_.push_back(data_);
    else if (data_)
      KD_CUDA_CHECK(cudaFreeAsync(data_, stream_));  // stream order: after its last user
    bytes_ = std::max(bytes, bytes_ + bytes_ / 2);
    KD_CUDA_CHECK(cudaMallocAsync(&data_, bytes_, stream_));
    return data_;
  }

 private:
  cudaStream_t stream_;
  const bool* capturing_;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool keep_outgrown_ = false;
  std::vector<void*> outgrown_;
};
}  // namespace

struct Context::CudaState {
  CudaHandles handles;
  std::unique_ptr<StreamWorkspace> workspace;
  std::string name;
  // host_staging(): a ring of pinned buffers, each grown on demand, each with the event of its
  // last upload; upload_staging_for_kernels() adds a device buffer per slot and the event after
  // which the stream no longer reads it.
  struct StagingSlot {
    void* host = nullptr;
    size_t bytes = 0;
    cudaEvent_t copied = nullptr;
    void* device = nullptr;
    size_t device_bytes = 0;
    cudaEvent_t released = nullptr;
    bool release_due = false;  // its kernels are queued; `released` is recorded at the next host_staging
  };
  StagingSlot staging[kStagingSlots];
  int staging_next = 0, staging_current = -1;
  cudaStream_t copy_stream = nullptr;  // set_copy_stream(true): uploads for kernels run here
  double staging_wait_s = 0;           // staging_wait_seconds()
  // The slot host_staging() handed out last, checked to hold `bytes` (what: the caller's name).
  StagingSlot& current_staging(size_t bytes, const char* what) {
    KD_CHECK(staging_current >= 0, what, ": no staging buffer was handed out");
    StagingSlot& slot = staging[staging_current];
    KD_CHECK(bytes <= slot.bytes, what, ": ", bytes, " bytes from a ", slot.bytes, "-byte staging buffer");
    return slot;
  }
  ~CudaState() {
    if (handles.stream) cudaStreamSynchronize(handles.stream);
    if (copy_stream) cudaStreamSynchronize(copy_stream), cudaStreamDestroy(copy_stream);
    for (StagingSlot& s : staging) {
      if (s.copied) cudaEventDestroy(s.copied);
      if (s.released) cudaEventDestroy(s.released);
      if (s.host) cudaFreeHost(s.host);
      if (s.device) cudaFree(s.device);
    }
    workspace.reset();
    if (handles.cudnn) cudnnDestroy(handles.cudnn);
    if (handles.cublaslt) cublasLtDestroy(handles.cublaslt);
    if (handles.cublas) cublasDestroy(handles.cublas);
    if (handles.stream) cudaStreamDestroy(handles.stream);
  }
};

bool cuda_available(std::string* why_not) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    if (why_not) *why_not = std::string("no CUDA device: ") + cudaGetErrorString(err);
    return false;
  }
  if (count == 0) {
    if (why_not) *why_not = "no CUDA device: none found";
    return false;
  }
  return true;
}

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

void* device_alloc(size_t bytes, int device_index) {
  void* p = nullptr;
  KD_CUDA_CHECK(cudaSetDevice(device_index));
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    KD_FAIL("cudaMalloc of ", bytes, " bytes failed on cuda:", device_index, " (", cudaGetErrorString(err),
            "; ", free_b >> 20, " MiB free of ", total_b >> 20, " MiB)");
  }
  return p;
}

size_t device_free_bytes(int device_index) {
  KD_CUDA_CHECK(cudaSetDevice(device_index));
  size_t free_b = 0, total_b = 0;
  KD_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return free_b;
}

void device_free(void* p) {
  if (p) cudaFree(p);  // errors at process exit (runtime unloading) are harmless
}

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes, Context* ctx) {
  if (bytes == 0) return;
  if (dst_dev == Device::cpu && src_dev == Device::cpu) {
    std::memcpy(dst, src, bytes);
    return;
  }
  cudaStream_t stream = ctx && ctx->is_cuda() ? ctx->cuda_handles().stream : nullptr;
  const cudaMemcpyKind kind = src_dev == Device::cpu ? cudaMemcpyHostToDevice
                              : dst_dev == Device::cpu ? cudaMemcpyDeviceToHost
                                                       : cudaMemcpyDeviceToDevice;
  KD_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream));
  // A device-to-device copy on the context's stream is ordered with every kernel before and after
  // it: the host need not wait (issue 16: no host waits in the step). Copies from or to the host
  // wait: the caller reads the result, or reuses the (pinned staging) source, right after.
  if (kind == cudaMemcpyDeviceToDevice && stream != nullptr) return;
  KD_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void fill_zero(void* dst, Device dev, size_t bytes, Context* ctx) {
  if (dev == Device::cpu) {
    std::memset(dst, 0, bytes);
    return;
  }
  cudaStream_t stream = ctx && ctx->is_cuda() ? ctx->cuda_handles().stream : nullptr;
  KD_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream));
}

uint8_t* Context::host_staging(size_t bytes) {
  KD_CHECK(cuda_, "host_staging: a cpu context has no device to upload to");
  KD_CHECK(!capturing_, "host_staging: a host upload inside a captured CUDA graph (each replay would copy the ",
           "bytes of the capture); upload before it");
  CudaState& st = *cuda_;
  if (st.staging_current >= 0 && st.staging[st.staging_current].release_due) {
    // The kernels reading the previous slot's device buffer were queued before this call.
    CudaState::StagingSlot& previous = st.staging[st.staging_current];
    KD_CUDA_CHECK(cudaEventRecord(previous.released, st.handles.stream));
    previous.release_due = false;
  }
  const int i = st.staging_next;
  st.staging_next = (i + 1) % kStagingSlots;
  CudaState::StagingSlot& slot = st.staging[i];
  if (slot.copied) {  // its last upload must have been read
    const cudaError_t state = cudaEventQuery(slot.copied);
    if (state == cudaErrorNotReady) {
      const auto t = std::chrono::steady_clock::now();
      KD_CUDA_CHECK(cudaEventSynchronize(slot.copied));
      st.staging_wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    } else {
      KD_CUDA_CHECK(state);
    }
  }
  if (bytes > slot.bytes) {
    if (slot.host) KD_CUDA_CHECK(cudaFreeHost(slot.host));
    slot.host = nullptr, slot.bytes = 0;
    const size_t grown = bytes + bytes / 4;  // batches of mixed image sizes vary a little
    KD_CUDA_CHECK(cudaHostAlloc(&slot.host, grown, cudaHostAllocDefault));
    slot.bytes = grown;
  }
  if (!slot.copied) KD_CUDA_CHECK(cudaEventCreateWithFlags(&slot.copied, cudaEventDisableTiming));
  st.staging_current = i;
  return static_cast<uint8_t*>(slot.host);
}

void Context::upload_staging(void* device_dst, size_t bytes) {
  KD_CHECK(cuda_, "upload_staging: a cpu context has no device to upload to");
  CudaState& st = *cuda_;
  KD_CHECK(!capturing_, "upload_staging inside a captured CUDA graph (each replay would copy the buffer as it is "
           "then, and the slot's event would be recorded in the graph)");
  CudaState::StagingSlot& slot = st.current_staging(bytes, "upload_staging");
  if (bytes == 0) return;
  KD_CUDA_CHECK(cudaMemcpyAsync(device_dst, slot.host, bytes, cudaMemcpyHostToDevice, st.handles.stream));
  KD_CUDA_CHECK(cudaEventRecord(slot.copied, st.handles.stream));
}

const uint8_t* Context::upload_staging_for_kernels(size_t bytes) {
  KD_CHECK(cuda_, "upload_staging_for_kernels: a cpu context has no device to upload to");
  CudaState& st = *cuda_;
  KD_CHECK(!capturing_, "upload_staging_for_kernels inside a captured CUDA graph (each replay would copy the "
           "buffer as it is then, and the slot's events would be recorded in the graph)");
  CudaState::StagingSlot& slot = st.current_staging(bytes, "upload_staging_for_kernels");
  if (!slot.released) KD_CUDA_CHECK(cudaEventCreateWithFlags(&slot.released, cudaEventDisableTiming));
  if (bytes > slot.device_bytes) {
    // (cudaFree waits for the whole device, so also for the kernels that read the old buffer.)
    if (slot.device) KD_CUDA_CHECK(cudaFree(slot.device));
    slot.device = nullptr, slot.device_bytes = 0;
    const size_t grown = bytes + bytes / 4;
    slot.device = device_alloc(grown, device_index_);
    slot.device_bytes = grown;
  }
  if (bytes > 0) {
    cudaStream_t copy = st.copy_stream ? st.copy_stream : st.handles.stream;
    // On the copy stream: after the kernels that read this buffer kStagingSlots uploads ago (an
    // event never recorded counts as done), while the stream computes what was queued since.
    if (st.copy_stream) KD_CUDA_CHECK(cudaStreamWaitEvent(copy, slot.released, 0));
    KD_CUDA_CHECK(cudaMemcpyAsync(slot.device, slot.host, bytes, cudaMemcpyHostToDevice, copy));
    KD_CUDA_CHECK(cudaEventRecord(slot.copied, copy));
    if (st.copy_stream) KD_CUDA_CHECK(cudaStreamWaitEvent(st.handles.stream, slot.copied, 0));
  }
  slot.release_due = true;
  return static_cast<const uint8_t*>(slot.device);
}

double Context::staging_wait_seconds() const { return cuda_ ? cuda_->staging_wait_s : 0.0; }

void Context::keep_workspace_buffers() {
  if (cuda_) cuda_->workspace->keep_outgrown();
}

void Context::set_copy_stream(bool on) {
  if (!cuda_ || on == (cuda_->copy_stream != nullptr)) return;
  CudaState& st = *cuda_;
  if (on) {
    KD_CUDA_CHECK(cudaStreamCreateWithFlags(&st.copy_stream, cudaStreamNonBlocking));
  } else {
    KD_CUDA_CHECK(cudaStreamSynchronize(st.copy_stream));
    KD_CUDA_CHECK(cudaStreamDestroy(st.copy_stream));
    st.copy_stream = nullptr;
  }
}

std::unique_ptr<Context> Context::cuda(int device_index) {
  std::string why;
  KD_CHECK(cuda_available(&why), "cannot create a cuda context: ", why);
  std::unique_ptr<Context> ctx(new Context(Device::cuda, device_index));
  auto st = std::make_unique<CudaState>();
  KD_CUDA_CHECK(cudaSetDevice(device_index));
  cudaDeviceProp prop{};
  KD_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_index));
  st->name = std::string(prop.name) + " (sm_" + std::to_string(prop.major * 10 + prop.minor) + ")";
  st->handles.device = device_index;
  st->handles.sm_count = prop.multiProcessorCount;
  cudaStream_t stream = nullptr;
  KD_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  st->handles.stream = stream;
  cudnnHandle_t cudnn = nullptr;
  KD_CUDNN_CHECK(cudnnCreate(&cudnn));
  KD_CUDNN_CHECK(cudnnSetStream(cudnn, stream));
  st->handles.cudnn = cudnn;
  cublasHandle_t cublas = nullptr;
  KD_CUBLAS_CHECK(cublasCreate(&cublas));
  KD_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  st->handles.cublas = cublas;
  cublasLtHandle_t lt = nullptr;
  KD_CUBLAS_CHECK(cublasLtCreate(&lt));
  st->handles.cublaslt = lt;
  st->workspace = std::make_unique<StreamWorkspace>(stream, &ctx->capturing_);
  st->handles.workspace = st->workspace.get();
  ctx->cuda_ = std::move(st);
  return ctx;
}

void Context::synchronize() {
  if (cuda_) KD_CUDA_CHECK(cudaStreamSynchronize(cuda_->handles.stream));
}

#else  // built without CUDA

struct Context::CudaState {};

bool cuda_available(std::string* why_not) {
  if (why_not) *why_not = "no CUDA device: kd was built without CUDA (KD_CUDA=OFF)";
  return false;
}
int cuda_device_count() { return 0; }
void* device_alloc(size_t, int) { KD_FAIL("kd was built without CUDA: cannot allocate device memory"); }
void device_free(void*) {}
size_t device_free_bytes(int) { return 0; }
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes, Context*) {
  KD_CHECK(dst_dev == Device::cpu && src_dev == Device::cpu, "kd was built without CUDA: no device copies");
  if (bytes) std::memcpy(dst, src, bytes);
}
void fill_zero(void* dst, Device dev, size_t bytes, Context*) {
  KD_CHECK(dev == Device::cpu, "kd was built without CUDA");
  std::memset(dst, 0, bytes);
}
std::unique_ptr<Context> Context::cuda(int) { KD_FAIL("cannot create a cuda context: kd was built without CUDA"); }
uint8_t* Context::host_staging(size_t) { KD_FAIL("host_staging: kd was built without CUDA"); }
void Context::upload_staging(void*, size_t) { KD_FAIL("upload_staging: kd was built without CUDA"); }
const uint8_t* Context::upload_staging_for_kernels(size_t) {
  KD_FAIL("upload_staging_for_kernels: kd was built without CUDA");
}
void Context::set_copy_stream(bool) {}
double Context::staging_wait_seconds() const { return 0.0; }
void Context::keep_workspace_buffers() {}
void Context::synchronize() {}

#endif

Context::Context(Device device, int device_index)
    : device_(device), device_index_(device_index), pool_(MemoryPool::create(device, device_index)) {}

Context::~Context() {
  pool_.reset();  // before the stream goes away
  cuda_.reset();
}

std::unique_ptr<Context> Context::cpu(DType precision) {
  KD_CHECK(precision == DType::f32 || precision == DType::f64, "cpu precision must be f32 or f64, not ",
           dtype_name(precision));
  std::unique_ptr<Context> ctx(new Context(Device::cpu, 0));
  ctx->precision_ = precision;
  return ctx;
}

const CudaHandles& Context::cuda_handles() const {
  KD_CHECK(device_ == Device::cuda, "cuda handles requested from a cpu context");
#if KD_HAVE_CUDA
  return cuda_->handles;
#else
  KD_FAIL("kd was built without CUDA");
#endif
}

void Context::set_groupnorm_one_pass(bool on) {
#if KD_HAVE_CUDA
  if (device_ == Device::cuda) cuda_->handles.groupnorm_one_pass = on;
#else
  (void)on;
#endif
}

void Context::set_autotune(bool on, TuningStore* store) {
#if KD_HAVE_CUDA
  if (device_ != Device::cuda) return;
  cuda_->handles.autotune = on;
  cuda_->handles.tuning_store = on ? store : nullptr;
#else
  (void)on, (void)store;
#endif
}

std::unique_ptr<Context> make_context(const std::string& device) {
  if (device == "cpu") return Context::cpu();
  if (device == "auto") return cuda_available() ? Context::cuda(0) : Context::cpu();
  if (device == "cuda") return Context::cuda(0);
  if (device.rfind("cuda:", 0) == 0) {
    int index = -1;
    try {
      index = std::stoi(device.substr(5));
    } catch (const std::exception&) {
    }
    KD_CHECK(index >= 0, "device '", device, "': expected cuda:N with N >= 0");
    return Context::cuda(index);
  }
  KD_FAIL("unknown device '", device, "' (use cpu, cuda, cuda:N or auto)");
}

void configure_cpu_path(const std::string& backend, int64_t threads) {
  KD_CHECK(threads >= 0, "CPU threads must not be negative, got ", threads);
  set_cpu_backend(parse_cpu_backend(backend));
  if (threads > 0) omp_set_num_threads(int(threads));
}

Tensor upload(Context& ctx, const Tensor& host) {
  KD_CHECK(host.device() == Device::cpu, "upload: expected a host tensor, got ", host.describe());
  if (!ctx.is_cuda()) return host.clone_cpu();
  Tensor out = Tensor::empty(host.shape(), host.dtype(), ctx);
  std::memcpy(ctx.host_staging(host.nbytes()), host.raw(), host.nbytes());
  ctx.upload_staging(out.raw(), host.nbytes());
  return out;
}

std::string Context::describe() const {
  if (device_ == Device::cpu)
    return "cpu (" + std::to_string(omp_get_max_threads()) + " threads, " + cpu_backend_describe() + ")";
#if KD_HAVE_CUDA
  return "cuda:" + std::to_string(device_index_) + " " + cuda_->name;
#else
  return "cuda";
#endif
}

}  // namespace kd
