// Shared by engine/ops*.cpp: the checks every op makes and the CPU precision dispatch.
#pragma once
#include "engine/op_profile.h"
#include "engine/ops.h"

namespace kd::ops::detail {

inline void check_activation(const Context& ctx, const Tensor& t, const char* op, const char* what) {
  KD_CHECK(t.defined(), op, ": ", what, " is missing");
  KD_CHECK(t.device() == ctx.device(), op, ": ", what, " ", t.describe(), " is not on ", device_name(ctx.device()));
  KD_CHECK(t.dtype() == activation_dtype(ctx), op, ": ", what, " ", t.describe(), " should be ",
           dtype_name(activation_dtype(ctx)));
}

// Parameters, gradients, statistics, logits: f32 (f64 in a double-precision CPU context).
inline void check_param(const Context& ctx, const Tensor& t, const Shape& shape, const char* op, const char* what) {
  KD_CHECK(t.defined(), op, ": ", what, " is missing");
  KD_CHECK(t.device() == ctx.device() && t.dtype() == ctx.param_dtype() && t.shape() == shape, op, ": ", what, " is ",
           t.describe(), ", expected ", dtype_name(ctx.param_dtype()), shape_str(shape), " on ",
           device_name(ctx.device()));
}

inline void check_nhwc(const Tensor& x, const char* op) {
  KD_CHECK(x.ndim() == 4, op, ": expected an NHWC tensor, got ", x.describe());
}

// Runs f(T{}) with T = float or double, the CPU context's precision.
template <typename F>
void with_cpu_precision(const Context& ctx, F&& f) {
  if (ctx.param_dtype() == DType::f64)
    f(double{});
  else
    f(float{});
}

#if !KD_HAVE_CUDA
[[noreturn]] inline void no_cuda_path(const char* op) { KD_FAIL(op, ": kd was built without CUDA (KD_CUDA=OFF)"); }
#endif

inline Tensor new_activation(Context& ctx, const Shape& shape) {
  return Tensor::empty(shape, activation_dtype(ctx), ctx);
}

// The CUDA half of an op: compiled only into CUDA builds (it names kernels that a CPU-only
// build does not have).
#if KD_HAVE_CUDA
#define KD_IF_CUDA(...) __VA_ARGS__
#else
#define KD_IF_CUDA(...)
#endif

// Names the shape (and FLOPs or minimal bytes) of the next dispatched op in an active OpProfile.
inline void profile_detail(const std::string& shape, double flops, double bytes = 0) {
  if (OpProfile* p = OpProfile::active()) p->detail(shape, flops, bytes);
}

// Runs `cuda` on a GPU context and `cpu(T{})` on a CPU one, T the context's precision. An
// OpProfile (kd bench --ops), when one is active, times the call.
template <typename Cuda, typename Cpu>
void dispatch(const Context& ctx, const char* op, Cuda&& cuda, Cpu&& cpu) {
  OpProfile* profile = OpProfile::active();
  if (profile) profile->begin(op);
  if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
    cuda();
#else
    (void)cuda;
    no_cuda_path(op);
#endif
  } else {
    with_cpu_precision(ctx, cpu);
  }
  if (profile) profile->end();
}

}  // namespace kd::ops::detail
