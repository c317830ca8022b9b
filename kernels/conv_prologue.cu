// conv2d_prologue_forward_cuda: x -> (* scale) -> (+ shift) -> ReLU -> convolution as one cuDNN
// operation graph. The intermediates are virtual (never in memory); the ReLU's output, the
// convolution's input, is tried first in fp32 and then in bf16, since which one the runtime
// fusion engines take is not documented for every form. Never run on a GPU yet.
#include <memory>

#include "kernels/check.h"
#include "kernels/conv_cuda_layout.h"
#include "kernels/conv_prologue.h"
#include "kernels/cudnn_graph.h"

namespace kd {
namespace {

constexpr int64_t kUidX = 1, kUidScale = 2, kUidShift = 3, kUidW = 4, kUidY = 5;
constexpr int64_t kUidScaled = 101, kUidShifted = 102, kUidRectified = 103;
constexpr int64_t kMaxAlignment = 16;
constexpr int64_t kMaxWorkspaceBytes = int64_t(1) << 30;

// One attempt with the convolution's input (the ReLU's output) in `input_dtype`; null and the
// reason in *why when no engine takes it.
std::unique_ptr<cudnn::GraphPlan> try_plan(const CudaHandles& h, const Conv2dShape& s, bool per_sample,
                                           const int64_t align[5], cudnnDataType_t input_dtype, std::string* why) {
  auto p = std::make_unique<cudnn::GraphPlan>();
  std::vector<cudnn::Descriptor>& d = p->keep;
  d.reserve(12);  // (references into it are taken below)
  const CudnnTensorLayout xl = conv_x_layout(s);
  // scale, shift: [n or 1, c_in, 1, 1] in cuDNN's order, channels contiguous; broadcast over h, w
  // (and over n when per channel).
  const int64_t rows = per_sample ? s.n : 1;
  const CudnnTensorLayout factor{{rows, s.c_in, 1, 1}, {s.c_in, 1, s.c_in, s.c_in}};
  d.push_back(cudnn::make_tensor(kUidX, CUDNN_DATA_BFLOAT16, xl, align[0]));
  d.push_back(cudnn::make_tensor(kUidScale, CUDNN_DATA_FLOAT, factor, align[1]));
  d.push_back(cudnn::make_tensor(kUidShift, CUDNN_DATA_FLOAT, factor, align[2]));
  d.push_back(cudnn::make_tensor(kUidW, CUDNN_DATA_BFLOAT16, conv_w_layout(s), align[3]));
  d.push_back(cudnn::make_tensor(kUidY, CUDNN_DATA_BFLOAT16, conv_y_layout(s), align[4]));
  d.push_back(cudnn::make_tensor(kUidScaled, CUDNN_DATA_FLOAT, xl, kMaxAlignment, true));
  d.push_back(cudnn::make_tensor(kUidShifted, CUDNN_DATA_FLOAT, xl, kMaxAlignment, true));
  d.push_back(cudnn::make_tensor(kUidRectified, input_dtype, xl, kMaxAlignment, true));
  const cudnn::Descriptor &x = d[0], &scale = d[1], &shift = d[2], &w = d[3], &y = d[4];
  const cudnn::Descriptor &scaled = d[5], &shifted = d[6], &rectified = d[7];
  p->pointwise.push_back(cudnn::make_pointwise(CUDNN_POINTWISE_MUL, x, &scale, scaled));
  p->pointwise.push_back(cudnn::make_pointwise(CUDNN_POINTWISE_ADD, scaled, &shift, shifted));
  p->pointwise.push_back(cudnn::make_pointwise(CUDNN_POINTWISE_RELU_FWD, shifted, nullptr, rectified));

  const CudnnConvParams cp = conv_cudnn_params(s);
  d.push_back(cudnn::make_convolution_2d(cp.pre_padding, cp.post_padding, cp.filter_strides, cp.dilations));
  d.push_back(cudnn::make_convolution_forward(rectified, w, y, d.back()));
  d.push_back(cudnn::make_operation_graph(
      h.cudnn, {&p->pointwise[0].op, &p->pointwise[1].op, &p->pointwise[2].op, &d[d.size() - 1]}));
  std::vector<cudnn::Plan> plans = cudnn::make_plans(h.cudnn, d.back(), 1, kMaxWorkspaceBytes, why);
  if (plans.empty()) return nullptr;
  p->plan = std::move(plans[0]);
  return p;
}

std::unique_ptr<cudnn::GraphPlan> build_plan(const CudaHandles& h, const Conv2dShape& s, bool per_sample,
                                             const int64_t align[5]) {
  // A refusal may come as no plan or as a throw (a descriptor cuDNN will not finalize): either
  // way the other type is tried, and the message keeps both reasons.
  auto attempt = [&](cudnnDataType_t type, std::string* why) -> std::unique_ptr<cudnn::GraphPlan> {
    try {
      return try_plan(h, s, per_sample, align, type, why);
    } catch (const Error& e) {
      *why = e.what();
      return nullptr;
    }
  };
  std::string why_f32, why_bf16;
  if (auto p = attempt(CUDNN_DATA_FLOAT, &why_f32)) return p;
  if (auto p = attempt(CUDNN_DATA_BFLOAT16, &why_bf16)) return p;
  KD_FAIL("no cuDNN engine for the convolution prologue with ", per_sample ? "per-sample" : "per-channel",
          " scale and shift (fp32 input: ", why_f32.empty() ? "no engine configs" : why_f32,
          "; bf16 input: ", why_bf16.empty() ? "no engine configs" : why_bf16, ") [", cudnn::version_string(), "]");
}

}  // namespace

void conv2d_prologue_forward_cuda(const CudaHandles& h, const Conv2dShape& s, bool per_sample, const bf16* x,
                                  const float* scale, const float* shift, const bf16* w, bf16* y) {
  try {
    validate(s);
    KD_CHECK(s.groups == 1, "one group only");
    KD_CHECK(h.cudnn && h.workspace, "CudaHandles without a cuDNN handle or workspace");
    const int64_t align[5] = {pointer_alignment_bytes(x, kMaxAlignment), pointer_alignment_bytes(scale, kMaxAlignment),
                              pointer_alignment_bytes(shift, kMaxAlignment), pointer_alignment_bytes(w, kMaxAlignment),
                              pointer_alignment_bytes(y, kMaxAlignment)};
    const auto shape = s.key();
    std::vector<int64_t> numbers(shape.begin(), shape.end());
    numbers.push_back(per_sample);
    numbers.insert(numbers.end(), align, align + 5);
    const cudnn::GraphPlan& plan = cudnn::cached_graph_plan(h, "conv2d_prologue_forward", numbers,
                                                            [&] { return build_plan(h, s, per_sample, align); });
    cudnn::run_graph_plan(
        h, plan, {kUidX, kUidScale, kUidShift, kUidW, kUidY},
        {const_cast<bf16*>(x), const_cast<float*>(scale), const_cast<float*>(shift), const_cast<bf16*>(w), y});
  } catch (const Error& e) {
    KD_FAIL("conv2d_prologue_forward_cuda ", s.describe(), ": ", e.what());
  }
}

}  // namespace kd
