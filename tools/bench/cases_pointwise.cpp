// bench_kernels: pointwise and streaming kernels — ReLU forward/backward, add, max-pool, the Adam
// update and the fp32 <-> bf16 casts.
#include <memory>

#include "kernels/cast.h"
#include "kernels/elementwise.h"
#include "kernels/optim.h"
#include "kernels/pool.h"
#include "tools/bench/harness.h"

namespace kd::bench {
namespace {

// ---- ReLU forward / backward and add over [n, 56, 56, 256] ----

enum class Pointwise { relu_fwd, relu_bwd, add };

Case pointwise_case(const Env& env, Pointwise op) {
  const int64_t n = env.batch() * 56 * 56 * 256;
  const int inputs = op == Pointwise::relu_fwd ? 1 : 2;
  auto x = std::make_shared<std::vector<float>>(uniform(n, 71, -1.0f, 1.0f));
  auto x2 = std::make_shared<std::vector<float>>(inputs == 2 ? uniform(n, 72, -1.0f, 1.0f) : std::vector<float>());
  Case c;
  c.shape = dims({env.batch(), 56, 56, 256});
  c.bytes = double(n) * double(env.act_size()) * (inputs + 1);
  c.note = "relu fwd: x read + y written; relu bwd: x, dy read + dx written; add: a, b read + y written";
  c.copies = env.copies_for(c.bytes);
  auto bx = std::make_shared<Buf>(act_buf(env, *x, c.copies));
  auto bx2 = std::make_shared<Buf>(inputs == 2 ? act_buf(env, *x2, c.copies) : Buf());
  auto y = std::make_shared<Buf>(act_out(env, n, c.copies));
  c.run = [=, &env](int k) {
    if (!env.cuda) {
      if (op == Pointwise::relu_fwd)
        activation_forward_cpu<float>(Activation::relu, n, bx->at<float>(k), y->at<float>(k));
      if (op == Pointwise::relu_bwd)
        activation_backward_cpu<float>(Activation::relu, n, bx->at<float>(k), bx2->at<float>(k), y->at<float>(k));
      if (op == Pointwise::add) add_cpu<float>(n, bx->at<float>(k), bx2->at<float>(k), y->at<float>(k));
    }
    KD_BENCH_CUDA(if (env.cuda) {
      if (op == Pointwise::relu_fwd)
        activation_forward_cuda(env.h(), Activation::relu, n, bx->at<bf16>(k), y->at<bf16>(k));
      if (op == Pointwise::relu_bwd)
        activation_backward_cuda(env.h(), Activation::relu, n, bx->at<bf16>(k), bx2->at<bf16>(k), y->at<bf16>(k));
      if (op == Pointwise::add) add_cuda(env.h(), n, bx->at<bf16>(k), bx2->at<bf16>(k), y->at<bf16>(k));
    });
  };
  c.check = [=, &env, run = c.run] {
    y->fill_bytes(0xFF);
    run(0);
    const std::vector<double> xd = to_double(*x), x2d = to_double(*x2);
    auto ref = zeros<double>(n);
    if (op == Pointwise::relu_fwd) activation_forward_cpu<double>(Activation::relu, n, xd.data(), ref.data());
    if (op == Pointwise::relu_bwd)
      activation_backward_cpu<double>(Activation::relu, n, xd.data(), x2d.data(), ref.data());
    if (op == Pointwise::add) add_cpu<double>(n, xd.data(), x2d.data(), ref.data());
    Check chk;
    chk.rel("y", read_act(env, *y), ref, env.tol_act());
    return chk;
  };
  return c;
}

// ---- max-pool 3x3/2 of the BiT stem (zero padding of 1) over [n, 112, 112, 64] ----

Case maxpool_case(const Env& env, bool backward) {
  MaxPoolShape s;
  s.n = env.batch(), s.h = 112, s.w = 112, s.c = 64, s.k = 3, s.stride = 2, s.pad = 1, s.pad_with_zero = true;
  const int64_t nx = s.n * s.h * s.w * s.c, ny = s.y_numel();
  const double a = double(env.act_size());
  Case c;
  c.shape = dims({s.n, s.h, s.w, s.c}) + " 3x3/2 zero-pad 1";
  c.bytes = a * double(nx + ny) + 4.0 * double(ny);
  c.note = "maxpool fwd: x read, y + int32 argmax written; bwd: argmax + dy read, dx written";
  c.copies = env.copies_for(c.bytes);
  auto x = std::make_shared<std::vector<float>>(uniform(nx, 81, -1.0f, 1.0f));
  auto ry = std::make_shared<std::vector<double>>(size_t(ny));
  auto rarg = std::make_shared<std::vector<int32_t>>(size_t(ny));
  maxpool_forward_cpu<double>(s, to_double(*x).data(), ry->data(), rarg->data());
  auto arg = std::make_shared<Buf>(env, 4, ny, c.copies);
  if (!backward) {
    auto bx = std::make_shared<Buf>(act_buf(env, *x, c.copies)), y = std::make_shared<Buf>(act_out(env, ny, c.copies));
    c.run = [=, &env](int k) {
      if (!env.cuda) maxpool_forward_cpu<float>(s, bx->at<float>(k), y->at<float>(k), arg->at<int32_t>(k));
      KD_BENCH_CUDA(if (env.cuda)
                        maxpool_forward_cuda(env.h(), s, bx->at<bf16>(k), y->at<bf16>(k), arg->at<int32_t>(k)));
    };
    c.check = [=, &env, run = c.run] {
      y->fill_bytes(0xFF), arg->fill_bytes(0xFF);
      run(0);
      Check chk;
      chk.rel("y", read_act(env, *y), *ry, env.tol_act());
      const std::vector<int32_t> got = read<int32_t>(*arg);
      int64_t bad = 0;
      for (size_t i = 0; i < got.size(); ++i) bad += got[i] != (*rarg)[i];
      chk.exact("argmax", bad);
      return chk;
    };
    return c;
  }
  arg->upload(rarg->data());
  auto dy = std::make_shared<std::vector<float>>(uniform(ny, 82, -1.0f, 1.0f));
  auto bdy = std::make_shared<Buf>(act_buf(env, *dy, c.copies)), dx = std::make_shared<Buf>(act_out(env, nx, c.copies));
  c.run = [=, &env](int k) {
    if (!env.cuda) maxpool_backward_cpu<float>(s, arg->at<int32_t>(k), bdy->at<float>(k), dx->at<float>(k));
    KD_BENCH_CUDA(if (env.cuda)
                      maxpool_backward_cuda(env.h(), s, arg->at<int32_t>(k), bdy->at<bf16>(k), dx->at<bf16>(k)));
  };
  c.check = [=, &env, run = c.run] {
    dx->fill_bytes(0xFF);
    run(0);
    auto rdx = zeros<double>(nx);
    maxpool_backward_cpu<double>(s, rarg->data(), to_double(*dy).data(), rdx.data());
    Check chk;
    chk.rel("dx", read_act(env, *dx), rdx, env.tol_act());
    return chk;
  };
  return c;
}

// ---- Adam over a flat fp32 parameter buffer (ResNet-50: 25.6 M parameters) ----

int64_t stream_elems(const Env& env) {
  return env.cuda ? (env.quick ? 4 << 20 : 25'000'000) : (env.quick ? 1 << 18 : 4 << 20);
}

Case adam_case(const Env& env) {
  const int64_t n = stream_elems(env);
  AdamHyper hp;
  hp.step = 10;
  const float wd = 1e-4f, grad_scale = 0.5f;
  // w, g, m, v in one host array, so that the check can restart from the same state.
  auto init = std::make_shared<std::vector<float>>(uniform(n, 91, -1.0f, 1.0f, false));
  struct Part {
    uint64_t seed;
    float lo, hi;
  };
  for (const Part& p : {Part{92, -1.0f, 1.0f}, Part{93, -0.01f, 0.01f}, Part{94, 0.0f, 1e-4f}}) {  // g, m, v
    const std::vector<float> part = uniform(n, p.seed, p.lo, p.hi, false);
    init->insert(init->end(), part.begin(), part.end());
  }
  Case c;
  c.shape = dims({n});
  c.bytes = double(n) * (env.cuda ? 30 : 28);
  c.note = "adam: w, g, m, v read + w, m, v written (fp32), + the bf16 copy of w on a GPU: 30 bytes a parameter";
  auto w = std::make_shared<Buf>(env, 4, n), g = std::make_shared<Buf>(env, 4, n);
  auto m = std::make_shared<Buf>(env, 4, n), v = std::make_shared<Buf>(env, 4, n);
  auto wc = std::make_shared<Buf>(env, 2, n);
  auto reset = [=] {
    Buf* parts[4] = {w.get(), g.get(), m.get(), v.get()};
    for (size_t i = 0; i < 4; ++i) parts[i]->upload(init->data() + i * size_t(n));
  };
  reset();
  c.run = [=, &env](int) {
    if (!env.cuda)
      adam_update_cpu(n, hp, wd, grad_scale, w->at<float>(0), g->at<float>(0), m->at<float>(0), v->at<float>(0));
    KD_BENCH_CUDA(if (env.cuda) adam_update_cuda(env.h(), n, hp, wd, grad_scale, w->at<float>(0), g->at<float>(0),
                                                 m->at<float>(0), v->at<float>(0), wc->at<bf16>(0)));
  };
  c.check = [=, &env, run = c.run] {
    reset();
    wc->fill_bytes(0xFF);
    run(0);
    std::vector<float> rw(init->begin(), init->begin() + n), rm(init->begin() + 2 * n, init->begin() + 3 * n);
    std::vector<float> rv(init->begin() + 3 * n, init->end());
    const float* rg = init->data() + n;
    if (env.cuda) {  // the CPU reference
      adam_update_cpu(n, hp, wd, grad_scale, rw.data(), rg, rm.data(), rv.data());
    } else {  // the CPU loop against the per-element update it is built on, serially
      const float b1 = adam_bias_correction(hp.beta1, hp.step), b2 = adam_bias_correction(hp.beta2, hp.step);
      for (int64_t i = 0; i < n; ++i)
        adam_update_element(hp, b1, b2, wd, rw[size_t(i)], grad_scale * rg[i], rm[size_t(i)], rv[size_t(i)]);
    }
    Check chk;
    chk.rel("w", read<float>(*w), rw, 1e-5);
    chk.rel("m", read<float>(*m), rm, 1e-5);
    chk.rel("v", read<float>(*v), rv, 1e-5);
    if (env.cuda) {
      std::vector<float> got;
      for (bf16 b : read<bf16>(*wc)) got.push_back(bf16_to_float(b));
      chk.rel("w_bf16", got, rw, 1e-2);
    }
    reset();
    return chk;
  };
  return c;
}

// ---- fp32 <-> bf16 ----

Case cast_case(const Env& env, bool to_bf16) {
  const int64_t n = stream_elems(env);
  auto in = std::make_shared<std::vector<float>>(uniform(n, 101, -100.0f, 100.0f, !to_bf16));
  Case c;
  c.shape = dims({n});
  c.bytes = 6.0 * double(n);
  c.note = "cast: 4 bytes read + 2 written (or 2 + 4) an element";
  c.copies = env.copies_for(c.bytes);
  auto bits = zeros<bf16>(n);
  for (int64_t i = 0; i < n; ++i) bits[size_t(i)] = float_to_bf16((*in)[size_t(i)]);
  auto src = std::make_shared<Buf>(to_bf16 ? typed_buf(env, *in, c.copies) : typed_buf(env, bits, c.copies));
  auto dst = std::make_shared<Buf>(env, to_bf16 ? 2 : 4, n, c.copies);
  c.run = [=, &env](int k) {
    if (!env.cuda && to_bf16) cast_f32_to_bf16_cpu(n, src->at<float>(k), dst->at<bf16>(k));
    if (!env.cuda && !to_bf16) cast_bf16_to_f32_cpu(n, src->at<bf16>(k), dst->at<float>(k));
    KD_BENCH_CUDA(if (env.cuda && to_bf16) cast_f32_to_bf16_cuda(env.h(), n, src->at<float>(k), dst->at<bf16>(k));
                  if (env.cuda && !to_bf16) cast_bf16_to_f32_cuda(env.h(), n, src->at<bf16>(k), dst->at<float>(k)));
  };
  c.check = [=, run = c.run] {
    dst->fill_bytes(0xFF);
    run(0);
    // Both directions are exact on these inputs (rounded once, or already bf16): compare as float.
    auto got = zeros<float>(n), ref = zeros<float>(n);
    if (to_bf16) {
      const std::vector<bf16> out = read<bf16>(*dst);
      for (int64_t i = 0; i < n; ++i)
        got[size_t(i)] = bf16_to_float(out[size_t(i)]), ref[size_t(i)] = bf16_to_float(float_to_bf16((*in)[size_t(i)]));
    } else {
      got = read<float>(*dst), ref = *in;
    }
    Check chk;
    chk.rel(to_bf16 ? "bf16" : "f32", got, ref, 1e-5);
    return chk;
  };
  return c;
}

}  // namespace

void add_pointwise_cases(Registry& r) {
  r.push_back({"relu.fwd.56x56x256", [](const Env& env) { return pointwise_case(env, Pointwise::relu_fwd); }});
  r.push_back({"relu.bwd.56x56x256", [](const Env& env) { return pointwise_case(env, Pointwise::relu_bwd); }});
  r.push_back({"add.56x56x256", [](const Env& env) { return pointwise_case(env, Pointwise::add); }});
  r.push_back({"maxpool.fwd.112x112x64", [](const Env& env) { return maxpool_case(env, false); }});
  r.push_back({"maxpool.bwd.112x112x64", [](const Env& env) { return maxpool_case(env, true); }});
  r.push_back({"adam.resnet50", adam_case});
  r.push_back({"cast.f32_to_bf16", [](const Env& env) { return cast_case(env, true); }});
  r.push_back({"cast.bf16_to_f32", [](const Env& env) { return cast_case(env, false); }});
}

}  // namespace kd::bench
