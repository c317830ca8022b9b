// Optimizer updates over fp32 master weights, one contiguous tensor at a time. The per-element
// math lives in KD_HD functions shared with the CUDA multi-tensor kernels.
//
// Adam with decoupled weight decay (AdamW):
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   w -= lr * ( (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd * w )
// SGD with momentum (PyTorch's form) and decoupled weight decay:
//   buf = mu buf + g  (buf = g at the first step);  w -= lr * ( (nesterov ? g + mu buf : buf) + wd * w )
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

struct AdamHyper {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  int64_t step = 1;  // 1-based, for the bias corrections
};

struct SgdHyper {
  float lr = 0.1f, momentum = 0.9f;
  bool nesterov = false;
  int64_t step = 1;
};

KD_HD void adam_update_element(const AdamHyper& h, float bias1, float bias2, float weight_decay, float& w, float g,
                               float& m, float& v) {
  m = h.beta1 * m + (1.0f - h.beta1) * g;
  v = h.beta2 * v + (1.0f - h.beta2) * g * g;
  const float m_hat = m / bias1, v_hat = v / bias2;
  w -= h.lr * (m_hat / (sqrtf(v_hat) + h.eps) + weight_decay * w);
}

KD_HD void sgd_update_element(const SgdHyper& h, float weight_decay, float& w, float g, float& buf) {
  buf = h.step == 1 ? g : h.momentum * buf + g;
  const float d = h.nesterov ? g + h.momentum * buf : buf;
  w -= h.lr * (d + weight_decay * w);
}

// bias corrections 1 - beta^t, computed once per step on the host
inline float adam_bias_correction(float beta, int64_t step) { return 1.0f - std::pow(beta, float(step)); }

// The schedule's part of a step as the statistics block holds it (kernels/step_stats.h, indices
// kStatLr .. kStatStep; `block` points at kStatLr): the scheduled lr, Adam's two bias corrections
// and the 1-based step. Every value round-trips through the double exactly, so the kernels that
// read them compute what the host's arguments would have given, bit for bit.
struct StepScalars {
  double lr = 0;
  float bias1 = 1, bias2 = 1;
  int64_t step = 1;
};
KD_HD void store_step_scalars(const StepScalars& s, double* block) {
  block[0] = s.lr, block[1] = double(s.bias1), block[2] = double(s.bias2), block[3] = double(s.step);
}
KD_HD StepScalars load_step_scalars(const double* block) {
  StepScalars s;
  s.lr = block[0], s.bias1 = float(block[1]), s.bias2 = float(block[2]), s.step = int64_t(block[3]);
  return s;
}

// g is multiplied by grad_scale first (gradient clipping without an extra pass).
void adam_update_cpu(int64_t n, const AdamHyper& h, float weight_decay, float grad_scale, float* w, const float* g,
                     float* m, float* v);
void sgd_update_cpu(int64_t n, const SgdHyper& h, float weight_decay, float grad_scale, float* w, const float* g,
                    float* buf);

// sum of squares in double (for the global gradient norm), x *= s, and dst += src (a
// micro-batch's gradient added to the step's total as a whole tensor)
double sum_squares_cpu(int64_t n, const float* x);
void scale_cpu(int64_t n, float s, float* x);
void accumulate_cpu(int64_t n, const float* src, float* dst);

// sum_squares_cuda's partition, fixed by n alone so the sum is deterministic: chunks of
// kSumSquaresChunk elements, one block each; in a chunk, thread t adds the squares of its
// 4-element vectors t, t + threads, t + 2 threads, ... in that order (fp32), the block adds its
// threads' sums (fp32, CUB), and the chunks' sums are added in fp64.
constexpr int kSumSquaresThreads = 256, kSumSquaresVectors = 8;
constexpr int64_t kSumSquaresChunk = int64_t(kSumSquaresThreads) * kSumSquaresVectors * 4;
KD_HD int64_t sum_squares_element(int64_t chunk, int thread, int vector, int lane) {
  return chunk * kSumSquaresChunk + (int64_t(vector) * kSumSquaresThreads + thread) * 4 + lane;
}

// CUDA: the same updates over one flat fp32 buffer (the parameter store keeps all decayed
// parameters first, so a whole model is two launches); w_compute (bf16, may be null) receives
// the updated weights' compute copy in the same pass. grad_scale multiplies g first (gradient
// clipping without an extra pass). With step_stats (device memory, kernels/step_stats.h; may be
// null) the kernels read the step's gate and schedule instead: nothing changes unless
// step_stats[kStatApplied] is set, the gradients are scaled by float(step_stats[kStatGradScale]),
// and lr, the bias corrections and the step come from its StepScalars (hp's are ignored), so the
// launch's arguments are the same every step.
void adam_update_cuda(const CudaHandles& h, int64_t n, const AdamHyper& hp, float weight_decay, float grad_scale,
                      float* w, const float* g, float* m, float* v, bf16* w_compute,
                      const double* step_stats = nullptr);
void sgd_update_cuda(const CudaHandles& h, int64_t n, const SgdHyper& hp, float weight_decay, float grad_scale,
                     float* w, const float* g, float* buf, bf16* w_compute, const double* step_stats = nullptr);
// *result (device) = sum of squares of x, accumulated in fp32 per block and fp64 across blocks.
void sum_squares_cuda(const CudaHandles& h, int64_t n, const float* x, double* result);
void scale_cuda(const CudaHandles& h, int64_t n, float s, float* x);
void accumulate_cuda(const CudaHandles& h, int64_t n, const float* src, float* dst);

}  // namespace kd
