// A thin layer over cuDNN's backend (graph) API: an owning descriptor, checked attribute
// setters, tensor descriptors, and the heuristics -> engine config -> execution plan -> variant
// pack -> execute sequence. Only for code built with CUDA (includes cudnn.h). Every failure throws
// kd::Error naming the call, cuDNN's status and its last error message, and the cuDNN version.
#pragma once
#include <cudnn.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/conv_cuda_layout.h"
#include "kernels/cuda_handles.h"

namespace kd::cudnn {

// "cuDNN 9.19.0 (headers 9.19.0)"; checks once that the runtime is cuDNN 9 or newer.
const std::string& version_string();

// Throws kd::Error "<what>: <status name> (<cuDNN's last message>) [<version>]" unless success.
void check(cudnnStatus_t status, const std::string& what);

// Owns one backend descriptor; move-only.
class Descriptor {
 public:
  Descriptor() = default;
  explicit Descriptor(cudnnBackendDescriptorType_t type);
  ~Descriptor();
  Descriptor(Descriptor&& other) noexcept : desc_(other.desc_), type_(other.type_) { other.desc_ = nullptr; }
  Descriptor& operator=(Descriptor&& other) noexcept;
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;

  cudnnBackendDescriptor_t get() const { return desc_; }

  // cudnnBackendSetAttribute, checked.
  Descriptor& set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                  const void* values);
  Descriptor& set_int64s(cudnnBackendAttributeName_t name, const int64_t* values, int64_t count) {
    return set(name, CUDNN_TYPE_INT64, count, values);
  }
  Descriptor& set_int64(cudnnBackendAttributeName_t name, int64_t value) { return set_int64s(name, &value, 1); }
  Descriptor& set_descriptor(cudnnBackendAttributeName_t name, const Descriptor& value) {
    cudnnBackendDescriptor_t d = value.get();
    return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d);
  }
  Descriptor& set_float(cudnnBackendAttributeName_t name, float value) {
    return set(name, CUDNN_TYPE_FLOAT, 1, &value);
  }
  Descriptor& set_data_type(cudnnBackendAttributeName_t name, cudnnDataType_t value) {
    return set(name, CUDNN_TYPE_DATA_TYPE, 1, &value);
  }

  void finalize();                    // checked
  cudnnStatus_t try_finalize();       // for candidates that may be unsupported

 private:
  cudnnBackendDescriptor_t desc_ = nullptr;
  cudnnBackendDescriptorType_t type_ = CUDNN_BACKEND_TENSOR_DESCRIPTOR;
};

// A non-virtual tensor: 4 dims in cuDNN's axis order with explicit strides.
struct TensorSpec {
  int64_t uid = 0;
  cudnnDataType_t dtype = CUDNN_DATA_FLOAT;
  int64_t dims[4] = {};
  int64_t strides[4] = {};
  int64_t alignment_bytes = 16;
  bool is_virtual = false;  // an intermediate of a graph, never in memory
};
Descriptor make_tensor(const TensorSpec& spec);
// The same from a convolution tensor's layout (kernels/conv_cuda_layout.h).
Descriptor make_tensor(int64_t uid, cudnnDataType_t dtype, const CudnnTensorLayout& layout, int64_t alignment_bytes,
                       bool is_virtual = false);

// A finalized 2-D cross-correlation with fp32 compute: padding before and after, filter strides
// and dilations, two values each (height, width).
Descriptor make_convolution_2d(const int64_t pre_padding[2], const int64_t post_padding[2], const int64_t strides[2],
                               const int64_t dilations[2]);

// A finalized convolution-forward operation y = conv(x, w) + beta y, alpha 1 (conv: from
// make_convolution_2d).
Descriptor make_convolution_forward(const Descriptor& x, const Descriptor& w, const Descriptor& y,
                                    const Descriptor& conv, float beta = 0.0f);
// A finalized pointwise operation y = mode(x[, b]) in fp32 math (b: null for unary modes such as
// CUDNN_POINTWISE_RELU_FWD); `mode` describes it and must outlive `op`.
struct PointwiseOp {
  Descriptor mode, op;
};
PointwiseOp make_pointwise(cudnnPointwiseMode_t mode, const Descriptor& x, const Descriptor* b, const Descriptor& y);
// An operation graph of the given operations (finalized). The handle is still required by
// cuDNN before 9.8, so it is always set.
Descriptor make_operation_graph(cudnnHandle_t handle, const std::vector<const Descriptor*>& ops);

// A finalized execution plan and what is known about it.
struct Plan {
  Descriptor plan;
  Descriptor config;             // the engine config it was built from, kept alive with it
  int64_t workspace_bytes = 0;
  int64_t engine_index = -1;     // cuDNN's global engine index, for reports
  bool reduced_precision = false;  // the engine reduces in less than fp32
  std::string describe() const;  // "engine 12, workspace 4096 B"
};

// Engine configs from heuristics (mode A, then the fallback list), in the order cuDNN ranks
// them, finalized into plans; configs that do not finalize are skipped and noted in *why_not.
// Returns at most max_plans plans; fewer (maybe none) when cuDNN supports fewer.
std::vector<Plan> make_plans(cudnnHandle_t handle, const Descriptor& op_graph, size_t max_plans,
                             int64_t max_workspace_bytes, std::string* why_not);

// Binds the data pointers (by tensor uid) and the workspace, then runs the plan on the handle's
// stream. Returns cuDNN's status so that autotuning can skip a failing candidate.
cudnnStatus_t execute(cudnnHandle_t handle, const Plan& plan, const std::vector<int64_t>& uids,
                      const std::vector<void*>& pointers, void* workspace);

// A fused graph's execution plan with every descriptor it references, kept alive with it.
struct GraphPlan {
  std::vector<Descriptor> keep;
  std::vector<PointwiseOp> pointwise;
  Plan plan;
};
// The plan of `op` for `numbers` (its shape, form and pointer alignments) on h's cuDNN handle and
// device: built by `build` the first time, then kept for the process (never destroyed: cuDNN's
// teardown order).
const GraphPlan& cached_graph_plan(const CudaHandles& h, const std::string& op, const std::vector<int64_t>& numbers,
                                   const std::function<std::unique_ptr<GraphPlan>()>& build);
// Runs a plan on h's stream with h's workspace; throws naming the plan when cuDNN fails.
void run_graph_plan(const CudaHandles& h, const GraphPlan& p, const std::vector<int64_t>& uids,
                    const std::vector<void*>& pointers);

}  // namespace kd::cudnn
