// bench_kernels: the normalisations — GroupNorm(+ReLU) at ResNetV2 shapes, BatchNorm, and weight
// standardisation of R152x2's largest convolution.
#include <cmath>
#include <memory>

#include "kernels/batchnorm.h"
#include "kernels/groupnorm.h"
#include "kernels/weight_std.h"
#include "tools/bench/harness.h"

namespace kd::bench {
namespace {

std::vector<float> to_float(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

// Activations with a non-zero mean (as after a convolution), so that the saved means are not
// near zero, where a relative error says little.
std::vector<float> activations(int64_t n, uint64_t seed) { return uniform(n, seed, -1.0f, 3.0f); }

// ---- GroupNorm + ReLU, [n, hw, c], 32 groups ----

// one_pass: CudaHandles::groupnorm_one_pass (kernels/groupnorm_one_pass.h), forward or backward;
// threads: CudaHandles::groupnorm_threads (0: the plan's block size).
Case groupnorm_case(const Env& env, int64_t hw, int64_t c, bool backward, bool one_pass = false, int threads = 0) {
  GroupNormShape s;
  s.n = env.batch(), s.hw = hw, s.c = c, s.groups = 32;
  const int64_t e = s.numel(), stats = s.n * s.groups;
  const float eps = 1e-5f;
  const double a = double(env.act_size());
  auto x = std::make_shared<std::vector<float>>(activations(e, 41));
  auto gamma = std::make_shared<std::vector<float>>(uniform(c, 42, 0.5f, 1.5f));
  auto beta = std::make_shared<std::vector<float>>(uniform(c, 43, -0.5f, 0.5f));
  Case cs;
  cs.shape = dims({s.n, hw, c}) + " g32 relu" + (one_pass ? " one pass" : "") +
             (threads && env.cuda ? " " + std::to_string(threads) + " threads" : "");
  cs.copies = env.copies_for(double(e) * a * (backward ? 3 : 2));
  auto bx = std::make_shared<Buf>(act_buf(env, *x, cs.copies));
  auto bgamma = std::make_shared<Buf>(typed_buf(env, *gamma, 1)),
       bbeta = std::make_shared<Buf>(typed_buf(env, *beta, 1));
  if (!backward) {
    cs.bytes = 2 * a * double(e) + double(2 * c * 4 + 2 * stats * 4);
    cs.note = "groupnorm fwd: x read + y written (2 x 2E bytes in bf16), + gamma, beta, mean, rstd";
    auto y = std::make_shared<Buf>(act_out(env, e, cs.copies));
    auto mean = std::make_shared<Buf>(env, 4, stats, cs.copies), rstd = std::make_shared<Buf>(env, 4, stats, cs.copies);
    cs.run = [=, &env](int k) {
      if (!env.cuda)
        groupnorm_forward_cpu<float>(s, eps, bx->at<float>(k), bgamma->at<float>(0), bbeta->at<float>(0), true,
                                     y->at<float>(k), mean->at<float>(k), rstd->at<float>(k));
      KD_BENCH_CUDA(if (env.cuda) {
        CudaHandles h = env.h();
        h.groupnorm_one_pass = one_pass, h.groupnorm_threads = threads;
        groupnorm_forward_cuda(h, s, eps, bx->at<bf16>(k), bgamma->at<float>(0), bbeta->at<float>(0), true,
                               y->at<bf16>(k), mean->at<float>(k), rstd->at<float>(k));
      });
    };
    cs.check = [=, &env, run = cs.run] {
      y->fill_bytes(0xFF), mean->fill_bytes(0xFF), rstd->fill_bytes(0xFF);
      run(0);
      auto ry = zeros<double>(e), rmean = zeros<double>(stats), rrstd = zeros<double>(stats);
      groupnorm_forward_cpu<double>(s, eps, to_double(*x).data(), to_double(*gamma).data(), to_double(*beta).data(),
                                    true, ry.data(), rmean.data(), rrstd.data());
      Check chk;
      chk.rel("y", read_act(env, *y), ry, env.tol_act());
      chk.rel("mean", read<float>(*mean), rmean, 1e-5);
      chk.rel("rstd", read<float>(*rstd), rrstd, 1e-5);
      return chk;
    };
    return cs;
  }
  // Backward: the saved statistics of the forward pass (fp32, as the model keeps them), and dy set
  // to zero where the pre-activation is within 1e-3 of 0: there the recomputed ReLU mask may
  // differ between fp32 and fp64 by rounding, which must not count as an error.
  auto ry = zeros<double>(e), rmean = zeros<double>(stats), rrstd = zeros<double>(stats);
  const std::vector<double> xd = to_double(*x), gd = to_double(*gamma), bd = to_double(*beta);
  groupnorm_forward_cpu<double>(s, eps, xd.data(), gd.data(), bd.data(), false, ry.data(), rmean.data(), rrstd.data());
  auto mean = std::make_shared<std::vector<float>>(to_float(rmean)),
       rstd = std::make_shared<std::vector<float>>(to_float(rrstd));
  auto dy = std::make_shared<std::vector<float>>(uniform(e, 44, -1.0f, 1.0f));
  for (int64_t i = 0; i < e; ++i)
    if (std::fabs(ry[size_t(i)]) < 1e-3) (*dy)[size_t(i)] = 0.0f;
  cs.bytes = 3 * a * double(e) + double(2 * c * 4 + 2 * stats * 4 + 2 * c * 8);
  cs.note = "groupnorm bwd: x, dy read + dx written (3 x 2E bytes in bf16), + gamma, beta, mean, rstd, dgamma/dbeta +=";
  auto bdy = std::make_shared<Buf>(act_buf(env, *dy, cs.copies)),
       dx = std::make_shared<Buf>(act_out(env, e, cs.copies));
  auto bmean = std::make_shared<Buf>(typed_buf(env, *mean, 1)), brstd = std::make_shared<Buf>(typed_buf(env, *rstd, 1));
  auto dgamma = std::make_shared<Buf>(env, 4, c, 1), dbeta = std::make_shared<Buf>(env, 4, c, 1);
  cs.run = [=, &env](int k) {
    if (!env.cuda)
      groupnorm_backward_cpu<float>(s, bx->at<float>(k), bgamma->at<float>(0), bbeta->at<float>(0), bmean->at<float>(0),
                                    brstd->at<float>(0), true, bdy->at<float>(k), dx->at<float>(k),
                                    dgamma->at<float>(0), dbeta->at<float>(0));
    KD_BENCH_CUDA(if (env.cuda) {
      CudaHandles h = env.h();
      h.groupnorm_one_pass = one_pass, h.groupnorm_threads = threads;
      groupnorm_backward_cuda(h, s, bx->at<bf16>(k), bgamma->at<float>(0), bbeta->at<float>(0), bmean->at<float>(0),
                              brstd->at<float>(0), true, bdy->at<bf16>(k), dx->at<bf16>(k), dgamma->at<float>(0),
                              dbeta->at<float>(0));
    });
  };
  cs.check = [=, &env, run = cs.run] {
    dx->fill_bytes(0xFF), dgamma->fill_bytes(0), dbeta->fill_bytes(0);
    run(0);
    auto rdx = zeros<double>(e), rdg = zeros<double>(c), rdb = zeros<double>(c);
    groupnorm_backward_cpu<double>(s, to_double(*x).data(), to_double(*gamma).data(), to_double(*beta).data(),
                                   to_double(*mean).data(), to_double(*rstd).data(), true, to_double(*dy).data(),
                                   rdx.data(), rdg.data(), rdb.data());
    Check chk;
    chk.rel("dx", read_act(env, *dx), rdx, env.tol_act());
    chk.rel("dgamma", read<float>(*dgamma), rdg, 1e-5);
    chk.rel("dbeta", read<float>(*dbeta), rdb, 1e-5);
    return chk;
  };
  return cs;
}

// ---- BatchNorm (training mode) over [n*h*w, c] ----

Case batchnorm_case(const Env& env, int64_t hw, int64_t c, bool backward) {
  BatchNormShape s;
  s.rows = env.batch() * hw, s.c = c;
  const int64_t e = s.rows * c;
  const float eps = 1e-5f, momentum = 0.1f;
  const double a = double(env.act_size());
  auto x = std::make_shared<std::vector<float>>(activations(e, 51));
  auto gamma = std::make_shared<std::vector<float>>(uniform(c, 52, 0.5f, 1.5f));
  auto beta = std::make_shared<std::vector<float>>(uniform(c, 53, -0.5f, 0.5f));
  auto running = std::make_shared<std::vector<float>>(uniform(2 * c, 54, 0.5f, 1.0f));  // mean then var
  Case cs;
  cs.shape = dims({s.rows, c});
  cs.copies = env.copies_for(double(e) * a * (backward ? 3 : 2));
  auto bx = std::make_shared<Buf>(act_buf(env, *x, cs.copies));
  auto bgamma = std::make_shared<Buf>(typed_buf(env, *gamma, 1)),
       bbeta = std::make_shared<Buf>(typed_buf(env, *beta, 1));
  auto mean = std::make_shared<Buf>(env, 4, c, 1), rstd = std::make_shared<Buf>(env, 4, c, 1);
  if (!backward) {
    cs.bytes = 2 * a * double(e) + double(8 * c * 4);
    cs.note = "batchnorm fwd: x read + y written, + per-channel gamma, beta, mean, rstd, running mean/var";
    auto y = std::make_shared<Buf>(act_out(env, e, cs.copies));
    auto brun = std::make_shared<Buf>(typed_buf(env, *running, 1));
    cs.run = [=, &env](int k) {
      float* rm = brun->at<float>(0);
      if (!env.cuda)
        batchnorm_forward_train_cpu<float>(s, eps, momentum, bx->at<float>(k), bgamma->at<float>(0),
                                           bbeta->at<float>(0), y->at<float>(k), mean->at<float>(0), rstd->at<float>(0),
                                           rm, rm + c);
      KD_BENCH_CUDA(if (env.cuda) batchnorm_forward_train_cuda(
          env.h(), s, eps, momentum, bx->at<bf16>(k), bgamma->at<float>(0), bbeta->at<float>(0), y->at<bf16>(k),
          mean->at<float>(0), rstd->at<float>(0), rm, rm + c));
    };
    cs.check = [=, &env, run = cs.run] {
      y->fill_bytes(0xFF), mean->fill_bytes(0xFF), rstd->fill_bytes(0xFF);
      run(0);
      auto ry = zeros<double>(e), rmean = zeros<double>(c), rrstd = zeros<double>(c), rrun = to_double(*running);
      batchnorm_forward_train_cpu<double>(s, eps, momentum, to_double(*x).data(), to_double(*gamma).data(),
                                          to_double(*beta).data(), ry.data(), rmean.data(), rrstd.data(), rrun.data(),
                                          rrun.data() + c);
      Check chk;
      chk.rel("y", read_act(env, *y), ry, env.tol_act());
      chk.rel("mean", read<float>(*mean), rmean, 1e-5);
      chk.rel("rstd", read<float>(*rstd), rrstd, 1e-5);
      chk.rel("running", read<float>(*brun), rrun, 1e-5);
      return chk;
    };
    return cs;
  }
  auto ry = zeros<double>(e), rmean = zeros<double>(c), rrstd = zeros<double>(c);
  batchnorm_forward_train_cpu<double>(s, eps, momentum, to_double(*x).data(), to_double(*gamma).data(),
                                      to_double(*beta).data(), ry.data(), rmean.data(), rrstd.data(), nullptr, nullptr);
  auto saved = std::make_shared<std::vector<float>>(to_float(rmean));
  saved->insert(saved->end(), rrstd.begin(), rrstd.end());  // mean then rstd, fp32 as saved by the forward pass
  mean->upload(saved->data()), rstd->upload(saved->data() + c);
  auto dy = std::make_shared<std::vector<float>>(uniform(e, 55, -1.0f, 1.0f));
  cs.bytes = 3 * a * double(e) + double(7 * c * 4);
  cs.note = "batchnorm bwd: x, dy read + dx written, + per-channel gamma, mean, rstd, dgamma/dbeta +=";
  auto bdy = std::make_shared<Buf>(act_buf(env, *dy, cs.copies)),
       dx = std::make_shared<Buf>(act_out(env, e, cs.copies));
  auto dgamma = std::make_shared<Buf>(env, 4, c, 1), dbeta = std::make_shared<Buf>(env, 4, c, 1);
  cs.run = [=, &env](int k) {
    if (!env.cuda)
      batchnorm_backward_cpu<float>(s, bx->at<float>(k), bgamma->at<float>(0), mean->at<float>(0), rstd->at<float>(0),
                                    bdy->at<float>(k), dx->at<float>(k), dgamma->at<float>(0), dbeta->at<float>(0));
    KD_BENCH_CUDA(if (env.cuda) batchnorm_backward_cuda(env.h(), s, bx->at<bf16>(k), bgamma->at<float>(0),
                                                        mean->at<float>(0), rstd->at<float>(0), bdy->at<bf16>(k),
                                                        dx->at<bf16>(k), dgamma->at<float>(0), dbeta->at<float>(0)));
  };
  cs.check = [=, &env, run = cs.run] {
    dx->fill_bytes(0xFF), dgamma->fill_bytes(0), dbeta->fill_bytes(0);
    run(0);
    const std::vector<double> sd = to_double(*saved);
    auto rdx = zeros<double>(e), rdg = zeros<double>(c), rdb = zeros<double>(c);
    batchnorm_backward_cpu<double>(s, to_double(*x).data(), to_double(*gamma).data(), sd.data(), sd.data() + c,
                                   to_double(*dy).data(), rdx.data(), rdg.data(), rdb.data());
    Check chk;
    chk.rel("dx", read_act(env, *dx), rdx, env.tol_act());
    chk.rel("dgamma", read<float>(*dgamma), rdg, 1e-5);
    chk.rel("dbeta", read<float>(*dbeta), rdb, 1e-5);
    return chk;
  };
  return cs;
}

// ---- weight standardisation: R152x2's largest conv, 3x3 1024 -> 1024 (stage 4) ----

Case weight_std_case(const Env& env, bool backward) {
  const int64_t c_out = env.cuda && !env.quick ? 1024 : env.quick ? 64 : 256, k = 9 * 1024, n = c_out * k;
  const float eps = 1e-8f;
  auto w = std::make_shared<std::vector<float>>(uniform(n, 61, -0.05f, 0.15f, false));
  Case cs;
  cs.shape = dims({c_out, k}) + (c_out == 1024 ? " (3x3 1024->1024)" : "");
  auto bw = std::make_shared<Buf>();
  auto mean = std::make_shared<Buf>(env, 4, c_out, 1), rstd = std::make_shared<Buf>(env, 4, c_out, 1);
  if (!backward) {
    cs.bytes = double(n) * (4 + double(env.act_size())) + double(c_out * 8);
    cs.note = "weight_std fwd: fp32 w read + w_hat written (bf16 on a GPU), + mean, rstd per row";
    cs.copies = env.copies_for(double(n) * (4 + double(env.act_size())));
    *bw = typed_buf(env, *w, cs.copies);
    auto what = std::make_shared<Buf>(act_out(env, n, cs.copies));
    cs.run = [=, &env](int j) {
      if (!env.cuda)
        weight_std_forward_cpu<float>(c_out, k, eps, bw->at<float>(j), what->at<float>(j), mean->at<float>(0),
                                      rstd->at<float>(0));
      KD_BENCH_CUDA(if (env.cuda) weight_std_forward_cuda(env.h(), c_out, k, eps, bw->at<float>(j), what->at<bf16>(j),
                                                          mean->at<float>(0), rstd->at<float>(0)));
    };
    cs.check = [=, &env, run = cs.run] {
      what->fill_bytes(0xFF), mean->fill_bytes(0xFF), rstd->fill_bytes(0xFF);
      run(0);
      auto rw = zeros<double>(n), rmean = zeros<double>(c_out), rrstd = zeros<double>(c_out);
      weight_std_forward_cpu<double>(c_out, k, eps, to_double(*w).data(), rw.data(), rmean.data(), rrstd.data());
      Check chk;
      chk.rel("w_hat", read_act(env, *what), rw, env.tol_act());
      chk.rel("mean", read<float>(*mean), rmean, 1e-5);
      chk.rel("rstd", read<float>(*rstd), rrstd, 1e-5);
      return chk;
    };
    return cs;
  }
  auto rw = zeros<double>(n), rmean = zeros<double>(c_out), rrstd = zeros<double>(c_out);
  weight_std_forward_cpu<double>(c_out, k, eps, to_double(*w).data(), rw.data(), rmean.data(), rrstd.data());
  auto saved = std::make_shared<std::vector<float>>(to_float(rmean));
  saved->insert(saved->end(), rrstd.begin(), rrstd.end());
  mean->upload(saved->data()), rstd->upload(saved->data() + c_out);
  auto dwhat = std::make_shared<std::vector<float>>(uniform(n, 62, -1.0f, 1.0f, false));
  cs.bytes = double(n) * 16 + double(c_out * 8);
  cs.note = "weight_std bwd: w, dw_hat read, dw read + written (fp32, +=), + mean, rstd per row";
  cs.copies = env.copies_for(double(n) * 12);
  *bw = typed_buf(env, *w, cs.copies);
  auto bdwhat = std::make_shared<Buf>(typed_buf(env, *dwhat, cs.copies));
  auto dw = std::make_shared<Buf>(env, 4, n, cs.copies);
  cs.run = [=, &env](int j) {
    if (!env.cuda)
      weight_std_backward_cpu<float>(c_out, k, bw->at<float>(j), mean->at<float>(0), rstd->at<float>(0),
                                     bdwhat->at<float>(j), dw->at<float>(j));
    KD_BENCH_CUDA(if (env.cuda) weight_std_backward_cuda(env.h(), c_out, k, bw->at<float>(j), mean->at<float>(0),
                                                         rstd->at<float>(0), bdwhat->at<float>(j), dw->at<float>(j)));
  };
  cs.check = [=, run = cs.run] {
    dw->fill_bytes(0);
    run(0);
    const std::vector<double> sd = to_double(*saved);
    auto rdw = zeros<double>(n);
    weight_std_backward_cpu<double>(c_out, k, to_double(*w).data(), sd.data(), sd.data() + c_out,
                                    to_double(*dwhat).data(), rdw.data());
    Check chk;
    chk.rel("dw", read<float>(*dw), rdw, 1e-5);
    return chk;
  };
  return cs;
}

}  // namespace

void add_norm_cases(Registry& r) {
  struct GnShape {
    const char* tag;
    int64_t hw, c;
  };
  // The two-pass path, then the one-pass kernels (GPU; on the CPU the same reference runs) on the
  // same shapes and those that carry most of the step's GroupNorm bytes: R152x2's stage 3 (36
  // blocks) and stage 1 (4 and 16 channels a group), R50x1's stage 1 at 160 px (2 and 8) for the
  // backward.
  for (GnShape g : {GnShape{"56x56x256", 56 * 56, 256}, GnShape{"7x7x4096", 7 * 7, 4096}})
    for (bool bwd : {false, true})
      r.push_back({std::string("groupnorm.") + (bwd ? "bwd." : "fwd.") + g.tag,
                   [=](const Env& env) { return groupnorm_case(env, g.hw, g.c, bwd); }});
  r.push_back({"groupnorm.fwd.14x14x2048", [](const Env& env) { return groupnorm_case(env, 14 * 14, 2048, false); }});
  r.push_back({"groupnorm.bwd.40x40x64", [](const Env& env) { return groupnorm_case(env, 40 * 40, 64, true); }});
  for (GnShape g : {GnShape{"56x56x256", 56 * 56, 256}, GnShape{"7x7x4096", 7 * 7, 4096},
                    GnShape{"14x14x2048", 14 * 14, 2048}, GnShape{"56x56x512", 56 * 56, 512},
                    GnShape{"56x56x128", 56 * 56, 128}})
    r.push_back({std::string("groupnorm.fwd_one_pass.") + g.tag,
                 [=](const Env& env) { return groupnorm_case(env, g.hw, g.c, false, true); }});
  for (GnShape g : {GnShape{"56x56x256", 56 * 56, 256}, GnShape{"7x7x4096", 7 * 7, 4096},
                    GnShape{"40x40x64", 40 * 40, 64}, GnShape{"40x40x256", 40 * 40, 256}})
    r.push_back({std::string("groupnorm.bwd_one_pass.") + g.tag,
                 [=](const Env& env) { return groupnorm_case(env, g.hw, g.c, true, true); }});
  // The same kernels in blocks of 256 threads where the plan takes 512 (CudaHandles::
  // groupnorm_threads): whether two forward blocks an SM, each overlapping the other's apply, beat
  // one; the backward's two copies leave one block an SM either way (the control).
  for (GnShape g : {GnShape{"56x56x256", 56 * 56, 256}, GnShape{"56x56x512", 56 * 56, 512}})
    r.push_back({std::string("groupnorm.fwd_one_pass.t256.") + g.tag,
                 [=](const Env& env) { return groupnorm_case(env, g.hw, g.c, false, true, 256); }});
  r.push_back({"groupnorm.bwd_one_pass.t256.56x56x256",
               [](const Env& env) { return groupnorm_case(env, 56 * 56, 256, true, true, 256); }});
  for (bool bwd : {false, true})
    r.push_back({std::string("batchnorm.") + (bwd ? "bwd" : "fwd") + ".56x56x256",
                 [=](const Env& env) { return batchnorm_case(env, 56 * 56, 256, bwd); }});
  for (bool bwd : {false, true})
    r.push_back({std::string("weight_std.") + (bwd ? "bwd" : "fwd") + ".r152x2_s4_3x3",
                 [=](const Env& env) { return weight_std_case(env, bwd); }});
}

}  // namespace kd::bench
