// conv2d_fp8_forward_cuda: a two-node cuDNN graph (FP8 convolution -> per-channel multiply), its
// plan built once per (shape, alignment) and cached. Never run on a GPU yet (issue 16's FP8
// teacher): the first GPU session validates it against conv2d_fp8_forward_cpu
// (tests/kernels/conv_fp8_test.cpp); the FP8 teacher falls back to its bf16 emulation when this
// throws.
#include <memory>

#include "kernels/conv_cuda_layout.h"
#include "kernels/conv_fp8.h"
#include "kernels/cuda_check.h"
#include "kernels/cudnn_graph.h"

namespace kd {
namespace {

constexpr int64_t kUidX = 1, kUidW = 2, kUidY = 3, kUidDescale = 4, kUidConvOut = 100;
constexpr int64_t kMaxAlignment = 16;
constexpr int64_t kMaxWorkspaceBytes = int64_t(1) << 30;

std::unique_ptr<cudnn::GraphPlan> build_plan(const CudaHandles& h, const Conv2dShape& s, const int64_t align[4]) {
  auto p = std::make_unique<cudnn::GraphPlan>();
  std::vector<cudnn::Descriptor>& d = p->keep;
  d.reserve(9);
  d.push_back(cudnn::make_tensor(kUidX, CUDNN_DATA_FP8_E4M3, conv_x_layout(s), align[0]));
  d.push_back(cudnn::make_tensor(kUidW, CUDNN_DATA_FP8_E4M3, conv_w_layout(s), align[1]));
  d.push_back(cudnn::make_tensor(kUidConvOut, CUDNN_DATA_FLOAT, conv_y_layout(s), kMaxAlignment, /*is_virtual=*/true));
  // The per-channel factor broadcast over n, h, w: dims [1, c_out, 1, 1] in cuDNN's (n, c, h, w)
  // order, channels contiguous (NHWC-style strides).
  CudnnTensorLayout per_channel;
  const int64_t dims[4] = {1, s.c_out, 1, 1}, strides[4] = {s.c_out, 1, s.c_out, s.c_out};
  for (int i = 0; i < 4; ++i) per_channel.dims[i] = dims[i], per_channel.strides[i] = strides[i];
  d.push_back(cudnn::make_tensor(kUidDescale, CUDNN_DATA_FLOAT, per_channel, align[3]));
  d.push_back(cudnn::make_tensor(kUidY, CUDNN_DATA_BFLOAT16, conv_y_layout(s), align[2]));
  const cudnn::Descriptor &x = d[0], &w = d[1], &conv_out = d[2], &descale = d[3], &y = d[4];

  const CudnnConvParams cp = conv_cudnn_params(s);
  cudnn::Descriptor conv = cudnn::make_convolution_2d(cp.pre_padding, cp.post_padding, cp.filter_strides, cp.dilations);
  cudnn::Descriptor conv_op = cudnn::make_convolution_forward(x, w, conv_out, conv);
  p->pointwise.push_back(cudnn::make_pointwise(CUDNN_POINTWISE_MUL, conv_out, &descale, y));
  cudnn::Descriptor graph = cudnn::make_operation_graph(h.cudnn, {&conv_op, &p->pointwise[0].op});
  std::string why;
  std::vector<cudnn::Plan> plans = cudnn::make_plans(h.cudnn, graph, 1, kMaxWorkspaceBytes, &why);
  KD_CHECK(!plans.empty(), "no cuDNN engine for the FP8 convolution (", why.empty() ? "no engine configs" : why, ") [",
           cudnn::version_string(), "]");
  p->plan = std::move(plans[0]);
  d.push_back(std::move(conv));
  d.push_back(std::move(conv_op));
  d.push_back(std::move(graph));
  return p;
}

}  // namespace

bool cuda_device_has_fp8(int device) {
  int major = 0, minor = 0;
  KD_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  KD_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  return major > 8 || (major == 8 && minor >= 9);
}

void conv2d_fp8_forward_cuda(const CudaHandles& h, const Conv2dShape& s, const uint8_t* x, const uint8_t* w,
                             const float* descale, bf16* y) {
  try {
    validate(s);
    KD_CHECK(s.groups == 1, "one group only");
    KD_CHECK(h.cudnn && h.workspace, "CudaHandles without a cuDNN handle or workspace");
    const int64_t align[4] = {pointer_alignment_bytes(x, kMaxAlignment), pointer_alignment_bytes(w, kMaxAlignment),
                              pointer_alignment_bytes(y, kMaxAlignment),
                              pointer_alignment_bytes(descale, kMaxAlignment)};
    const auto shape = s.key();
    std::vector<int64_t> numbers(shape.begin(), shape.end());
    numbers.insert(numbers.end(), align, align + 4);
    const cudnn::GraphPlan& plan =
        cudnn::cached_graph_plan(h, "conv2d_fp8_forward", numbers, [&] { return build_plan(h, s, align); });
    cudnn::run_graph_plan(h, plan, {kUidX, kUidW, kUidDescale, kUidY},
                          {const_cast<uint8_t*>(x), const_cast<uint8_t*>(w), const_cast<float*>(descale), y});
  } catch (const Error& e) {
    KD_FAIL("conv2d_fp8_forward_cuda ", s.describe(), ": ", e.what());
  }
}

}  // namespace kd
