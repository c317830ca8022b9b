// Fully connected layer on the GPU: cuBLASLt products (gemm_cuda) with bf16 operands and fp32
// accumulation, plus two small fp32 kernels. Row-major x [rows, in], W [out, in], y [rows, out]:
//   forward:   y = x W^T (fp32), then y += bias per column
//   backward:  dy (fp32) rounded to bf16 in the workspace;  dx = dy W (bf16);  dW += dy^T x (fp32,
//              beta = 1);  dbias += column sums of the fp32 dy (CUB segmented sum, deterministic)
// gemm_cuda takes its own scratch from the workspace, which would overlap ours: it gets a view of
// the workspace that starts behind our bytes, sized up front so that it never has to grow.
#include <cub/device/device_segmented_reduce.cuh>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include "kernels/cast.h"
#include "kernels/check.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_vector.h"
#include "kernels/gemm_cuda.h"
#include "kernels/linear.h"

namespace kd {
namespace {

// The most scratch one gemm_cuda call asks for: its cuBLASLt preference (gemm.cu) caps it at 32 MiB.
constexpr size_t kGemmWorkspaceBytes = size_t(32) << 20;
constexpr size_t kAlign = 256;

size_t round_up(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// The workspace past the first `offset` bytes of `base`, which the caller keeps for itself.
// Growing the parent would free `base` (stream-ordered) under the caller's data, so a request
// that does not fit is an error, never a reallocation.
class WorkspaceBehind final : public CudaWorkspace {
 public:
  WorkspaceBehind(CudaWorkspace* parent, char* base, size_t offset, size_t capacity)
      : parent_(parent), base_(base), offset_(offset), capacity_(capacity) {}
  void* get(size_t bytes) override {
    KD_CHECK(bytes <= capacity_, "linear_cuda: gemm_cuda asked for ", bytes, " bytes of workspace, more than the ",
             capacity_, " reserved for it");
    char* p = static_cast<char*>(parent_->get(offset_ + bytes));
    KD_CHECK(p == base_, "linear_cuda: the workspace moved under its own scratch");
    return p + offset_;
  }

 private:
  CudaWorkspace* parent_;
  char* base_;
  size_t offset_, capacity_;
};

__global__ void bias_add_kernel(int64_t n, int64_t cols, const float* __restrict__ bias, float* __restrict__ y) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] += bias[i % cols];
}

__global__ void add_into_kernel(int64_t n, const float* __restrict__ src, float* __restrict__ dst) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] += src[i];
}

// dy read column by column (column_walk_index): segment c of the walk is column c.
struct ColumnWalk {
  const float* dy;
  int64_t rows, cols;
  __host__ __device__ float operator()(int64_t j) const { return dy[column_walk_index(j, rows, cols)]; }
};
struct SegmentStart {
  int64_t rows;
  __host__ __device__ int64_t operator()(int64_t c) const { return c * rows; }
};

using ColumnIterator = thrust::transform_iterator<ColumnWalk, thrust::counting_iterator<int64_t>>;
using OffsetIterator = thrust::transform_iterator<SegmentStart, thrust::counting_iterator<int64_t>>;

// sums[c] = sum over rows of dy[r, c]; with temp == nullptr, only sets temp_bytes.
void column_sums(const CudaHandles& h, const LinearShape& s, const float* dy, float* sums, void* temp,
                 size_t& temp_bytes) {
  const ColumnIterator walk(thrust::counting_iterator<int64_t>(0), ColumnWalk{dy, s.rows, s.out});
  const OffsetIterator starts(thrust::counting_iterator<int64_t>(0), SegmentStart{s.rows});
  KD_CUDA_CHECK(
      cub::DeviceSegmentedReduce::Sum(temp, temp_bytes, walk, sums, s.out, starts, starts + 1, h.stream));
}

void validate_cuda(const LinearShape& s, const char* op) {
  KD_CHECK(s.rows > 0 && s.in > 0 && s.out > 0, op, ": sizes must be positive, got rows ", s.rows, ", in ", s.in,
           ", out ", s.out);
}

}  // namespace

void linear_forward_cuda(const CudaHandles& h, const LinearShape& s, const bf16* x, const bf16* w, const float* bias,
                         float* y) {
  validate_cuda(s, "linear_forward_cuda");
  gemm_cuda(h, false, true, s.rows, s.out, s.in, 1.0f, x, s.in, w, s.in, 0.0f, y, s.out);
  if (!bias) return;
  const int64_t n = s.rows * s.out;
  bias_add_kernel<<<gpu::grid_for(h, n), gpu::kThreads, 0, h.stream>>>(n, s.out, bias, y);
  KD_CUDA_LAUNCH_CHECK("bias_add_kernel (linear_forward_cuda)");
}

void linear_backward_cuda(const CudaHandles& h, const LinearShape& s, const bf16* x, const bf16* w, const float* dy,
                          bf16* dx, float* dw, float* dbias) {
  validate_cuda(s, "linear_backward_cuda");
  KD_CHECK(h.workspace, "linear_backward_cuda: CudaHandles without a workspace");
  // Our scratch, in order: dy in bf16, the column sums, CUB's temporary storage; then gemm_cuda's.
  size_t cub_bytes = 0;
  if (dbias) column_sums(h, s, dy, nullptr, nullptr, cub_bytes);
  const size_t dy_bytes = round_up(size_t(s.rows * s.out) * sizeof(bf16));
  const size_t sums_bytes = dbias ? round_up(size_t(s.out) * sizeof(float)) : 0;
  const size_t own = dy_bytes + sums_bytes + round_up(cub_bytes);
  char* ws = static_cast<char*>(h.workspace->get(own + kGemmWorkspaceBytes));
  bf16* dy16 = reinterpret_cast<bf16*>(ws);
  WorkspaceBehind gemm_ws(h.workspace, ws, own, kGemmWorkspaceBytes);
  CudaHandles hg = h;
  hg.workspace = &gemm_ws;

  cast_f32_to_bf16_cuda(h, s.rows * s.out, dy, dy16);
  if (dx) gemm_cuda(hg, false, false, s.rows, s.in, s.out, 1.0f, dy16, s.out, w, s.in, 0.0f, dx, s.in);
  gemm_cuda(hg, true, false, s.out, s.in, s.rows, 1.0f, dy16, s.out, x, s.in, 1.0f, dw, s.in);
  if (dbias) {
    float* sums = reinterpret_cast<float*>(ws + dy_bytes);
    column_sums(h, s, dy, sums, ws + dy_bytes + sums_bytes, cub_bytes);
    add_into_kernel<<<gpu::grid_for(h, s.out), gpu::kThreads, 0, h.stream>>>(s.out, sums, dbias);
    KD_CUDA_LAUNCH_CHECK("add_into_kernel (linear_backward_cuda dbias)");
  }
}

}  // namespace kd
