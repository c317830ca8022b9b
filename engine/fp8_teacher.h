// An FP8 teacher (teacher.precision = "fp8"): the inputs and weights of its convolutions rounded
// to E4M3 (kernels/fp8.h), one scale per input tensor and one per output channel of the weights.
// The input scales are calibrated on the first batches of training images (their largest
// magnitude, amax), the weight scales on the weights. Only convolutions that tensor cores run in
// FP8 take it: both channel counts >= 16, one group. The stem (3 input channels), depthwise
// convolutions and the linear head keep the context's precision.
//
// On a GPU with FP8 tensor cores (Hopper) the convolutions run in cuDNN's FP8 (kernels/conv_fp8.h:
// never run on a GPU yet). Elsewhere FP8 is emulated: the rounded values are computed with in the
// context's arithmetic (fp32 on the CPU, where every FP8 product is exact and only the summation
// order differs from a tensor core; bf16 operands on other GPUs, where x / scale is rounded once
// more to bf16). `kd eval --precision fp8` measures what FP8 does to a teacher's function.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/layer.h"
#include "kernels/conv.h"
#include "kernels/fp8.h"

namespace kd {

// One convolution's FP8 state.
struct Fp8ConvState {
  explicit Fp8ConvState(int64_t calibration_batches) : input(calibration_batches) {}
  AmaxCalibrator input;            // the activation scale, from the calibration batches' inputs
  bool calibrating = true;         // inputs observed, not rounded; false once calibration ends
  std::vector<float> weight_amax;  // per output channel: largest |weight| (after standardisation)
  Tensor weight;                   // the emulation's rounded weights, computed once (a frozen teacher)
  Tensor weight_codes, descale;    // cuDNN's FP8 path: E4M3 weights, 1 / (x_scale w_scale[o]) per channel
  // The emulation runs: on the CPU and on GPUs without FP8 tensor cores (decided while
  // calibrating), and where cuDNN had no FP8 engine for this layer.
  bool emulate = true;
};

// Largest |x| over a tensor (host value; waits for the device). NaN if any element is NaN.
float amax(Context& ctx, const Tensor& x);
// A new tensor of x's shape and dtype: e4m3(x * scale) / scale elementwise (saturating at 448
// / scale). f32 on the CPU, bf16 on the GPU.
Tensor fp8_round_trip(Context& ctx, const Tensor& x, float scale);
// The same with one scale per row of w (w.numel() / rows contiguous values: an output channel of
// OHWI weights), each from its row's amax (written to amax_rows when given). Per-channel weight
// scales: on the demo's teacher they cut the FP8 teacher's KL to the fp32 one from 0.0010 to
// 0.0007 (docs/experiments.md); a convolution applies them as a per-channel factor on its output.
Tensor fp8_round_trip_rows(Context& ctx, const Tensor& w, int64_t rows, std::vector<float>* amax_rows = nullptr);

// Conv2d::forward with FP8 on: while calibrating, observes x's amax and runs the plain
// convolution; then, on a GPU with FP8 tensor cores, cuDNN's FP8 convolution of E4M3 codes
// (kernels/conv_fp8.h), and elsewhere (or where cuDNN has no engine: a warning, once) the
// emulation conv(round(x), round(w)).
Tensor fp8_conv_forward(Context& ctx, Fp8ConvState& state, const Tensor& x, const Tensor& w, const Conv2dShape& s,
                        const std::string& layer);
// The emulation's rounded weights (per output channel), computed once into state.weight.
Tensor fp8_conv_weight(Context& ctx, Fp8ConvState& state, const Tensor& w);

struct Fp8Summary {
  int64_t fp8_convs = 0, other_convs = 0;
  int64_t calibration_images = 0;  // set by prepare_fp8_teachers (train/fp8_calibration.h)
  std::string describe() const;    // "FP8 (E4M3) in 51 of 53 convolutions"
};
// How a context runs FP8 convolutions: "cuDNN FP8 convolutions", or the emulation (on the CPU, or
// on a GPU without FP8 tensor cores).
std::string fp8_path(Context& ctx);
// Turns FP8 on in every eligible convolution of a frozen model; they calibrate until
// finish_fp8_calibration. Throws for a model that is not frozen.
Fp8Summary enable_fp8(Layer& model, int64_t calibration_batches);
// Ends calibration: the convolutions round their inputs from now on. Throws naming a convolution
// that saw no calibration batch.
void finish_fp8_calibration(Layer& model);

}  // namespace kd
