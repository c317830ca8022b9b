// cuDNN convolutions through the graph API (see cudnn_graph.h): NHWC bf16 activations, OHWI bf16
// weights, fp32 compute. One single-op graph per (op, shape, alignment), its plan built once and
// cached; with CudaHandles::autotune the candidate plans are timed once and the fastest kept.
// The weight gradient is accumulated into fp32 dw, by cuDNN itself (beta = 1) where an engine
// supports it, else through a result in the workspace that add_into_kernel adds into dw.
#include <algorithm>
#include <array>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

#include "kernels/conv.h"
#include "kernels/conv_cuda_layout.h"
#include "kernels/cuda_check.h"
#include "kernels/cudnn_graph.h"

namespace kd {
namespace {

enum class ConvOp { forward = 0, backward_data = 1, backward_filter = 2 };

const char* op_name(ConvOp op) {
  switch (op) {
    case ConvOp::forward: return "conv2d_forward_cuda";
    case ConvOp::backward_data: return "conv2d_backward_data_cuda";
    default: return "conv2d_backward_filter_cuda";
  }
}

// Tensor uids: x/dx, w/dw and y/dy keep their uid in every op.
constexpr int64_t kUidX = 1, kUidW = 2, kUidY = 3;
constexpr int64_t kMaxAlignment = 16;                  // what cuDNN's vectorised engines ask for
constexpr int64_t kMaxWorkspaceBytes = int64_t(1) << 30;
constexpr size_t kAutotuneCandidates = 8;
constexpr int kAutotuneRuns = 3;
constexpr size_t kScratchAlignment = 256;

size_t round_up(size_t bytes, size_t to) { return (bytes + to - 1) / to * to; }

// The three tensors of every op, in uid order x, w, y (the op decides which one it writes).
struct ConvPointers {
  void* x;
  void* w;
  void* y;
};

struct ConvPlan {
  std::vector<cudnn::Descriptor> keep;  // tensors, convolution, operation and graph (last)
  cudnn::Plan plan;
  ConvWgradPath path = ConvWgradPath::fp32_accumulate;
  std::string label;  // for the plan report
};

// handle, device, op, autotune, forced path, 14 shape numbers, 3 alignments
using ConvKey = std::array<int64_t, 22>;

struct PlanCache {
  std::mutex mutex;
  std::map<ConvKey, std::unique_ptr<ConvPlan>> plans;
  int forced_wgrad_path = -1;
};

// Never destroyed: descriptors must not outlive cuDNN's own teardown at process exit.
PlanCache& plan_cache() {
  static PlanCache* cache = new PlanCache;
  return *cache;
}

ConvKey make_key(const CudaHandles& h, ConvOp op, const Conv2dShape& s, int forced_path, const int64_t align[3]) {
  ConvKey k{int64_t(reinterpret_cast<uintptr_t>(h.cudnn)), h.device, int64_t(op), h.autotune ? 1 : 0, forced_path};
  const auto shape = s.key();
  std::copy(shape.begin(), shape.end(), k.begin() + 5);
  k[19] = align[0], k[20] = align[1], k[21] = align[2];
  return k;
}

cudnn::Descriptor make_tensor(int64_t uid, cudnnDataType_t dtype, const CudnnTensorLayout& layout, int64_t align) {
  cudnn::TensorSpec spec;
  spec.uid = uid;
  spec.dtype = dtype;
  for (int i = 0; i < 4; ++i) spec.dims[i] = layout.dims[i], spec.strides[i] = layout.strides[i];
  spec.alignment_bytes = align;
  return cudnn::make_tensor(spec);
}

// x, w, y tensors, the convolution, the operation and its graph (last).
std::vector<cudnn::Descriptor> make_conv_graph(cudnnHandle_t handle, ConvOp op, const Conv2dShape& s,
                                               cudnnDataType_t w_dtype, float beta, const int64_t align[3]) {
  std::vector<cudnn::Descriptor> d;
  d.reserve(6);  // x, w, y are referenced below while more are appended
  d.push_back(make_tensor(kUidX, CUDNN_DATA_BFLOAT16, conv_x_layout(s), align[0]));
  d.push_back(make_tensor(kUidW, w_dtype, conv_w_layout(s), align[1]));
  d.push_back(make_tensor(kUidY, CUDNN_DATA_BFLOAT16, conv_y_layout(s), align[2]));
  const cudnn::Descriptor &x = d[0], &w = d[1], &y = d[2];

  const CudnnConvParams p = conv_cudnn_params(s);
  cudnn::Descriptor conv = cudnn::make_convolution_2d(p.pre_padding, p.post_padding, p.filter_strides, p.dilations);

  cudnn::Descriptor operation;
  switch (op) {
    case ConvOp::forward:
      operation = cudnn::make_convolution_forward(x, w, y, conv, beta);
      break;
    case ConvOp::backward_data:
      operation = cudnn::Descriptor(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR);
      operation.set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, x)
          .set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W, w)
          .set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, y)
          .set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC, conv)
          .set_float(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, 1.0f)
          .set_float(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, beta);
      operation.finalize();
      break;
    case ConvOp::backward_filter:
      operation = cudnn::Descriptor(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR);
      operation.set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, x)
          .set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, w)
          .set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, y)
          .set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, conv)
          .set_float(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, 1.0f)
          .set_float(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA, beta);
      operation.finalize();
      break;
  }
  cudnn::Descriptor graph = cudnn::make_operation_graph(handle, {&operation});
  d.push_back(std::move(conv));
  d.push_back(std::move(operation));
  d.push_back(std::move(graph));
  return d;
}

bool uses_scratch(ConvOp op, ConvWgradPath path) {
  return op == ConvOp::backward_filter && path != ConvWgradPath::fp32_accumulate;
}

// Bytes of the weight-gradient result kept in the workspace ahead of cuDNN's own workspace.
size_t scratch_bytes(const Conv2dShape& s, ConvWgradPath path) {
  const size_t elem = path == ConvWgradPath::bf16_scratch_add ? sizeof(bf16) : sizeof(float);
  return round_up(size_t(s.w_numel()) * elem, kScratchAlignment);
}

// "NVIDIA H100 80GB HBM3 sm_90": what an autotuning choice depends on besides shape and library.
std::string device_description(int device) {
  static std::mutex mutex;
  static std::map<int, std::string> names;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = names.find(device);
  if (it != names.end()) return it->second;
  cudaDeviceProp prop;
  KD_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return names[device] = std::string(prop.name) + " sm_" + std::to_string(prop.major) + std::to_string(prop.minor);
}

struct Fastest {
  size_t index;
  double ms;  // per run
};

// Runs every candidate once to warm up, then kAutotuneRuns times between two events; returns the
// index of the fastest. The weight gradient is timed into a scratch buffer so dw stays untouched.
Fastest pick_fastest(const CudaHandles& h, ConvOp op, const Conv2dShape& s, ConvWgradPath path,
                    const std::vector<cudnn::Plan>& plans, ConvPointers io) {
  size_t max_ws = 0;
  for (const cudnn::Plan& p : plans) max_ws = std::max(max_ws, size_t(p.workspace_bytes));
  const size_t scratch = op == ConvOp::backward_filter ? scratch_bytes(s, path) : 0;
  char* ws = static_cast<char*>(h.workspace->get(scratch + max_ws));
  if (scratch) {
    KD_CUDA_CHECK(cudaMemsetAsync(ws, 0, scratch, h.stream));
    io.w = ws;
  }
  const std::vector<int64_t> uids = {kUidX, kUidW, kUidY};
  const std::vector<void*> ptrs = {io.x, io.w, io.y};
  struct Events {
    cudaEvent_t start = nullptr, stop = nullptr;
    ~Events() {
      if (start) cudaEventDestroy(start);
      if (stop) cudaEventDestroy(stop);
    }
  } events;
  KD_CUDA_CHECK(cudaEventCreate(&events.start));
  KD_CUDA_CHECK(cudaEventCreate(&events.stop));
  cudaEvent_t start = events.start, stop = events.stop;
  size_t best = plans.size();
  float best_ms = std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < plans.size(); ++i) {
    if (cudnn::execute(h.cudnn, plans[i], uids, ptrs, ws + scratch) != CUDNN_STATUS_SUCCESS) continue;
    bool ok = true;
    KD_CUDA_CHECK(cudaEventRecord(start, h.stream));
    for (int r = 0; r < kAutotuneRuns && ok; ++r)
      ok = cudnn::execute(h.cudnn, plans[i], uids, ptrs, ws + scratch) == CUDNN_STATUS_SUCCESS;
    KD_CUDA_CHECK(cudaEventRecord(stop, h.stream));
    KD_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    KD_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (ok && ms < best_ms) best_ms = ms, best = i;
  }
  KD_CHECK(best < plans.size(), "autotune: none of ", plans.size(), " candidate plans ran");
  return {best, double(best_ms) / kAutotuneRuns};
}

// The candidate to run: with autotune, an earlier run's choice for the same key when the tuning
// store has one, else the fastest, timed now and recorded. *cached says which.
size_t choose_plan(const CudaHandles& h, ConvOp op, const Conv2dShape& s, ConvWgradPath path, const int64_t align[3],
                   const std::vector<cudnn::Plan>& candidates, ConvPointers io, bool* cached) {
  *cached = false;
  if (!h.autotune || candidates.size() < 2) return 0;
  std::string key;
  if (h.tuning_store) {
    key = conv_tuning_key(device_description(h.device), cudnn::version_string(), op_name(op), s, align, int(path),
                          int64_t(candidates.size()));
    const int64_t known = h.tuning_store->find(key);
    if (known >= 0 && size_t(known) < candidates.size()) {
      *cached = true;
      return size_t(known);
    }
  }
  const Fastest f = pick_fastest(h, op, s, path, candidates, io);
  if (h.tuning_store) h.tuning_store->put(key, int64_t(f.index), f.ms);
  return f.index;
}

std::unique_ptr<ConvPlan> build_conv_plan(const CudaHandles& h, ConvOp op, const Conv2dShape& s,
                                          const int64_t align[3], ConvPointers io, int forced_path) {
  std::vector<ConvWgradPath> paths = {ConvWgradPath::fp32_accumulate};
  if (op == ConvOp::backward_filter && forced_path < 0)
    paths = {ConvWgradPath::fp32_accumulate, ConvWgradPath::fp32_scratch_add, ConvWgradPath::bf16_scratch_add};
  else if (op == ConvOp::backward_filter)
    paths = {ConvWgradPath(forced_path)};
  std::ostringstream why_not;
  for (ConvWgradPath path : paths) {
    const bool wgrad = op == ConvOp::backward_filter;
    const cudnnDataType_t w_dtype =
        wgrad && path != ConvWgradPath::bf16_scratch_add ? CUDNN_DATA_FLOAT : CUDNN_DATA_BFLOAT16;
    const float beta = wgrad && path == ConvWgradPath::fp32_accumulate ? 1.0f : 0.0f;
    int64_t a[3] = {align[0], align[1], align[2]};
    if (uses_scratch(op, path)) a[1] = kMaxAlignment;  // the scratch result is 256-byte aligned
    auto plan = std::make_unique<ConvPlan>();
    std::vector<cudnn::Plan> candidates;
    size_t pick = 0;
    bool cached = false;
    std::string why;
    try {
      plan->keep = make_conv_graph(h.cudnn, op, s, w_dtype, beta, a);
      candidates = cudnn::make_plans(h.cudnn, plan->keep.back(), h.autotune ? kAutotuneCandidates : 1,
                                     kMaxWorkspaceBytes, &why);
      pick = choose_plan(h, op, s, path, a, candidates, io, &cached);
    } catch (const Error& e) {  // an unsupported combination may already fail to finalize
      candidates.clear();
      why = e.what();
    }
    if (wgrad) why_not << "[" << conv_wgrad_path_name(path) << "] ";
    if (candidates.empty()) {
      why_not << (why.empty() ? std::string("no engine configs") : why) << " ";
      continue;
    }
    plan->plan = std::move(candidates[pick]);
    plan->path = path;
    std::ostringstream label;
    label << op_name(op) << " " << s.describe() << ": " << plan->plan.describe();
    if (wgrad) label << ", dw via " << conv_wgrad_path_name(path);
    if (h.autotune) label << ", autotuned over " << candidates.size() << (cached ? " (choice from the cache)" : "");
    plan->label = label.str();
    return plan;
  }
  KD_FAIL("no cuDNN engine for this convolution: ", why_not.str(), "[", cudnn::version_string(), "]");
}

template <typename T>
__device__ __forceinline__ float as_float(T v);
template <>
__device__ __forceinline__ float as_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ float as_float<bf16>(bf16 v) { return bf16_to_float(v); }

template <typename T>
__global__ void add_into_kernel(int64_t n, const T* __restrict__ src, float* __restrict__ dst) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] += as_float(src[i]);
}

template <typename T>
void add_into(const CudaHandles& h, int64_t n, const void* src, float* dst) {
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>(ceil_div(n, threads), int64_t(std::max(h.sm_count, 1)) * 8);
  add_into_kernel<T><<<unsigned(std::max<int64_t>(blocks, 1)), threads, 0, h.stream>>>(
      n, static_cast<const T*>(src), dst);
  KD_CUDA_LAUNCH_CHECK("add_into_kernel (conv weight gradient)");
}

void run_conv(const CudaHandles& h, ConvOp op, const Conv2dShape& s, ConvPointers io) {
  try {
    validate(s);
    KD_CHECK(h.cudnn && h.workspace, "CudaHandles without a cuDNN handle or workspace");
    const int64_t align[3] = {pointer_alignment_bytes(io.x, kMaxAlignment),
                              pointer_alignment_bytes(io.w, kMaxAlignment),
                              pointer_alignment_bytes(io.y, kMaxAlignment)};
    PlanCache& cache = plan_cache();
    const ConvPlan* plan = nullptr;
    {
      std::lock_guard<std::mutex> lock(cache.mutex);
      const int forced = op == ConvOp::backward_filter ? cache.forced_wgrad_path : -1;
      const ConvKey key = make_key(h, op, s, forced, align);
      auto it = cache.plans.find(key);
      if (it == cache.plans.end()) it = cache.plans.emplace(key, build_conv_plan(h, op, s, align, io, forced)).first;
      plan = it->second.get();
    }
    const std::vector<int64_t> uids = {kUidX, kUidW, kUidY};
    if (!uses_scratch(op, plan->path)) {
      void* ws = h.workspace->get(size_t(plan->plan.workspace_bytes));
      cudnn::check(cudnn::execute(h.cudnn, plan->plan, uids, {io.x, io.w, io.y}, ws),
                   "cudnnBackendExecute (" + plan->plan.describe() + ")");
      return;
    }
    const size_t scratch = scratch_bytes(s, plan->path);
    char* ws = static_cast<char*>(h.workspace->get(scratch + size_t(plan->plan.workspace_bytes)));
    cudnn::check(cudnn::execute(h.cudnn, plan->plan, uids, {io.x, ws, io.y}, ws + scratch),
                 "cudnnBackendExecute (" + plan->plan.describe() + ")");
    float* dw = static_cast<float*>(io.w);
    if (plan->path == ConvWgradPath::bf16_scratch_add)
      add_into<bf16>(h, s.w_numel(), ws, dw);
    else
      add_into<float>(h, s.w_numel(), ws, dw);
  } catch (const Error& e) {
    KD_FAIL(op_name(op), " ", s.describe(), ": ", e.what());
  }
}

}  // namespace

const char* conv_wgrad_path_name(ConvWgradPath p) {
  switch (p) {
    case ConvWgradPath::fp32_accumulate: return "fp32 accumulate (beta 1)";
    case ConvWgradPath::fp32_scratch_add: return "fp32 scratch + add";
    default: return "bf16 scratch + add";
  }
}

void conv2d_cuda_force_wgrad_path(int path) {
  KD_CHECK(path >= -1 && path <= 2, "conv2d_cuda_force_wgrad_path: no path ", path);
  PlanCache& cache = plan_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  cache.forced_wgrad_path = path;
}

std::string conv2d_cuda_plan_report() {
  PlanCache& cache = plan_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  std::string report;
  if (!cache.plans.empty()) report = cudnn::version_string() + "\n";
  for (const auto& entry : cache.plans) report += entry.second->label + "\n";
  return report;
}

void conv2d_forward_cuda(const CudaHandles& h, const Conv2dShape& s, const bf16* x, const bf16* w, bf16* y) {
  run_conv(h, ConvOp::forward, s, {const_cast<bf16*>(x), const_cast<bf16*>(w), y});
}

void conv2d_backward_data_cuda(const CudaHandles& h, const Conv2dShape& s, const bf16* dy, const bf16* w, bf16* dx) {
  run_conv(h, ConvOp::backward_data, s, {dx, const_cast<bf16*>(w), const_cast<bf16*>(dy)});
}

void conv2d_backward_filter_cuda(const CudaHandles& h, const Conv2dShape& s, const bf16* x, const bf16* dy,
                                 float* dw) {
  run_conv(h, ConvOp::backward_filter, s, {const_cast<bf16*>(x), dw, const_cast<bf16*>(dy)});
}

}  // namespace kd
