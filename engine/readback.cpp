#include "engine/readback.h"

#include <cstdlib>
#include <cstring>

#if KD_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda_check.h"
#endif

namespace kd {

AsyncReadback::AsyncReadback(Context& ctx) : ctx_(ctx) {}

AsyncReadback::~AsyncReadback() {
#if KD_HAVE_CUDA
  if (event_) {
    cudaEventSynchronize(static_cast<cudaEvent_t>(event_));
    cudaEventDestroy(static_cast<cudaEvent_t>(event_));
  }
  if (host_ && ctx_.is_cuda()) {
    cudaFreeHost(host_);
    return;
  }
#endif
  std::free(host_);
}

void AsyncReadback::start(const void* device_src, size_t bytes) {
  KD_CHECK(!in_flight_ || ready(), "AsyncReadback: a copy is still in flight");
  KD_CHECK(!ctx_.capturing(), "AsyncReadback: a read inside a captured CUDA graph (its event could not be queried)");
  if (bytes > capacity_) {
#if KD_HAVE_CUDA
    if (ctx_.is_cuda()) {
      if (host_) KD_CUDA_CHECK(cudaFreeHost(host_));
      host_ = nullptr;
      KD_CUDA_CHECK(cudaHostAlloc(&host_, bytes, cudaHostAllocDefault));
    }
#endif
    if (!ctx_.is_cuda()) {
      std::free(host_);
      host_ = std::malloc(bytes);
      KD_CHECK(host_, "AsyncReadback: out of host memory for ", bytes, " bytes");
    }
    capacity_ = bytes;
  }
  bytes_ = bytes;
  if (!ctx_.is_cuda()) {
    if (bytes) std::memcpy(host_, device_src, bytes);
    in_flight_ = false;
    return;
  }
#if KD_HAVE_CUDA
  if (!event_) {
    cudaEvent_t e = nullptr;
    KD_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    event_ = e;
  }
  cudaStream_t stream = ctx_.cuda_handles().stream;
  if (bytes) KD_CUDA_CHECK(cudaMemcpyAsync(host_, device_src, bytes, cudaMemcpyDeviceToHost, stream));
  KD_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), stream));
  in_flight_ = true;
#endif
}

bool AsyncReadback::ready() const {
  if (!in_flight_) return true;
#if KD_HAVE_CUDA
  const cudaError_t state = cudaEventQuery(static_cast<cudaEvent_t>(event_));
  if (state == cudaErrorNotReady) return false;
  KD_CUDA_CHECK(state);
#endif
  return true;
}

const void* AsyncReadback::wait() {
#if KD_HAVE_CUDA
  if (in_flight_) KD_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
#endif
  in_flight_ = false;
  return host_;
}

}  // namespace kd
