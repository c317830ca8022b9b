// JPEG decoding on the GPU with nvJPEG, straight into device memory where the augment kernel
// reads it (no host round trip for the pixels). An optional build feature: CMake defines
// KD_HAVE_NVJPEG when it finds nvjpeg.h and libnvjpeg.so.13 (the CUDA toolkit's, or PyPI's
// nvidia-nvjpeg wheel that tools/install_deps.sh unpacks into .deps/nvjpeg).
//
// Backends: the hardware JPEG engines (A100, H100, ...) decode baseline files in batches; what
// they do not take (progressive files, their unsupported subsamplings) and every file on a GPU
// without them goes to nvJPEG's default (hybrid CPU Huffman + GPU IDCT) backend, also batched.
// A batch that fails is retried image by image, so one corrupt file cannot spoil the others;
// the files that still fail are returned for the caller to decode on the host.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cuda_handles.h"

namespace kd {

// One image: its encoded bytes (host) and where its RGB interleaved pixels go (device,
// height * width * 3 bytes, rows packed). height and width must be the file's.
struct DeviceJpegJob {
  const uint8_t* data = nullptr;
  size_t size = 0;
  uint8_t* out = nullptr;
  int32_t height = 0, width = 0;
};

class DeviceJpegDecoder {
 public:
  // Creates the handles on the current device. Throws a kd::Error when nvJPEG cannot start.
  DeviceJpegDecoder();
  ~DeviceJpegDecoder();
  DeviceJpegDecoder(const DeviceJpegDecoder&) = delete;
  DeviceJpegDecoder& operator=(const DeviceJpegDecoder&) = delete;

  // Decodes every job on h.stream (asynchronously where the backend allows). Returns the
  // indices of the jobs nvJPEG could not decode, whose output is left unwritten.
  std::vector<size_t> decode(const CudaHandles& h, const std::vector<DeviceJpegJob>& jobs);

  bool has_hardware_backend() const;
  // Images decoded by the hardware engines and by the default backend so far.
  int64_t hardware_images() const;
  int64_t default_images() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kd
