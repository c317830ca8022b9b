// Tensor-level ops: check shapes and dtypes (naming the op and both shapes), allocate outputs
// from the context's pool, and dispatch to the CPU reference or the CUDA kernel in kernels/.
// Activations are f32 on the CPU and bf16 on a GPU; master weights, gradients, statistics and
// logits are f32 on both. A CPU context may run in f64 instead (exact references for tests). Parameter gradients accumulate (+=); activation gradients are new.
#pragma once
#include <functional>
#include <utility>
#include <vector>

#include "engine/context.h"
#include "engine/tensor.h"

#include "kernels/augment.h"
#include "kernels/batchnorm.h"
#include "kernels/channel.h"
#include "kernels/conv.h"
#include "kernels/distill_loss.h"
#include "kernels/elementwise.h"
#include "kernels/groupnorm.h"
#include "kernels/pool.h"

namespace kd {
class Communicator;
}

namespace kd::ops {

// The activation dtype of a context: f32 on the CPU, bf16 on a GPU.
DType activation_dtype(const Context& ctx);

// Host f32/f64 -> the context's device and activation dtype (no copy when they already agree).
Tensor to_activation(Context& ctx, const Tensor& host);
// Any float tensor on any device -> host f32 (bf16 widened, f64 narrowed).
Tensor to_host_f32(Context& ctx, const Tensor& t);

// --- convolution ------------------------------------------------------------------------
// s carries the geometry (c_out, kernel, stride, padding, groups); its n/h/w/c_in are taken from x.
Conv2dShape conv_shape_for(const Tensor& x, Conv2dShape s);
// w: compute weights OHWI [c_out, kh, kw, c_in/groups] (f32 on cpu, bf16 on cuda)
Tensor conv2d(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dShape& s);
Tensor conv2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dShape& s);
// dw (f32, OHWI) += weight gradient
void conv2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dShape& s, Tensor& dw);
// The input channels the three ops above run on: 8 where ctx.conv_pad_channels() and an ungrouped
// convolution has fewer (inputs and weights zero-padded, gradients sliced back), else c_in.
int64_t conv_compute_channels(const Context& ctx, const Conv2dShape& s);
// The last dimension of t (activation or parameter dtype, any rank) zero-padded to c_pad, and
// sliced back to its first c channels.
Tensor pad_channels(Context& ctx, const Tensor& t, int64_t c_pad);
Tensor slice_channels(Context& ctx, const Tensor& t, int64_t c);

// --- weight standardisation ---------------------------------------------------------------
// w f32 [c_out, ...] -> w_hat in the compute dtype, mean/rstd f32 [c_out]
void weight_std(Context& ctx, const Tensor& w, float eps, Tensor& w_hat, Tensor& mean, Tensor& rstd);
// dw (f32) += gradient through the standardisation, from dw_hat (f32)
void weight_std_backward(Context& ctx, const Tensor& w, const Tensor& mean, const Tensor& rstd, const Tensor& dw_hat,
                         Tensor& dw);

// --- normalisation ------------------------------------------------------------------------
// x [n, h, w, c]; gamma/beta f32 [c]; mean/rstd (outputs, f32 [n, groups]) may be null in inference
Tensor groupnorm(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t groups, float eps,
                 bool relu, Tensor* mean, Tensor* rstd);
Tensor groupnorm_backward(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                          const Tensor& rstd, int64_t groups, bool relu, const Tensor& dy, Tensor& dgamma,
                          Tensor& dbeta);
// train: batch statistics (saved to mean/rstd, running stats updated); eval: running stats
Tensor batchnorm_train(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                       float momentum, Tensor& running_mean, Tensor& running_var, Tensor& mean, Tensor& rstd);
Tensor batchnorm_eval(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                      const Tensor& running_mean, const Tensor& running_var);
Tensor batchnorm_backward(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
                          const Tensor& dy, Tensor& dgamma, Tensor& dbeta);
// SyncBatchNorm (engine/ops_sync_bn.cpp): the training statistics of every rank of `comm`'s
// batch. The forward saves mean, rstd and total_count (f64 [1]: the rows of every rank) for the
// backward; every rank must call both, in the same order.
Tensor batchnorm_train_synced(Context& ctx, Communicator& comm, const Tensor& x, const Tensor& gamma,
                              const Tensor& beta, float eps, float momentum, Tensor& running_mean,
                              Tensor& running_var, Tensor& mean, Tensor& rstd, Tensor& total_count);
Tensor batchnorm_backward_synced(Context& ctx, Communicator& comm, const Tensor& x, const Tensor& gamma,
                                 const Tensor& mean, const Tensor& rstd, const Tensor& total_count, const Tensor& dy,
                                 Tensor& dgamma, Tensor& dbeta);

// --- pooling, pointwise, dense ----------------------------------------------------------------
Tensor maxpool(Context& ctx, const Tensor& x, MaxPoolShape s, Tensor* argmax);
Tensor maxpool_backward(Context& ctx, const Tensor& argmax, const Tensor& dy, const MaxPoolShape& s);
Tensor global_avgpool(Context& ctx, const Tensor& x);  // [n, h, w, c] -> [n, c]
Tensor global_avgpool_backward(Context& ctx, const Tensor& dy, const Shape& x_shape);
Tensor activation(Context& ctx, Activation a, const Tensor& x);
Tensor activation_backward(Context& ctx, Activation a, const Tensor& x, const Tensor& dy);
Tensor add(Context& ctx, const Tensor& a, const Tensor& b);
// x [rows, in] (activation dtype), w compute [out, in], bias f32 [out] or undefined -> f32 [rows, out]
Tensor linear(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias);
// dy f32 [rows, out]; dw (f32) +=, dbias (f32) += when defined; returns dx in the activation dtype
// (undefined when need_dx is false)
Tensor linear_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& dw, Tensor& dbias,
                       bool need_dx);

// --- per-channel: convolution bias, squeeze-excite scale (engine/ops_channel.cpp) -------------
// y [..., c] (activation dtype) += bias (param dtype [c]), in place
void bias_add(Context& ctx, Tensor& y, const Tensor& bias);
// dbias (param dtype [c]) += the sum of dy [..., c] over every position
void bias_backward(Context& ctx, const Tensor& dy, Tensor& dbias);
// x [n, h, w, c] times the gate s [n, 1, 1, c] (both activation dtype): y[n, h, w, c] = x * s[n, c]
Tensor channel_scale(Context& ctx, const Tensor& x, const Tensor& s);
// Returns dx = dy * s; ds (new, shaped as s) = the sum over h, w of dy * x.
Tensor channel_scale_backward(Context& ctx, const Tensor& x, const Tensor& s, const Tensor& dy, Tensor& ds);

// --- data and losses ---------------------------------------------------------------------------
// Renders the recipes from host uint8 HWC pixels into activations [n, h1, w1, 3] and, when h2 > 0,
// a second view [n, h2, w2, 3] of the same recipes (on a GPU in the same launch).
std::pair<Tensor, Tensor> augment(Context& ctx, const uint8_t* pixels, size_t bytes,
                                  const std::vector<SourceImage>& sources, const std::vector<ViewRecipe>& recipes,
                                  const Normalization& norm, int64_t h1, int64_t w1, int64_t h2 = 0, int64_t w2 = 0);
// The same recipes at any number of square resolutions (a student and every teacher of an
// ensemble): one upload of the pixels, then the views two at a time.
std::vector<Tensor> augment_views(Context& ctx, const uint8_t* pixels, size_t bytes,
                                  const std::vector<SourceImage>& sources, const std::vector<ViewRecipe>& recipes,
                                  const Normalization& norm, const std::vector<int64_t>& resolutions);
// The same with the pixel buffer written in place by `write_pixels(dst)` (exactly `bytes` of it):
// on a GPU dst is the pinned staging slot the upload reads, so a batch's images are gathered into
// it once (no intermediate buffer); on the CPU a plain buffer the reference renders from.
using PixelWriter = std::function<void(uint8_t* dst)>;
std::vector<Tensor> augment_views(Context& ctx, const PixelWriter& write_pixels, size_t bytes,
                                  const std::vector<SourceImage>& sources, const std::vector<ViewRecipe>& recipes,
                                  const Normalization& norm, const std::vector<int64_t>& resolutions);
// The same from pixels already on the GPU (a 1-d u8 tensor, e.g. decoded there by nvJPEG): only
// the recipes and sources are uploaded.
std::vector<Tensor> augment_views(Context& ctx, const Tensor& device_pixels, const std::vector<SourceImage>& sources,
                                  const std::vector<ViewRecipe>& recipes, const Normalization& norm,
                                  const std::vector<int64_t>& resolutions);

// The losses return per-row values on the device and, unless read_back is false (the step that
// keeps its statistics on the device), their copies on the host (a wait for the device).
struct LossResult {
  Tensor loss;                         // [rows] on the device, param dtype
  Tensor rank;                         // [rows] i32 on the device: the student's rank of the teacher's top-1
  Tensor dlogits;                      // on the device, param dtype; undefined without need_grad
  std::vector<float> loss_rows;        // host (read_back)
  std::vector<int32_t> teacher_top1;   // distillation only (read_back)
  std::vector<int32_t> student_rank;   // distillation only (read_back)
};
// teacher_logits [teachers, rows, classes], student_logits [rows, classes]
LossResult distill_loss(Context& ctx, const Tensor& teacher_logits, const Tensor& student_logits,
                        const DistillLossOptions& options, bool need_grad, bool read_back = true);
// labels on the host, checked against the class count
LossResult cross_entropy(Context& ctx, const Tensor& logits, const std::vector<int32_t>& labels,
                         float label_smoothing, float grad_scale, bool need_grad, bool read_back = true);
// The same with the labels already on the context's device (i32 [rows]), for a step that only
// reads device memory; their values are the caller's to have checked.
LossResult cross_entropy(Context& ctx, const Tensor& logits, const Tensor& labels, float label_smoothing,
                         float grad_scale, bool need_grad, bool read_back = true);
// stats[kStatLossSum] += the rows' losses, stats[kStatAgree] += the rows where the student's top-1
// is the teacher's (kernels/step_stats.h; `stats` in the context's device memory).
void add_to_step_stats(Context& ctx, const LossResult& loss, double* stats);
// *flag (the context's device memory) = 1 when t (param dtype) holds a NaN or an infinity.
void flag_nonfinite(Context& ctx, const Tensor& t, double* flag);

}  // namespace kd::ops
