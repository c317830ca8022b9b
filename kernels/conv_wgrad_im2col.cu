// conv2d_backward_filter_im2col_cuda: per chunk of images, a kernel writes the column matrix
// (the index math once per 8 channels and 16-byte copies where c_in % 8 == 0, else per element)
// and cuBLASLt adds dy^T col into dw. Never run on a GPU yet; tests/kernels/conv_wgrad_im2col_test.cpp
// checks it against the CPU reference there.
#include <map>
#include <mutex>
#include <vector>

#include "kernels/check.h"
#include "kernels/conv_wgrad_im2col.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_vector.h"
#include "kernels/gemm_cuda.h"

namespace kd {
namespace {

// The column matrix per chunk: 64M elements (128 MB of bf16) at most.
constexpr int64_t kMaxColumnElements = int64_t(64) << 20;

// The column matrix, `kPer` consecutive channels of one tap per work item: item i is row
// i / (K / kPer), columns k .. k + kPer - 1 with k = i % (K / kPer) * kPer. The index math runs once
// per item (im2col_source of its first channel); the channels after it are contiguous in x (NHWC)
// and in col. kPer = 8 copies 16 bytes at once: c_in % 8 == 0 keeps the 8 channels within one tap
// and every source and destination 16-byte aligned (x aligned; col from the allocator).
template <int kPer>
__global__ void im2col_kernel(Conv2dShape s, int64_t n0, int64_t rows, int64_t K, const bf16* x, bf16* col) {
  const int64_t per_row = K / kPer, total = rows * per_row, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t row = i / per_row, k = (i - row * per_row) * kPer;
    const int64_t src = im2col_source(s, n0, row, k);
    bf16* dst = col + row * K + k;
    if constexpr (kPer == 8) {
      *reinterpret_cast<uint4*>(dst) = src < 0 ? make_uint4(0, 0, 0, 0) : *reinterpret_cast<const uint4*>(x + src);
    } else {
      *dst = src < 0 ? bf16{0} : x[src];
    }
  }
}

// One column buffer per stream, grown in stream order (the kernels of one stream run in order, so
// reuse needs no wait) to powers of two. An outgrown buffer is kept, not freed: a CUDA graph
// captured earlier may still write it at every replay (as the context's workspace keeps its
// buffers); with power-of-two sizes the kept ones add at most the current one's size. Growing
// while the stream is being captured is refused (the allocation would be captured).
bf16* column_buffer(const CudaHandles& h, int64_t elements) {
  struct Buffer {
    void* data = nullptr;
    int64_t elements = 0;
    std::vector<void*> outgrown;
  };
  static std::mutex* mutex = new std::mutex;
  static auto* buffers = new std::map<cudaStream_t, Buffer>;  // never destroyed (teardown order)
  std::lock_guard<std::mutex> lock(*mutex);
  Buffer& b = (*buffers)[h.stream];
  if (elements > b.elements) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    KD_CUDA_CHECK(cudaStreamIsCapturing(h.stream, &capture));
    KD_CHECK(capture == cudaStreamCaptureStatusNone, "the im2col column buffer would grow from ", b.elements, " to ",
             elements, " elements inside a CUDA graph capture (run an uncaptured step of this shape first)");
    int64_t size = int64_t(1) << 20;
    while (size < elements) size *= 2;
    if (b.data) b.outgrown.push_back(b.data);
    KD_CUDA_CHECK(cudaMallocAsync(&b.data, size_t(size) * sizeof(bf16), h.stream));
    b.elements = size;
  }
  return static_cast<bf16*>(b.data);
}

}  // namespace

void conv2d_backward_filter_im2col_cuda(const CudaHandles& h, const Conv2dShape& s, const bf16* x, const bf16* dy,
                                        float* dw) {
  validate(s);
  KD_CHECK(conv_wgrad_im2col_applies(s), "conv2d_backward_filter_im2col_cuda: not for ", s.describe());
  const int64_t rows_per_image = s.out_h() * s.out_w(), K = s.kh * s.kw * s.c_in;
  const int64_t chunk = conv_images_per_chunk(s, kMaxColumnElements);
  bf16* col = column_buffer(h, chunk * rows_per_image * K);
  const bool vectors = s.c_in % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    const int64_t rows = (std::min(s.n, n0 + chunk) - n0) * rows_per_image;
    if (vectors) {
      im2col_kernel<8><<<gpu::grid_for(h, rows * K / 8), gpu::kThreads, 0, h.stream>>>(s, n0, rows, K, x, col);
      KD_CUDA_LAUNCH_CHECK("im2col_kernel<8>");
    } else {
      im2col_kernel<1><<<gpu::grid_for(h, rows * K), gpu::kThreads, 0, h.stream>>>(s, n0, rows, K, x, col);
      KD_CUDA_LAUNCH_CHECK("im2col_kernel<1>");
    }
    gemm_cuda(h, true, false, s.c_out, K, rows, 1.0f, dy + n0 * rows_per_image * s.c_out, s.c_out, col, K, 1.0f, dw, K);
  }
}

}  // namespace kd
