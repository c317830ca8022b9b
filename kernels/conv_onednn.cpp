// oneDNN convolutions for the CPU path (conv_onednn.h). Per shape a Plan holds the three
// operations' primitives, built with "any" layouts so oneDNN picks its fastest (blocked) ones, and
// the reorders between kd's NHWC / OHWI tensors and those layouts. A call: reorder the inputs into
// per-thread scratch (skipped where the layouts already agree), run the primitive, reorder the
// result back (for dw with a sum post-op: dw += result in one pass).
#include "kernels/conv_onednn.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

#include "kernels/check.h"
#include "kernels/cpu_backend.h"

#if KD_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace kd {

namespace {
[[maybe_unused]] bool spatial(const Conv2dShape& s) { return !(s.kh == 1 && s.kw == 1 && s.groups == 1); }
}  // namespace

#if KD_HAVE_ONEDNN

namespace {

using dnnl::memory;
using Tag = dnnl::memory::format_tag;

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// A reorder from one layout to another, or nothing where they agree (and no post-op is asked).
struct Move {
  memory::desc from, to;
  dnnl::reorder prim;
  bool needed = false;
  size_t scratchpad = 0;
};

Move make_move(const memory::desc& from, const memory::desc& to, bool accumulate) {
  Move m;
  m.from = from;
  m.to = to;
  m.needed = accumulate || from != to;
  if (!m.needed) return m;
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (accumulate) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  dnnl::reorder::primitive_desc pd(cpu_engine(), from, cpu_engine(), to, attr);
  m.scratchpad = pd.scratchpad_desc().get_size();
  m.prim = dnnl::reorder(pd);
  return m;
}

bool is_reference(const char* impl) { return std::string(impl).rfind("ref", 0) == 0; }

// One operation (forward, backward data or backward filter) of one shape.
struct Op {
  bool usable = false;
  std::string impl;
  dnnl::primitive prim;
  size_t scratchpad = 0;
  Move in0, in1, out;  // two inputs in, one result out
};

struct Plan {
  Op fwd, bwd_data, bwd_filter;
};

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

template <typename PD>
void finish(Op& op, const PD& pd, const memory::desc& in0_user, const memory::desc& in0,
            const memory::desc& in1_user, const memory::desc& in1, const memory::desc& out, const memory::desc& out_user,
            bool accumulate) {
  op.impl = pd.impl_info_str();
  op.usable = !is_reference(op.impl.c_str());
  if (!op.usable) return;
  op.scratchpad = pd.scratchpad_desc().get_size();
  op.in0 = make_move(in0_user, in0, false);
  op.in1 = make_move(in1_user, in1, false);
  op.out = make_move(out, out_user, accumulate);
}

std::unique_ptr<Plan> make_plan(const Conv2dShape& s) {
  const auto f32 = memory::data_type::f32;
  const memory::dims x_dims{s.n, s.c_in, s.h, s.w}, y_dims{s.n, s.c_out, s.out_h(), s.out_w()};
  const bool grouped = s.groups > 1;
  const memory::dims w_dims = grouped ? memory::dims{s.groups, s.c_out_per_group(), s.c_in_per_group(), s.kh, s.kw}
                                      : memory::dims{s.c_out, s.c_in, s.kh, s.kw};
  const memory::desc x_user(x_dims, f32, Tag::nhwc), y_user(y_dims, f32, Tag::nhwc);
  const memory::desc w_user(w_dims, f32, grouped ? Tag::gohwi : Tag::ohwi);
  const memory::desc x_any(x_dims, f32, Tag::any), y_any(y_dims, f32, Tag::any), w_any(w_dims, f32, Tag::any);
  const memory::dims strides{s.stride_h, s.stride_w}, dilation{s.dilation_h - 1, s.dilation_w - 1};
  // Right padding equal to the left: oneDNN derives the output size with the same floor division
  // as Conv2dShape::out_h, so the extra rows a stride skips are simply never read.
  const memory::dims pad{s.pad_h, s.pad_w};
  const auto algo = dnnl::algorithm::convolution_direct;
  const dnnl::primitive_attr attr = user_scratchpad();
  auto plan = std::make_unique<Plan>();

  // An op oneDNN cannot build (or builds only in its reference implementation) stays on kd's.
  auto build = [](Op& op, const char* name, const auto& make) {
    try {
      make();
    } catch (const dnnl::error& e) {
      op = Op{};
      op.impl = std::string("none (") + name + ": " + e.what() + ")";
    }
  };
  dnnl::convolution_forward::primitive_desc fwd_pd;
  build(plan->fwd, "forward", [&] {
    fwd_pd = dnnl::convolution_forward::primitive_desc(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, algo, x_any, w_any, y_any, strides,
                                        dilation, pad, pad),
        attr, cpu_engine());
    finish(plan->fwd, fwd_pd, x_user, fwd_pd.src_desc(), w_user, fwd_pd.weights_desc(), fwd_pd.dst_desc(), y_user,
           false);
    if (plan->fwd.usable) plan->fwd.prim = dnnl::convolution_forward(fwd_pd);
  });
  if (!fwd_pd) return plan;  // the backward ops need the forward's descriptor as their hint
  build(plan->bwd_data, "backward data", [&] {
    const dnnl::convolution_backward_data::primitive_desc pd(
        dnnl::convolution_backward_data::desc(algo, x_any, w_any, y_any, strides, dilation, pad, pad), attr,
        cpu_engine(), fwd_pd);
    finish(plan->bwd_data, pd, y_user, pd.diff_dst_desc(), w_user, pd.weights_desc(), pd.diff_src_desc(), x_user,
           false);
    if (plan->bwd_data.usable) plan->bwd_data.prim = dnnl::convolution_backward_data(pd);
  });
  build(plan->bwd_filter, "backward filter", [&] {
    const dnnl::convolution_backward_weights::primitive_desc pd(
        dnnl::convolution_backward_weights::desc(algo, x_any, w_any, y_any, strides, dilation, pad, pad), attr,
        cpu_engine(), fwd_pd);
    finish(plan->bwd_filter, pd, x_user, pd.src_desc(), y_user, pd.diff_dst_desc(), pd.diff_weights_desc(), w_user,
           true);
    if (plan->bwd_filter.usable) plan->bwd_filter.prim = dnnl::convolution_backward_weights(pd);
  });
  return plan;
}

// Plans by shape. Built under the lock, immutable afterwards (executing a primitive does not
// change it), so callers use them without the lock.
const Plan& plan_for(const Conv2dShape& s) {
  static std::mutex mutex;
  static std::map<std::array<int64_t, 14>, std::unique_ptr<Plan>> plans;
  const auto key = s.key();
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, make_plan(s)).first;
  return *it->second;
}

// Per-thread scratch: the blocked copies of two inputs and the result, and the primitives'
// scratchpads (user mode: nothing oneDNN keeps globally, so threads may run convolutions at once).
struct Scratch {
  struct Slot {
    void* data = nullptr;
    size_t bytes = 0;
    ~Slot() { std::free(data); }
    void* get(size_t need) {
      if (need > bytes) {
        std::free(data);
        bytes = (need + 4095) / 4096 * 4096;
        data = std::aligned_alloc(64, bytes);
        KD_CHECK(data, "conv (oneDNN): out of memory for ", bytes, " bytes of scratch");
      }
      return data;
    }
  };
  Slot in0, in1, out, pad;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

dnnl::stream& cpu_stream() {
  thread_local dnnl::stream s(cpu_engine());
  return s;
}

// Runs one op: in0/in1 are kd's tensors (read), out is kd's tensor (written, or accumulated when
// the out move carries the sum post-op). arg0/arg1/arg_out: the primitive's argument names.
void run(const Op& op, int arg0, const float* in0, int arg1, const float* in1, int arg_out, float* out) {
  Scratch& sc = scratch();
  dnnl::stream& st = cpu_stream();
  // One scratchpad serves every primitive of the call (they run one after another); at least a byte.
  const size_t pad_bytes =
      std::max({op.scratchpad, op.in0.scratchpad, op.in1.scratchpad, op.out.scratchpad, size_t(1)});
  const memory pad(memory::desc({memory::dim(pad_bytes)}, memory::data_type::u8, Tag::a), cpu_engine(),
                   sc.pad.get(pad_bytes));
  auto stage_in = [&](const Move& mv, const float* user, Scratch::Slot& slot) {
    const memory u(mv.from, cpu_engine(), const_cast<float*>(user));
    if (!mv.needed) return u;
    const memory staged(mv.to, cpu_engine(), slot.get(mv.to.get_size()));
    mv.prim.execute(st, {{DNNL_ARG_FROM, u}, {DNNL_ARG_TO, staged}, {DNNL_ARG_SCRATCHPAD, pad}});
    return staged;
  };
  const memory a = stage_in(op.in0, in0, sc.in0);
  const memory b = stage_in(op.in1, in1, sc.in1);
  const memory user_out(op.out.to, cpu_engine(), out);
  const memory result = op.out.needed ? memory(op.out.from, cpu_engine(), sc.out.get(op.out.from.get_size())) : user_out;
  op.prim.execute(st, {{arg0, a}, {arg1, b}, {arg_out, result}, {DNNL_ARG_SCRATCHPAD, pad}});
  if (op.out.needed)
    op.out.prim.execute(st, {{DNNL_ARG_FROM, result}, {DNNL_ARG_TO, user_out}, {DNNL_ARG_SCRATCHPAD, pad}});
  st.wait();
}

const Plan* plan_if_taken(const Conv2dShape& s) {
  if (cpu_backend() != CpuBackend::onednn || !spatial(s)) return nullptr;
  validate(s);
  return &plan_for(s);
}

}  // namespace

bool conv2d_onednn_takes(const Conv2dShape& s) {
  const Plan* p = plan_if_taken(s);
  return p && p->fwd.usable;
}

bool conv2d_forward_onednn(const Conv2dShape& s, const float* x, const float* w, float* y) {
  const Plan* p = plan_if_taken(s);
  if (!p || !p->fwd.usable) return false;
  run(p->fwd, DNNL_ARG_SRC, x, DNNL_ARG_WEIGHTS, w, DNNL_ARG_DST, y);
  return true;
}

bool conv2d_backward_data_onednn(const Conv2dShape& s, const float* dy, const float* w, float* dx) {
  const Plan* p = plan_if_taken(s);
  if (!p || !p->bwd_data.usable) return false;
  run(p->bwd_data, DNNL_ARG_DIFF_DST, dy, DNNL_ARG_WEIGHTS, w, DNNL_ARG_DIFF_SRC, dx);
  return true;
}

bool conv2d_backward_filter_onednn(const Conv2dShape& s, const float* x, const float* dy, float* dw) {
  const Plan* p = plan_if_taken(s);
  if (!p || !p->bwd_filter.usable) return false;
  run(p->bwd_filter, DNNL_ARG_SRC, x, DNNL_ARG_DIFF_DST, dy, DNNL_ARG_DIFF_WEIGHTS, dw);
  return true;
}

std::string conv2d_onednn_describe(const Conv2dShape& s) {
  if (cpu_backend() != CpuBackend::onednn) return "not taken: CPU backend is reference";
  if (!spatial(s)) return "not taken: pointwise (kd's GEMM on the NHWC tensor)";
  const Plan& p = plan_for(s);
  auto one = [](const Op& op) { return op.usable ? op.impl : op.impl + " (kd's instead)"; };
  return "forward " + one(p.fwd) + ", backward data " + one(p.bwd_data) + ", backward filter " + one(p.bwd_filter);
}

#else  // no oneDNN: the fast path never takes a shape

bool conv2d_onednn_takes(const Conv2dShape&) { return false; }
bool conv2d_forward_onednn(const Conv2dShape&, const float*, const float*, float*) { return false; }
bool conv2d_backward_data_onednn(const Conv2dShape&, const float*, const float*, float*) { return false; }
bool conv2d_backward_filter_onednn(const Conv2dShape&, const float*, const float*, float*) { return false; }
std::string conv2d_onednn_describe(const Conv2dShape&) { return "not taken: kd was built without oneDNN"; }

#endif  // KD_HAVE_ONEDNN

}  // namespace kd
