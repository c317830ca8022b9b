// cuDNN backend API plumbing; see cudnn_graph.h. Kept to API present in cuDNN 9.0 and later.
#include "kernels/cudnn_graph.h"

#include <map>
#include <mutex>
#include <sstream>
#include <utility>

#include "kernels/check.h"

namespace kd::cudnn {
namespace {

// Deprecated since cuDNN 9.8 (optional there), required before it. Named by value so that the
// newer headers' deprecation attribute does not fire; a newer runtime that refuses them is fine.
constexpr auto kOperationGraphHandle = static_cast<cudnnBackendAttributeName_t>(800);
constexpr auto kExecutionPlanHandle = static_cast<cudnnBackendAttributeName_t>(400);
constexpr size_t kVersionHandleOptional = 90800;

struct Version {
  size_t runtime = 0;
  std::string text;
};

const Version& version() {
  static const Version v = [] {
    Version r;
    r.runtime = cudnnGetVersion();
    std::ostringstream o;
    o << "cuDNN " << r.runtime / 10000 << "." << (r.runtime % 10000) / 100 << "." << r.runtime % 100 << " (headers "
      << CUDNN_MAJOR << "." << CUDNN_MINOR << "." << CUDNN_PATCHLEVEL << ")";
    r.text = o.str();
    return r;
  }();
  return v;
}

const char* type_name(cudnnBackendDescriptorType_t t) {
  switch (t) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR: return "tensor";
    case CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR: return "convolution";
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR: return "convolution forward op";
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR: return "convolution backward-data op";
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR: return "convolution backward-filter op";
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR: return "operation graph";
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR: return "engine heuristics";
    case CUDNN_BACKEND_ENGINECFG_DESCRIPTOR: return "engine config";
    case CUDNN_BACKEND_ENGINE_DESCRIPTOR: return "engine";
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: return "execution plan";
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR: return "variant pack";
    default: return "backend descriptor";
  }
}

std::string status_text(cudnnStatus_t status) {
  std::string text = cudnnGetErrorString(status);
  char last[512] = {0};
  cudnnGetLastErrorString(last, sizeof last);
  if (last[0]) text += std::string(" (") + last + ")";
  return text;
}

// The engine behind a config: its global index and whether it reduces in reduced precision.
void engine_info(const Descriptor& config, int64_t* index, bool* reduced_precision) {
  *index = -1;
  *reduced_precision = false;
  Descriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  cudnnBackendDescriptor_t raw = engine.get();
  int64_t count = 0;
  if (cudnnBackendGetAttribute(config.get(), CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &count,
                               &raw) != CUDNN_STATUS_SUCCESS)
    return;
  int64_t value = -1;
  if (cudnnBackendGetAttribute(raw, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &count, &value) ==
      CUDNN_STATUS_SUCCESS)
    *index = value;
  cudnnBackendNumericalNote_t notes[64];
  if (cudnnBackendGetAttribute(raw, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE, 64, &count, notes) ==
      CUDNN_STATUS_SUCCESS)
    for (int64_t i = 0; i < count && i < 64; ++i)
      if (notes[i] == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION) *reduced_precision = true;
}

}  // namespace

const std::string& version_string() {
  const Version& v = version();
  KD_CHECK(v.runtime >= 90000, "kd needs cuDNN 9 or newer at run time, found ", v.text);
  return v.text;
}

void check(cudnnStatus_t status, const std::string& what) {
  if (status != CUDNN_STATUS_SUCCESS) KD_FAIL(what, ": ", status_text(status), " [", version().text, "]");
}

Descriptor::Descriptor(cudnnBackendDescriptorType_t type) : type_(type) {
  check(cudnnBackendCreateDescriptor(type, &desc_),
        std::string("cudnnBackendCreateDescriptor(") + type_name(type) + ")");
}

Descriptor::~Descriptor() {
  if (desc_) cudnnBackendDestroyDescriptor(desc_);
}

Descriptor& Descriptor::operator=(Descriptor&& other) noexcept {
  if (this != &other) {
    if (desc_) cudnnBackendDestroyDescriptor(desc_);
    desc_ = std::exchange(other.desc_, nullptr);
    type_ = other.type_;
  }
  return *this;
}

Descriptor& Descriptor::set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                            const void* values) {
  check(cudnnBackendSetAttribute(desc_, name, type, count, values),
        std::string("cudnnBackendSetAttribute(") + type_name(type_) + ", attribute " + std::to_string(int(name)) + ")");
  return *this;
}

void Descriptor::finalize() {
  check(cudnnBackendFinalize(desc_), std::string("cudnnBackendFinalize(") + type_name(type_) + ")");
}

cudnnStatus_t Descriptor::try_finalize() { return cudnnBackendFinalize(desc_); }

Descriptor make_tensor(const TensorSpec& spec) {
  Descriptor t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  t.set_data_type(CUDNN_ATTR_TENSOR_DATA_TYPE, spec.dtype)
      .set_int64s(CUDNN_ATTR_TENSOR_DIMENSIONS, spec.dims, 4)
      .set_int64s(CUDNN_ATTR_TENSOR_STRIDES, spec.strides, 4)
      .set_int64(CUDNN_ATTR_TENSOR_UNIQUE_ID, spec.uid)
      .set_int64(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, spec.alignment_bytes);
  if (spec.is_virtual) {
    const bool yes = true;
    t.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &yes);
  }
  t.finalize();
  return t;
}

Descriptor make_convolution_2d(const int64_t pre_padding[2], const int64_t post_padding[2], const int64_t strides[2],
                               const int64_t dilations[2]) {
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  Descriptor conv(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  conv.set_data_type(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_DATA_FLOAT)
      .set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode)
      .set_int64(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, 2)
      .set_int64s(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, pre_padding, 2)
      .set_int64s(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, post_padding, 2)
      .set_int64s(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, strides, 2)
      .set_int64s(CUDNN_ATTR_CONVOLUTION_DILATIONS, dilations, 2);
  conv.finalize();
  return conv;
}

Descriptor make_tensor(int64_t uid, cudnnDataType_t dtype, const CudnnTensorLayout& layout, int64_t alignment_bytes,
                       bool is_virtual) {
  TensorSpec spec;
  spec.uid = uid;
  spec.dtype = dtype;
  for (int i = 0; i < 4; ++i) spec.dims[i] = layout.dims[i], spec.strides[i] = layout.strides[i];
  spec.alignment_bytes = alignment_bytes;
  spec.is_virtual = is_virtual;
  return make_tensor(spec);
}

Descriptor make_convolution_forward(const Descriptor& x, const Descriptor& w, const Descriptor& y,
                                    const Descriptor& conv, float beta) {
  Descriptor op(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
  op.set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, x)
      .set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, w)
      .set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, y)
      .set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, conv)
      .set_float(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, 1.0f)
      .set_float(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, beta);
  op.finalize();
  return op;
}

PointwiseOp make_pointwise(cudnnPointwiseMode_t mode, const Descriptor& x, const Descriptor* b, const Descriptor& y) {
  PointwiseOp p{Descriptor(CUDNN_BACKEND_POINTWISE_DESCRIPTOR),
                Descriptor(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR)};
  p.mode.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode)
      .set_data_type(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_DATA_FLOAT);
  p.mode.finalize();
  p.op.set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, p.mode)
      .set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x)
      .set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y);
  if (b) p.op.set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, *b);
  p.op.finalize();
  return p;
}

Descriptor make_operation_graph(cudnnHandle_t handle, const std::vector<const Descriptor*>& ops) {
  version_string();  // fails early on a pre-9 runtime
  Descriptor graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  std::vector<cudnnBackendDescriptor_t> raw;
  for (const Descriptor* op : ops) raw.push_back(op->get());
  graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, int64_t(raw.size()), raw.data());
  const cudnnStatus_t st = cudnnBackendSetAttribute(graph.get(), kOperationGraphHandle, CUDNN_TYPE_HANDLE, 1, &handle);
  if (version().runtime < kVersionHandleOptional) check(st, "cudnnBackendSetAttribute(operation graph, handle)");
  graph.finalize();
  return graph;
}

std::string Plan::describe() const {
  std::ostringstream o;
  o << "engine " << engine_index << ", workspace " << workspace_bytes << " B";
  if (reduced_precision) o << ", reduced-precision reduction";
  return o.str();
}

std::vector<Plan> make_plans(cudnnHandle_t handle, const Descriptor& op_graph, size_t max_plans,
                             int64_t max_workspace_bytes, std::string* why_not) {
  std::ostringstream log;
  std::vector<Plan> plans, reduced;  // reduced-precision engines only when nothing else works
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    const char* mode_name = mode == CUDNN_HEUR_MODE_A ? "heuristics A" : "fallback list";
    Descriptor heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    heur.set_descriptor(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, op_graph)
        .set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    cudnnStatus_t st = heur.try_finalize();
    if (st != CUDNN_STATUS_SUCCESS) {
      log << mode_name << ": " << status_text(st) << "; ";
      continue;
    }
    int64_t count = 0;
    st = cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                  nullptr);
    if (st != CUDNN_STATUS_SUCCESS || count <= 0) {
      log << mode_name << ": no engine configs (" << status_text(st) << "); ";
      continue;
    }
    std::vector<Descriptor> configs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < count; ++i) {
      configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      raw.push_back(configs.back().get());
    }
    int64_t returned = 0;
    check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                   &returned, raw.data()),
          std::string("cudnnBackendGetAttribute(engine heuristics, results) with ") + mode_name);
    for (int64_t i = 0; i < returned && i < count && plans.size() < max_plans; ++i) {
      Plan p;
      engine_info(configs[size_t(i)], &p.engine_index, &p.reduced_precision);
      p.plan = Descriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      st = cudnnBackendSetAttribute(p.plan.get(), kExecutionPlanHandle, CUDNN_TYPE_HANDLE, 1, &handle);
      if (version().runtime < kVersionHandleOptional) check(st, "cudnnBackendSetAttribute(execution plan, handle)");
      p.plan.set_descriptor(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, configs[size_t(i)]);
      st = p.plan.try_finalize();
      if (st != CUDNN_STATUS_SUCCESS) {
        log << "engine " << p.engine_index << ": " << status_text(st) << "; ";
        continue;
      }
      int64_t n = 0;
      check(cudnnBackendGetAttribute(p.plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                     &p.workspace_bytes),
            "cudnnBackendGetAttribute(execution plan, workspace size)");
      if (p.workspace_bytes > max_workspace_bytes) {
        log << "engine " << p.engine_index << ": workspace " << p.workspace_bytes << " B over the limit; ";
        continue;
      }
      p.config = std::move(configs[size_t(i)]);
      (p.reduced_precision ? reduced : plans).push_back(std::move(p));
    }
    if (plans.empty() && !reduced.empty()) plans.swap(reduced);
    if (!plans.empty()) break;
  }
  if (plans.size() > max_plans) plans.resize(max_plans);
  if (why_not) *why_not = log.str();
  return plans;
}

cudnnStatus_t execute(cudnnHandle_t handle, const Plan& plan, const std::vector<int64_t>& uids,
                      const std::vector<void*>& pointers, void* workspace) {
  KD_CHECK(uids.size() == pointers.size(), "cudnn::execute: ", uids.size(), " uids for ", pointers.size(),
           " pointers");
  Descriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, int64_t(uids.size()), uids.data())
      .set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, int64_t(pointers.size()), pointers.data())
      .set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
  pack.finalize();
  return cudnnBackendExecute(handle, plan.plan.get(), pack.get());
}

const GraphPlan& cached_graph_plan(const CudaHandles& h, const std::string& op, const std::vector<int64_t>& numbers,
                                   const std::function<std::unique_ptr<GraphPlan>()>& build) {
  using Key = std::pair<std::string, std::vector<int64_t>>;
  static std::mutex* mutex = new std::mutex;
  static auto* plans = new std::map<Key, std::unique_ptr<GraphPlan>>;
  Key key{op, {int64_t(reinterpret_cast<uintptr_t>(h.cudnn)), h.device}};
  key.second.insert(key.second.end(), numbers.begin(), numbers.end());
  std::lock_guard<std::mutex> lock(*mutex);
  auto it = plans->find(key);
  if (it == plans->end()) it = plans->emplace(std::move(key), build()).first;
  return *it->second;
}

void run_graph_plan(const CudaHandles& h, const GraphPlan& p, const std::vector<int64_t>& uids,
                    const std::vector<void*>& pointers) {
  void* workspace = h.workspace->get(size_t(p.plan.workspace_bytes));
  check(execute(h.cudnn, p.plan, uids, pointers, workspace), "cudnnBackendExecute (" + p.plan.describe() + ")");
}

}  // namespace kd::cudnn
