// bench_kernels: convolutions (cuDNN on a GPU, im2col + sgemm on the CPU) at the main shapes of
// the default distillation step: the student resnetv2_50x1_bit at 160 px (forward and both
// backward passes) and the teacher resnetv2_152x2_bit at 224 px (forward only), batch 128.
//
// Checked on the first `kCheckImages` images of the batch, against the fp64 CPU convolution of
// those images alone: forward and backward-data outputs of image i depend on image i only (the
// rest of the output is checked to be written); for the weight gradient, copy 0 of dy is zero past
// those images, so the batch's gradient is theirs.
#include <algorithm>
#include <memory>

#include "kernels/conv.h"
#include "kernels/conv_wgrad_im2col.h"
#include "tools/bench/harness.h"

namespace kd::bench {
namespace {

constexpr int64_t kCheckImages = 2;
enum Dir { kFwd = 1, kBwdData = 2, kBwdFilter = 4, kBwdFilterIm2col = 8 };

struct ConvSpec {
  const char* tag;
  int64_t res, c_in, c_out, k, stride;
  int dirs;
  int64_t useful_c_in = 0;  // a stem on zero-padded channels: the work counted is on these
};

constexpr ConvSpec kSpecs[] = {
    {"r50.stem.7x7s2", 160, 3, 64, 7, 2, kFwd | kBwdFilter | kBwdFilterIm2col},  // the first layer needs no dx
    {"r50.s1.3x3", 40, 64, 64, 3, 1, kFwd | kBwdData | kBwdFilter | kBwdFilterIm2col},
    {"r50.s3.1x1_1024_256", 10, 1024, 256, 1, 1, kFwd | kBwdData | kBwdFilter},
    {"r50.s3.3x3", 10, 256, 256, 3, 1, kFwd | kBwdData | kBwdFilter | kBwdFilterIm2col},
    {"r50.s4.3x3", 5, 512, 512, 3, 1, kFwd | kBwdData | kBwdFilter},
    {"r152x2.stem.7x7s2", 224, 3, 128, 7, 2, kFwd},
    // The stems on 3 channels zero-padded to 8 (run.conv_pad_channels): the same useful work.
    {"r50.stem.7x7s2.pad8", 160, 8, 64, 7, 2, kFwd | kBwdFilter, 3},
    {"r152x2.stem.7x7s2.pad8", 224, 8, 128, 7, 2, kFwd, 3},
    {"r152x2.s1.3x3", 56, 128, 128, 3, 1, kFwd},
    {"r152x2.s3.1x1_2048_512", 14, 2048, 512, 1, 1, kFwd},
    {"r152x2.s3.3x3", 14, 512, 512, 3, 1, kFwd},
    {"r152x2.s3.1x1_512_2048", 14, 512, 2048, 1, 1, kFwd},
    {"r152x2.s4.3x3", 7, 1024, 1024, 3, 1, kFwd},
};

Case conv_case(const Env& env, const ConvSpec& spec, Dir dir) {
  Conv2dShape s;
  s.n = env.batch(), s.h = s.w = spec.res, s.c_in = spec.c_in, s.c_out = spec.c_out;
  s.kh = s.kw = spec.k, s.stride_h = s.stride_w = spec.stride, s.pad_h = s.pad_w = spec.k / 2;
  validate(s);
  Conv2dShape sub = s;  // the checked images
  sub.n = std::min(s.n, kCheckImages);
  const int64_t nx = s.x_numel(), ny = s.y_numel(), nw = s.w_numel();
  const size_t sub_x = size_t(sub.x_numel()), sub_y = size_t(sub.y_numel());
  const double a = double(env.act_size());
  auto w = std::make_shared<std::vector<float>>(uniform(nw, 111, -0.1f, 0.1f));
  Case c;
  c.shape = s.describe();
  c.flops = 2.0 * double(s.macs());
  if (spec.useful_c_in > 0) c.flops = c.flops * double(spec.useful_c_in) / double(spec.c_in);
  c.note = "conv: 2 x the forward's multiply-adds, for each direction (padded stems: of the 3 real channels)";
  if (dir == kFwd || dir == kBwdData) {
    const bool fwd = dir == kFwd;
    const int64_t n_in = fwd ? nx : ny, n_out = fwd ? ny : nx;
    c.copies = env.copies_for(a * double(n_in + n_out));
    auto in = std::make_shared<std::vector<float>>(uniform(n_in, fwd ? 112 : 113, -1.0f, 1.0f));
    auto bin = std::make_shared<Buf>(act_buf(env, *in, c.copies)), bw = std::make_shared<Buf>(act_buf(env, *w, 1));
    auto out = std::make_shared<Buf>(act_out(env, n_out, c.copies));
    c.run = [=, &env](int k) {
      if (!env.cuda && fwd) conv2d_forward_cpu<float>(s, bin->at<float>(k), bw->at<float>(0), out->at<float>(k));
      if (!env.cuda && !fwd) conv2d_backward_data_cpu<float>(s, bin->at<float>(k), bw->at<float>(0), out->at<float>(k));
      KD_BENCH_CUDA(if (env.cuda && fwd)
                        conv2d_forward_cuda(env.h(), s, bin->at<bf16>(k), bw->at<bf16>(0), out->at<bf16>(k));
                    if (env.cuda && !fwd)
                        conv2d_backward_data_cuda(env.h(), s, bin->at<bf16>(k), bw->at<bf16>(0), out->at<bf16>(k)));
    };
    c.check = [=, &env, run = c.run] {
      out->fill_bytes(0xFF);
      run(0);
      const std::vector<double> in_d(in->begin(), in->begin() + std::ptrdiff_t(fwd ? sub_x : sub_y));
      std::vector<double> ref(fwd ? sub_y : sub_x);
      if (fwd) conv2d_forward_cpu<double>(sub, in_d.data(), to_double(*w).data(), ref.data());
      if (!fwd) conv2d_backward_data_cpu<double>(sub, in_d.data(), to_double(*w).data(), ref.data());
      const std::vector<float> got = read_act(env, *out);
      Check chk;
      chk.rel(fwd ? "y" : "dx", got, ref, env.tol_act(), ref.size());
      chk.nan_free(fwd ? "y" : "dx", got, ref.size());
      return chk;
    };
    return c;
  }
  // Weight gradient: dw += conv_wgrad(x, dy), fp32.
  c.copies = env.copies_for(a * double(nx + ny));
  auto x = std::make_shared<std::vector<float>>(uniform(nx, 114, -1.0f, 1.0f));
  std::vector<float> dy_full = uniform(ny, 115, -1.0f, 1.0f);
  auto bx = std::make_shared<Buf>(act_buf(env, *x, c.copies)),
       bdy = std::make_shared<Buf>(act_buf(env, dy_full, c.copies));
  std::fill(dy_full.begin() + std::ptrdiff_t(sub_y), dy_full.end(), 0.0f);
  act_upload(env, *bdy, dy_full, 0);
  auto dy = std::make_shared<std::vector<float>>(dy_full.begin(), dy_full.begin() + std::ptrdiff_t(sub_y));
  auto dw = std::make_shared<Buf>(env, 4, nw, 1);
  const bool im2col = dir == kBwdFilterIm2col;
  if (im2col) c.note += "; bwd_filter_im2col: run.conv_wgrad_im2col's im2col + GEMM";
  c.run = [=, &env](int k) {
    if (!env.cuda && im2col)
      conv2d_backward_filter_im2col_cpu<float>(s, bx->at<float>(k), bdy->at<float>(k), dw->at<float>(0),
                                               int64_t(8) << 20);
    if (!env.cuda && !im2col) conv2d_backward_filter_cpu<float>(s, bx->at<float>(k), bdy->at<float>(k), dw->at<float>(0));
    KD_BENCH_CUDA(if (env.cuda && im2col) conv2d_backward_filter_im2col_cuda(env.h(), s, bx->at<bf16>(k),
                                                                             bdy->at<bf16>(k), dw->at<float>(0));
                  if (env.cuda && !im2col)
                      conv2d_backward_filter_cuda(env.h(), s, bx->at<bf16>(k), bdy->at<bf16>(k), dw->at<float>(0)));
  };
  c.check = [=, &env, run = c.run] {
    dw->fill_bytes(0);
    run(0);
    const std::vector<double> xd(x->begin(), x->begin() + std::ptrdiff_t(sub_x));
    auto ref = zeros<double>(nw);
    conv2d_backward_filter_cpu<double>(sub, xd.data(), to_double(*dy).data(), ref.data());
    Check chk;
    chk.rel("dw", read<float>(*dw), ref, env.tol_act());
    return chk;
  };
  return c;
}

}  // namespace

void add_conv_cases(Registry& r) {
  for (const ConvSpec& spec : kSpecs)
    for (Dir dir : {kFwd, kBwdData, kBwdFilter, kBwdFilterIm2col}) {
      if (!(spec.dirs & dir)) continue;
      const char* what = dir == kFwd         ? "fwd"
                         : dir == kBwdData   ? "bwd_data"
                         : dir == kBwdFilter ? "bwd_filter"
                                             : "bwd_filter_im2col";
      r.push_back({std::string("conv.") + what + "." + spec.tag,
                   [spec, dir](const Env& env) { return conv_case(env, spec, dir); }});
    }
}

}  // namespace kd::bench
