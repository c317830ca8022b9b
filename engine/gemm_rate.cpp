#include "engine/gemm_rate.h"

#include <algorithm>
#include <vector>

#include "engine/tensor.h"
#include "engine/timer.h"
#include "kernels/gemm.h"
#if KD_HAVE_CUDA
#include "kernels/gemm_cuda.h"
#endif
#include "kernels/random.h"

namespace kd {

float gemm_rate_operand(int which, int64_t i) {
  return 2.0f * random_uniform(11 + uint64_t(which), 0x6d61746d756cull, uint64_t(i)) - 1.0f;
}

int64_t gemm_rate_size(bool cuda, bool quick) { return cuda ? (quick ? 2048 : 8192) : (quick ? 512 : 1024); }

int gemm_rate_reps(double estimate_s, double target_s, bool quick) {
  const int lo = quick ? 3 : 10, hi = quick ? 10 : 200;
  return estimate_s > 0 ? int(std::clamp(target_s / estimate_s, double(lo), double(hi))) : hi;
}

namespace {

Tensor operand(int which, int64_t n, DType dtype) {
  Tensor t = Tensor::zeros_cpu({n, n}, dtype);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n * n; ++i) {
    const float v = gemm_rate_operand(which, i);
    if (dtype == DType::bf16)
      t.data<bf16>()[i] = float_to_bf16(v);
    else
      t.data<float>()[i] = v;
  }
  return t;
}

}  // namespace

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

GemmRate measure_gemm_rate(Context& ctx, bool quick) {
  GemmRate r;
  const bool cuda = ctx.is_cuda();
  r.n = gemm_rate_size(cuda, quick);
  r.what = std::string(cuda ? "bf16 " : "fp32 ") + std::to_string(r.n) + "^3";
  const int64_t n = r.n;
  const DType dtype = cuda ? DType::bf16 : DType::f32;
  Tensor a = operand(0, n, dtype), b = operand(1, n, dtype);
  Tensor c = Tensor::zeros_cpu({n, n}, dtype);
  if (cuda) a = a.to(Device::cuda, &ctx), b = b.to(Device::cuda, &ctx), c = c.to(Device::cuda, &ctx);
  auto run = [&] {
#if KD_HAVE_CUDA
    if (cuda)
      return gemm_cuda(ctx.cuda_handles(), false, true, n, n, n, 1.0f, a.data<bf16>(), n, b.data<bf16>(), n, 0.0f,
                       c.data<bf16>(), n);
#endif
    gemm_cpu<float>(false, true, n, n, n, 1.0f, a.data<float>(), n, b.data<float>(), n, 0.0f, c.data<float>(), n);
  };
  // Each run its own phase: the timer's totals are then the runs' times (events on a GPU, read
  // once at the end of a series).
  auto series = [&](int reps) {
    PhaseTimer timer(ctx);
    for (int i = 0; i < reps; ++i) {
      timer.mark("run " + std::to_string(i));
      run();
    }
    timer.stop();
    std::vector<double> seconds;
    for (const auto& [name, ms] : timer.totals_ms()) seconds.push_back(ms * 1e-3);
    return seconds;
  };
  run();
  run();
  ctx.synchronize();
  r.reps = gemm_rate_reps(median_of(series(3)), quick ? 0.01 : 0.25, quick);
  r.median_s = median_of(series(r.reps));
  r.flops_per_s = 2.0 * double(n) * double(n) * double(n) / r.median_s;
  return r;
}

}  // namespace kd
