#include "engine/fp8_teacher.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <vector>

#include "engine/layers.h"
#include "engine/ops_internal.h"
#if KD_HAVE_CUDA
#include "kernels/cast.h"
#include "kernels/conv_fp8.h"
#endif

namespace kd {

namespace {

void check_fp8_tensor(const Context& ctx, const Tensor& x, const char* op) {
  KD_CHECK(x.defined() && x.device() == ctx.device(), op, ": ", x.describe(), " is not on ", device_name(ctx.device()));
  const DType want = ctx.is_cuda() ? DType::bf16 : DType::f32;
  KD_CHECK(x.dtype() == want, op, ": FP8 emulation takes ", dtype_name(want), " on ", device_name(ctx.device()),
           ", got ", x.describe(), ctx.is_cuda() ? "" : " (a double-precision context has no FP8 teacher)");
}

// A GPU whose tensor cores take FP8 (cuDNN's FP8 convolution runs there).
bool fp8_tensor_cores(Context& ctx) {
#if KD_HAVE_CUDA
  return ctx.is_cuda() && cuda_device_has_fp8(ctx.cuda_handles().device);
#else
  (void)ctx;
  return false;
#endif
}

}  // namespace

float amax(Context& ctx, const Tensor& x) {
  check_fp8_tensor(ctx, x, "amax");
  if (!ctx.is_cuda()) return amax_cpu(x.numel(), x.data<float>());
#if KD_HAVE_CUDA
  Tensor out = Tensor::empty({1}, DType::f32, ctx);
  amax_cuda(ctx.cuda_handles(), x.numel(), x.data<bf16>(), out.data<float>());
  return out.to(Device::cpu, &ctx).data<float>()[0];
#else
  ops::detail::no_cuda_path("amax");
#endif
}

Tensor fp8_round_trip(Context& ctx, const Tensor& x, float scale) {
  check_fp8_tensor(ctx, x, "fp8_round_trip");
  KD_CHECK(std::isfinite(scale) && scale > 0.0f, "fp8_round_trip: scale must be positive and finite, got ", scale);
  const int64_t n = x.numel();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), ctx);
  if (!ctx.is_cuda()) {
    std::vector<uint8_t> q(static_cast<size_t>(n));
    fp8_quantize_cpu(n, x.data<float>(), scale, q.data());
    fp8_dequantize_cpu(n, q.data(), scale, y.data<float>());
    return y;
  }
#if KD_HAVE_CUDA
  const CudaHandles& h = ctx.cuda_handles();
  Tensor q = Tensor::empty({n}, DType::u8, ctx);
  Tensor wide = Tensor::empty({n}, DType::f32, ctx);
  fp8_quantize_cuda(h, n, x.data<bf16>(), scale, q.data<uint8_t>());
  fp8_dequantize_cuda(h, n, q.data<uint8_t>(), scale, wide.data<float>());
  cast_f32_to_bf16_cuda(h, n, wide.data<float>(), y.data<bf16>());
  return y;
#else
  ops::detail::no_cuda_path("fp8_round_trip");
#endif
}

namespace {

// E4M3 codes of each row r of w times its own scale (from the row's amax), on the host: weights
// are quantised once per teacher, and one rule serves the emulation and cuDNN's FP8 path.
struct RowCodes {
  int64_t per_row = 0;
  std::vector<uint8_t> codes;
  std::vector<float> scale, amax;
};
RowCodes quantize_rows_host(Context& ctx, const Tensor& w, int64_t rows) {
  check_fp8_tensor(ctx, w, "fp8 weights");
  KD_CHECK(rows >= 1 && w.numel() % rows == 0, "fp8 weights: ", w.describe(), " do not split into ", rows, " rows");
  const int64_t n = w.numel();
  RowCodes r;
  r.per_row = n / rows;
  std::vector<float> v(static_cast<size_t>(n));
  const Tensor host = w.to(Device::cpu, &ctx);
  if (ctx.is_cuda())
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = bf16_to_float(host.data<bf16>()[i]);
  else
    std::copy_n(host.data<float>(), n, v.data());
  r.codes.resize(size_t(n));
  for (int64_t row = 0; row < rows; ++row) {
    const float m = amax_cpu(r.per_row, v.data() + row * r.per_row);
    KD_CHECK(std::isfinite(m), "fp8: the weights hold a NaN or an infinity");
    r.amax.push_back(m);
    r.scale.push_back(e4m3_scale_for_amax(m, 0));
    fp8_quantize_cpu(r.per_row, v.data() + row * r.per_row, r.scale.back(), r.codes.data() + row * r.per_row);
  }
  return r;
}

}  // namespace

Tensor fp8_round_trip_rows(Context& ctx, const Tensor& w, int64_t rows, std::vector<float>* amax_rows) {
  const RowCodes r = quantize_rows_host(ctx, w, rows);
  std::vector<float> v(r.codes.size());
  for (int64_t row = 0; row < rows; ++row)
    fp8_dequantize_cpu(r.per_row, r.codes.data() + row * r.per_row, r.scale[size_t(row)], v.data() + row * r.per_row);
  if (amax_rows) *amax_rows = r.amax;
  Tensor out_host = Tensor::zeros_cpu(w.shape(), w.dtype());
  if (ctx.is_cuda())
    for (size_t i = 0; i < v.size(); ++i) out_host.data<bf16>()[i] = float_to_bf16(v[i]);
  else
    std::copy(v.begin(), v.end(), out_host.data<float>());
  return out_host.to(ctx.device(), &ctx);
}

Tensor fp8_conv_weight(Context& ctx, Fp8ConvState& state, const Tensor& w) {
  if (!state.weight.defined()) state.weight = fp8_round_trip_rows(ctx, w, w.dim(0), &state.weight_amax);
  return state.weight;
}

namespace {

#if KD_HAVE_CUDA
// cuDNN's FP8 convolution: E4M3 codes of the input (quantised here) and of the weights (once, on
// the host, per output channel), the per-channel descale folded into the graph.
Tensor fp8_conv_cuda(Context& ctx, Fp8ConvState& state, const Tensor& x, const Tensor& w, const Conv2dShape& s) {
  const CudaHandles& h = ctx.cuda_handles();
  const float x_scale = state.input.scale();
  if (!state.weight_codes.defined()) {
    const RowCodes r = quantize_rows_host(ctx, w, w.dim(0));
    Tensor codes = Tensor::zeros_cpu(w.shape(), DType::u8), descale = Tensor::zeros_cpu({w.dim(0)}, DType::f32);
    std::copy(r.codes.begin(), r.codes.end(), codes.data<uint8_t>());
    for (size_t o = 0; o < r.scale.size(); ++o) descale.data<float>()[o] = 1.0f / (x_scale * r.scale[o]);
    state.weight_amax = r.amax;
    state.weight_codes = codes.to(Device::cuda, &ctx);
    state.descale = descale.to(Device::cuda, &ctx);
  }
  Tensor qx = Tensor::empty({x.numel()}, DType::u8, ctx);
  fp8_quantize_cuda(h, x.numel(), x.data<bf16>(), x_scale, qx.data<uint8_t>());
  Tensor y = Tensor::empty({s.n, s.out_h(), s.out_w(), s.c_out}, DType::bf16, ctx);
  conv2d_fp8_forward_cuda(h, s, qx.data<uint8_t>(), state.weight_codes.data<uint8_t>(), state.descale.data<float>(),
                          y.data<bf16>());
  return y;
}
#endif

}  // namespace

Tensor fp8_conv_forward(Context& ctx, Fp8ConvState& state, const Tensor& x, const Tensor& w, const Conv2dShape& s,
                        const std::string& layer) {
  if (state.calibrating) {
    if (!state.input.done()) state.input.observe(amax(ctx, x), layer.c_str());
    state.emulate = !fp8_tensor_cores(ctx);
    return ops::conv2d(ctx, x, w, s);
  }
#if KD_HAVE_CUDA
  if (!state.emulate) {
    try {
      return fp8_conv_cuda(ctx, state, x, w, s);
    } catch (const Error& e) {
      state.emulate = true;
      static std::atomic<bool> warned{false};
      if (!warned.exchange(true))
        std::fprintf(stderr,
                     "kd: warning: %s: cuDNN's FP8 convolution failed (%s); FP8 layers that fail run the bf16 "
                     "emulation instead\n",
                     layer.c_str(), e.what());
    }
  }
#endif
  return ops::conv2d(ctx, fp8_round_trip(ctx, x, state.input.scale()), fp8_conv_weight(ctx, state, w), s);
}

std::string fp8_path(Context& ctx) {
  if (fp8_tensor_cores(ctx)) return "cuDNN FP8 convolutions";
  return ctx.is_cuda() ? "emulated in bf16 (this GPU has no FP8 tensor cores)"
                       : "emulated on the CPU (FP8 values, fp32 arithmetic)";
}

std::string Fp8Summary::describe() const {
  return "FP8 (E4M3) in " + std::to_string(fp8_convs) + " of " + std::to_string(fp8_convs + other_convs) +
         " convolutions";
}

namespace {

// Visits every Conv2d of a layer graph.
template <typename F>
void for_each_conv(Layer& layer, F&& f) {
  if (auto* conv = dynamic_cast<Conv2d*>(&layer)) f(*conv);
  layer.children([&](Layer& child) { for_each_conv(child, f); });
}

}  // namespace

Fp8Summary enable_fp8(Layer& model, int64_t calibration_batches) {
  KD_CHECK(model.frozen(), "FP8 is for a frozen model (a teacher): freeze it first");
  KD_CHECK(calibration_batches >= 1, "FP8 calibration needs at least one batch, got ", calibration_batches);
  Fp8Summary s;
  for_each_conv(model, [&](Conv2d& conv) {
    const ConvSpec& c = conv.spec();
    // Channels in multiples of 16: an NHWC row of E4M3 codes is then 16-byte aligned, which
    // cuDNN's FP8 engines require (a layer they refuse would cost a failed plan build and run bf16
    // while counted here as FP8). Every BiT / ResNet width qualifies; the stems do not.
    if (c.c_in >= 16 && c.c_out >= 16 && c.c_in % 16 == 0 && c.c_out % 16 == 0 && c.groups == 1) {
      conv.set_fp8(std::make_shared<Fp8ConvState>(calibration_batches));
      ++s.fp8_convs;
    } else {
      ++s.other_convs;
    }
  });
  return s;
}

void finish_fp8_calibration(Layer& model) {
  for_each_conv(model, [&](Conv2d& conv) {
    Fp8ConvState* state = conv.fp8();
    if (!state) return;
    KD_CHECK(state->input.seen() > 0, "FP8 calibration: ", conv.name(), " saw no input");
    state->calibrating = false;
  });
}

}  // namespace kd
