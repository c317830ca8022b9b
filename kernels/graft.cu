// CUDA grafting and update: one thread per element (grid-stride), the KD_HD element functions of
// graft.h, fp32. Memory-bound passes over the flat parameter buffers.
#include "kernels/check.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_vector.h"
#include "kernels/graft.h"

namespace kd {

namespace {

__global__ void graft_kernel(int64_t n, GraftKind kind, float beta1, float beta2, float eps, float bias1, float bias2,
                             float grad_scale, const float* grad, float* state1, float* state2, float* a,
                             float* filtered) {
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = first; i < n; i += stride) {
    const float g = grad_scale * grad[i];
    if (kind == GraftKind::adam) {
      graft_adam_element<float>(beta1, beta2, eps, bias1, bias2, g, state1[i], state2[i], a[i], filtered[i]);
    } else if (kind == GraftKind::adagrad) {
      graft_adagrad_element<float>(eps, g, state1[i], a[i]);
      filtered[i] = g;
    } else {
      a[i] = filtered[i] = g;
    }
  }
}

__global__ void update_kernel(int64_t n, float lr, float weight_decay, float momentum, bool nesterov, bool first_step,
                              const float* d, float* u, float* w, bf16* w_compute) {
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = first; i < n; i += stride) {
    float wi = w[i];
    update_element<float>(lr, weight_decay, momentum, nesterov, first_step, d[i], u ? u + i : nullptr, wi);
    w[i] = wi;
    if (w_compute) w_compute[i] = float_to_bf16(wi);
  }
}

}  // namespace

void graft_cuda(const CudaHandles& ch, int64_t n, const GraftHyper& h, float grad_scale, const float* grad,
                float* state1, float* state2, float* a, float* filtered) {
  KD_CHECK(n >= 0 && h.step >= 1, "graft_cuda: size ", n, ", step ", h.step);
  KD_CHECK(h.kind == GraftKind::sgd || state1, "graft_cuda: missing state");
  KD_CHECK(h.kind != GraftKind::adam || state2, "graft_cuda adam: missing v");
  if (n == 0) return;
  const float bias1 = adam_bias_correction(float(h.beta1), h.step),
              bias2 = adam_bias_correction(float(h.beta2), h.step);
  graft_kernel<<<gpu::grid_for(ch, n), gpu::kThreads, 0, ch.stream>>>(n, h.kind, float(h.beta1), float(h.beta2),
                                                                      float(h.eps), bias1, bias2, grad_scale, grad,
                                                                      state1, state2, a, filtered);
  KD_CUDA_LAUNCH_CHECK("graft_kernel");
}

void apply_update_cuda(const CudaHandles& ch, int64_t n, const UpdateHyper& h, const float* d, float* u, float* w,
                       bf16* w_compute) {
  KD_CHECK(n >= 0, "apply_update_cuda: negative size ", n);
  if (n == 0) return;
  update_kernel<<<gpu::grid_for(ch, n), gpu::kThreads, 0, ch.stream>>>(
      n, float(h.lr), float(h.weight_decay), float(h.momentum), h.nesterov, h.first, d, u, w, w_compute);
  KD_CUDA_LAUNCH_CHECK("update_kernel");
}

}  // namespace kd
