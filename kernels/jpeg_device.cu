// nvJPEG's batched API: a handle per backend, a JPEG state per handle, the batch size fixed by
// nvjpegDecodeBatchedInitialize (called again whenever it changes), output NVJPEG_OUTPUT_RGBI
// (one interleaved RGB plane, pitch = width * 3), grey files replicated into RGB by nvJPEG.
#include "kernels/jpeg_device.h"

#if KD_HAVE_NVJPEG
#include <nvjpeg.h>

#include <string>

#include "kernels/cuda_check.h"

namespace kd {

namespace {

const char* nvjpeg_status_name(nvjpegStatus_t s) {
  switch (s) {
    case NVJPEG_STATUS_SUCCESS: return "success";
    case NVJPEG_STATUS_NOT_INITIALIZED: return "not initialized";
    case NVJPEG_STATUS_INVALID_PARAMETER: return "invalid parameter";
    case NVJPEG_STATUS_BAD_JPEG: return "bad JPEG";
    case NVJPEG_STATUS_JPEG_NOT_SUPPORTED: return "JPEG not supported";
    case NVJPEG_STATUS_ALLOCATOR_FAILURE: return "allocator failure";
    case NVJPEG_STATUS_EXECUTION_FAILED: return "execution failed";
    case NVJPEG_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case NVJPEG_STATUS_INTERNAL_ERROR: return "internal error";
    case NVJPEG_STATUS_IMPLEMENTATION_NOT_SUPPORTED: return "implementation not supported";
    default: return "unknown status";
  }
}

#define KD_NVJPEG_CHECK(call)                                                                 \
  do {                                                                                        \
    nvjpegStatus_t kd_st_ = (call);                                                           \
    if (kd_st_ != NVJPEG_STATUS_SUCCESS) KD_FAIL(#call, ": nvJPEG ", nvjpeg_status_name(kd_st_)); \
  } while (0)

// One backend's handle, state and the batch size its state is initialised for.
struct Backend {
  nvjpegHandle_t handle = nullptr;
  nvjpegJpegState_t state = nullptr;
  int batch = -1;
  int64_t images = 0;

  bool create(nvjpegBackend_t backend) {
    if (nvjpegCreateEx(backend, nullptr, nullptr, NVJPEG_FLAGS_DEFAULT, &handle) != NVJPEG_STATUS_SUCCESS) {
      handle = nullptr;
      return false;
    }
    KD_NVJPEG_CHECK(nvjpegJpegStateCreate(handle, &state));
    return true;
  }
  ~Backend() {
    if (state) nvjpegJpegStateDestroy(state);
    if (handle) nvjpegDestroy(handle);
  }

  // Decodes jobs[idx[k]] for all k in one batch; false when the batch failed (outputs undefined).
  bool decode_batch(const std::vector<DeviceJpegJob>& jobs, const std::vector<size_t>& idx, cudaStream_t stream) {
    const int n = int(idx.size());
    if (n == 0) return true;
    if (batch != n) {
      if (nvjpegDecodeBatchedInitialize(handle, state, n, 1, NVJPEG_OUTPUT_RGBI) != NVJPEG_STATUS_SUCCESS) {
        batch = -1;
        return false;
      }
      batch = n;
    }
    const size_t count = idx.size();
    std::vector<const unsigned char*> data(count, nullptr);
    std::vector<size_t> lengths(count, 0);
    std::vector<nvjpegImage_t> out(count);
    for (int k = 0; k < n; ++k) {
      const DeviceJpegJob& j = jobs[idx[size_t(k)]];
      data[size_t(k)] = j.data, lengths[size_t(k)] = j.size;
      out[size_t(k)] = nvjpegImage_t{};
      out[size_t(k)].channel[0] = j.out;
      out[size_t(k)].pitch[0] = size_t(j.width) * 3;
    }
    if (nvjpegDecodeBatched(handle, state, data.data(), lengths.data(), out.data(), stream) != NVJPEG_STATUS_SUCCESS) {
      batch = -1;  // a failed batch needs a fresh initialisation
      return false;
    }
    images += n;
    return true;
  }
};

}  // namespace

struct DeviceJpegDecoder::Impl {
  Backend hardware, fallback;
  nvjpegJpegStream_t stream = nullptr;  // parsed headers, for the hardware support check
  ~Impl() {
    if (stream) nvjpegJpegStreamDestroy(stream);
  }
};

DeviceJpegDecoder::DeviceJpegDecoder() : impl_(std::make_unique<Impl>()) {
  // The hardware engines exist on A100/H100-class parts only; creating that backend elsewhere
  // fails with "architecture mismatch" or "not supported", which is expected.
  if (impl_->hardware.create(NVJPEG_BACKEND_HARDWARE))
    KD_NVJPEG_CHECK(nvjpegJpegStreamCreate(impl_->hardware.handle, &impl_->stream));
  KD_CHECK(impl_->fallback.create(NVJPEG_BACKEND_DEFAULT), "nvJPEG: cannot create the default backend's handle");
}

DeviceJpegDecoder::~DeviceJpegDecoder() = default;

bool DeviceJpegDecoder::has_hardware_backend() const { return impl_->hardware.handle != nullptr; }
int64_t DeviceJpegDecoder::hardware_images() const { return impl_->hardware.images; }
int64_t DeviceJpegDecoder::default_images() const { return impl_->fallback.images; }

std::vector<size_t> DeviceJpegDecoder::decode(const CudaHandles& h, const std::vector<DeviceJpegJob>& jobs) {
  cudaStream_t stream = h.stream;
  std::vector<size_t> on_hardware, on_default, failed;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const DeviceJpegJob& j = jobs[i];
    KD_CHECK(j.data && j.size > 0 && j.out && j.height > 0 && j.width > 0, "nvJPEG: job ", i, " is incomplete");
    // The size the host laid out must be the file's, or the decoder would write past the image.
    int components = 0;
    nvjpegChromaSubsampling_t subsampling;
    int widths[NVJPEG_MAX_COMPONENT] = {0}, heights[NVJPEG_MAX_COMPONENT] = {0};
    if (nvjpegGetImageInfo(impl_->fallback.handle, j.data, j.size, &components, &subsampling, widths, heights) !=
            NVJPEG_STATUS_SUCCESS ||
        widths[0] != j.width || heights[0] != j.height || (components != 1 && components != 3)) {
      failed.push_back(i);
      continue;
    }
    int unsupported = 1;
    if (has_hardware_backend() &&
        nvjpegJpegStreamParse(impl_->hardware.handle, j.data, j.size, 0, 0, impl_->stream) == NVJPEG_STATUS_SUCCESS &&
        nvjpegDecodeBatchedSupported(impl_->hardware.handle, impl_->stream, &unsupported) == NVJPEG_STATUS_SUCCESS &&
        unsupported == 0) {
      on_hardware.push_back(i);
    } else {
      on_default.push_back(i);
    }
  }
  // A failed hardware batch goes to the default backend; a failed default batch image by image.
  if (!impl_->hardware.decode_batch(jobs, on_hardware, stream))
    on_default.insert(on_default.end(), on_hardware.begin(), on_hardware.end());
  if (!impl_->fallback.decode_batch(jobs, on_default, stream))
    for (size_t i : on_default)
      if (!impl_->fallback.decode_batch(jobs, {i}, stream)) failed.push_back(i);
  KD_CUDA_LAUNCH_CHECK("nvJPEG decode");
  return failed;
}

}  // namespace kd
#endif  // KD_HAVE_NVJPEG
