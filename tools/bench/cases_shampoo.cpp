// bench_kernels: Shampoo's batched damped inverse 4th root (the coupled Newton iteration of
// kernels/shampoo.h) on statistics like those of early training: A = G G^T / k with G n x n/2
// (rank n/2), so that the relative damping eps = 1e-6 sets the condition number (~1e6).
//
// Work: the iteration's GEMMs, (2 + squarings of M_i^p) x 2 n^3 per matrix and iteration (the
// Lanczos estimate of lambda_max, O(n^2) per step, is left out). Floor: that work at the rate of
// one strided-batched fp32 GEMM of the same n and batch, measured here (shampoo_direction with
// Linv only, the same cuBLAS call): the iteration cannot run faster than its GEMMs back to back.
// On the CPU: inverse_root_newton_cpu per matrix, the floor from gemm_cpu.
#include <algorithm>
#include <cstdio>
#include <memory>

#include "kernels/shampoo.h"
#include "tools/bench/harness.h"

namespace kd::bench {
namespace {

struct RootShape {
  int64_t n, batch;
};

// The GPU's shape, or smaller ones for the CPU (quick: a smoke test).
RootShape root_shape(const Env& env, RootShape gpu) {
  if (env.cuda) return gpu;
  const int64_t n = gpu.n / (env.quick ? 8 : 4);
  return {n, std::max<int64_t>(1, (env.quick ? 2 : 8) * 512 / gpu.n)};
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Case newton_root_case(const Env& env, RootShape gpu_shape) {
  const RootShape s = root_shape(env, gpu_shape);
  const int64_t n = s.n, batch = s.batch, nn = n * n, k = n / 2;
  InverseRootConfig cfg;  // p = 4, eps = 1e-6: the optimizer's defaults
  // batch statistics, G G^T / k
  auto a = std::make_shared<std::vector<float>>(size_t(batch * nn), 0.0f);
  for (int64_t b = 0; b < batch; ++b) {
    const std::vector<float> g = uniform(n * k, 200 + uint64_t(b), -1.0f, 1.0f, false);
    shampoo_stats_update_cpu<float>(n, k, g.data(), k, 1.0f, a->data() + b * nn, nullptr);
  }
  for (float& v : *a) v /= float(k);
  auto ba = std::make_shared<Buf>(typed_buf(env, *a, 1));
  auto bx = std::make_shared<Buf>(env, 4, batch * nn), berr = std::make_shared<Buf>(env, 4, batch);
  auto rounds = std::make_shared<int64_t>(0);  // GEMM rounds of the last run, all matrices

  Case c;
  c.run = [=, &env](int) {
    if (!env.cuda) {
      std::vector<float> err(static_cast<size_t>(batch));
      int64_t total = 0;
      for (int64_t b = 0; b < batch; ++b) {
        const InverseRootInfo info =
            inverse_root_newton_cpu(n, ba->at<float>(0) + b * nn, cfg, bx->at<float>(0) + b * nn);
        err[size_t(b)] = info.error;
        // a discarded round after the last accepted one, unless it stopped at tolerance or max_iters
        total += info.iterations + (info.error > cfg.tolerance && info.iterations < cfg.max_iters ? 1 : 0);
      }
      berr->upload(err.data());
      *rounds = total;
    }
    KD_BENCH_CUDA(if (env.cuda)* rounds =
                      batch * inverse_root_newton_cuda(env.h(), n, batch, ba->at<float>(0), cfg, bx->at<float>(0),
                                                       berr->at<float>(0), nullptr));
  };
  c.run(0);  // once, for the iteration count that the work depends on
  env.ctx->synchronize();
  const double gemm_flops = 2.0 * double(n) * double(n) * double(n);
  const int gemms = int(matrix_power_plan(cfg.p).steps.size()) + 2;
  c.flops = double(*rounds) * gemms * gemm_flops;
  char iters[32];
  std::snprintf(iters, sizeof iters, "%.1f", double(*rounds) / double(batch));
  c.shape = dims({batch, n, n}) + " p 4, rank " + std::to_string(k) + ", eps 1e-6: " + iters + " iterations";
  c.note = "shampoo.root: iterations x " + std::to_string(gemms) +
           " GEMMs x 2 n^3 a matrix; floor: that at the measured batched fp32 n^3 GEMM rate (not bf16)";

  // The floor: one batched fp32 GEMM (D = Linv G) of the same shape.
  auto bd = std::make_shared<Buf>(env, 4, batch * nn);
  auto gemm = [=, &env](int) {
    if (!env.cuda)
      for (int64_t b = 0; b < batch; ++b)
        shampoo_direction_cpu<float>(n, n, ba->at<float>(0) + b * nn, ba->at<float>(0) + b * nn, n, nullptr,
                                     bd->at<float>(0) + b * nn, n);
    KD_BENCH_CUDA(if (env.cuda) shampoo_direction_cuda(env.h(), batch, n, n, ba->at<float>(0), ba->at<float>(0), n, nn,
                                                       nullptr, bd->at<float>(0), n, nn));
  };
  gemm(0);
  env.ctx->synchronize();
  c.floor_rate = double(batch) * gemm_flops / median_of(time_runs(env, gemm, 1, 0, env.quick ? 3 : 10));
  c.floor_name = "sgemm_batched";

  c.check = [=, &env, run = c.run] {  // two matrices against the double eigen root
    bx->fill_bytes(0xFF);
    run(0);
    const std::vector<float> x = read<float>(*bx), err = read<float>(*berr);
    Check chk;
    for (int64_t b : {int64_t(0), batch - 1}) {
      std::vector<double> ad(a->begin() + b * nn, a->begin() + (b + 1) * nn), ref(static_cast<size_t>(nn));
      inverse_root_eigen_cpu(n, ad.data(), cfg, ref.data());
      const std::vector<float> got(x.begin() + b * nn, x.begin() + (b + 1) * nn);
      chk.rel("root[" + std::to_string(b) + "]", got, ref, 3e-2);  // fp32 at condition ~1e6 (shampoo_test.cpp)
      chk.record("max|M-I|[" + std::to_string(b) + "]", double(err[size_t(b)]), 1e-3);
    }
    return chk;
  };
  return c;
}

}  // namespace

void add_shampoo_cases(Registry& r) {
  r.push_back({"shampoo.root.64x512", [](const Env& env) { return newton_root_case(env, {512, 64}); }});
  r.push_back({"shampoo.root.16x1024", [](const Env& env) { return newton_root_case(env, {1024, 16}); }});
}

}  // namespace kd::bench
