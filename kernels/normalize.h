// Per-element math shared by every "subtract the mean, divide by the standard deviation" op:
// GroupNorm, BatchNorm and weight standardisation, on the CPU and in the CUDA kernels; and the
// block partition of the CUDA GroupNorm/BatchNorm kernels, so CPU tests can check it.
//
// Forward, over a set S of m values with mean mu and biased variance var:
//   x_hat = (x - mu) * rstd,  rstd = 1 / sqrt(var + eps),   y = gamma * x_hat + beta  [, relu]
// Backward, with g = dL/dx_hat for every value of S (for an affine norm g = gamma * dL/dy):
//   dL/dx = rstd * (g - mean_S(g) - x_hat * mean_S(g * x_hat))
// (the two means are the gradient flowing through mu and through rstd; S's size is folded in).
#pragma once
#include <cmath>

#include "kernels/common.h"

namespace kd {

// a * b rounded once, never fused with a following add: on the GPU nvcc would otherwise turn
// a * b + c into an fma, and the CUDA kernels would no longer compute bit for bit what the CPU
// computes from the same inputs (which decides, e.g., the recomputed ReLU mask at y ~ 0).
KD_HD float norm_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
KD_HD double norm_mul(double a, double b) { return a * b; }

template <typename T>
KD_HD T norm_x_hat(T x, T mean, T rstd) {
  return norm_mul(x - mean, rstd);
}

// gamma * x_hat + beta, before any activation. The forward pass and the backward pass's
// recomputed ReLU mask both call this, so they agree bit for bit on which outputs were > 0.
template <typename T>
KD_HD T norm_affine(T x, T mean, T rstd, T gamma, T beta) {
  return norm_mul(gamma, norm_x_hat(x, mean, rstd)) + beta;
}

// With the fused ReLU, a NaN stays NaN (as torch.relu), so a diverging run shows in the loss.
template <typename T>
KD_HD T norm_affine_act(T x, T mean, T rstd, T gamma, T beta, bool relu) {
  const T y = norm_affine(x, mean, rstd, gamma, beta);
  return relu && y < T(0) ? T(0) : y;
}

// dL/d(gamma * x_hat + beta): dy where the output was > 0 (or no ReLU), else zero, as PyTorch's
// threshold_backward.
template <typename T>
KD_HD T norm_upstream_grad(T dy, T x, T mean, T rstd, T gamma, T beta, bool relu) {
  return relu && !(norm_affine(x, mean, rstd, gamma, beta) > T(0)) ? T(0) : dy;
}

// dL/dx from g = dL/dx_hat and the set's means of g and g * x_hat (see the top of the file).
template <typename T>
KD_HD T norm_input_grad(T g, T x_hat, T mean_g, T mean_g_x_hat, T rstd) {
  return norm_mul(rstd, g - mean_g - norm_mul(x_hat, mean_g_x_hat));
}

// The same for an affine norm, from g = dL/d(gamma * x_hat + beta): dL/dx_hat = gamma * g, and
// the means are those of gamma * g and gamma * g * x_hat.
template <typename T>
KD_HD T norm_affine_input_grad(T g, T gamma, T x_hat, T mean_dx_hat, T mean_dx_hat_x_hat, T rstd) {
  return norm_input_grad(norm_mul(gamma, g), x_hat, mean_dx_hat, mean_dx_hat_x_hat, rstd);
}

// 1 / sqrt(var + eps), computed in double whatever T is (statistics are accumulated in double).
KD_HD double norm_rstd(double var, double eps) { return 1.0 / sqrt(var + eps); }

// Mean and biased variance of `count` values from their sums around a shift K, s1 = sum(x - K)
// and s2 = sum((x - K)^2). With K one of the values, s2 / count and (s1 / count)^2 are of the
// order of the variance itself, so float partial sums lose no more than a few ulps of it.
KD_HD void norm_moments_from_shifted_sums(double shift, double s1, double s2, double count, double* mean,
                                          double* var) {
  const double d = s1 / count;
  const double v = s2 / count - d * d;
  *mean = shift + d;
  *var = v > 0 ? v : 0;
}

// ---- the block partition of the CUDA GroupNorm/BatchNorm kernels ------------------------------
// They see a [segments * rows_per_seg, c] matrix (GroupNorm: segments = images, rows = pixels;
// BatchNorm: one segment of n*h*w rows). A block of threads_x * threads_y threads covers one
// channel tile of threads_x * vec channels over one chunk of rows_per_chunk rows of one segment;
// thread (tx, ty) owns the vec channels from tile start + tx * vec and rows ty, ty + threads_y, ...
// of the chunk. Blocks are numbered tile fastest, then chunk, then segment.
constexpr int kNormBlockThreads = 256;

struct NormTiling {
  int64_t segments = 1, rows_per_seg = 1, c = 1;
  int vec = 1;  // channels per thread: 8 (one 16-byte load of bf16) or 1
  int threads_x = 1, threads_y = 1;
  int64_t col_tiles = 1, chunks = 1, rows_per_chunk = 1;
  KD_HD int64_t tile_channels() const { return int64_t(threads_x) * vec; }
  KD_HD int64_t blocks() const { return segments * chunks * col_tiles; }
};

struct NormBlock {
  int64_t segment, chunk, row_begin, row_end, col_begin, col_end;  // [begin, end) in the segment
};

KD_HD NormBlock norm_block(const NormTiling& t, int64_t b) {
  NormBlock k;
  const int64_t tile = b % t.col_tiles, rest = b / t.col_tiles;
  k.chunk = rest % t.chunks;
  k.segment = rest / t.chunks;
  k.row_begin = k.chunk * t.rows_per_chunk;
  k.row_end = k.row_begin + t.rows_per_chunk < t.rows_per_seg ? k.row_begin + t.rows_per_chunk : t.rows_per_seg;
  k.col_begin = tile * t.tile_channels();
  k.col_end = k.col_begin + t.tile_channels() < t.c ? k.col_begin + t.tile_channels() : t.c;
  return k;
}

// First of the vec channels that thread tx of block k owns; it owns none when this is >= col_end
// (with vec 8, c is a multiple of 8, so a thread owns all of its 8 channels or none).
KD_HD int64_t norm_thread_channel(const NormTiling& t, const NormBlock& k, int tx) {
  return k.col_begin + int64_t(tx) * t.vec;
}

KD_HD int64_t norm_element_index(const NormTiling& t, int64_t segment, int64_t row, int64_t ch) {
  return (segment * t.rows_per_seg + row) * t.c + ch;
}

// Where block (segment, chunk) leaves its column sums of channel ch: [segments, chunks, c].
KD_HD int64_t norm_partial_index(const NormTiling& t, int64_t segment, int64_t chunk, int64_t ch) {
  return (segment * t.chunks + chunk) * t.c + ch;
}

// The first channel of ch's group: a group's statistics are summed around the value of this
// channel in the segment's first row (norm_moments_from_shifted_sums).
KD_HD int64_t norm_group_first_channel(int64_t ch, int64_t channels_per_group) {
  return ch / channels_per_group * channels_per_group;
}

// The partition for a matrix: 16-byte loads where c allows (and the caller has checked the
// pointers' alignment), channel tiles of up to 32 threads, and row chunks cut so that there are
// about target_blocks blocks, but no more chunks than give each thread 4 rows.
inline NormTiling make_norm_tiling(int64_t segments, int64_t rows_per_seg, int64_t c, bool vectorised,
                                   int64_t target_blocks) {
  NormTiling t;
  t.segments = segments, t.rows_per_seg = rows_per_seg, t.c = c;
  t.vec = vectorised && c % 8 == 0 ? 8 : 1;
  const int64_t vecs_per_row = c / t.vec;
  t.threads_x = int(vecs_per_row < 32 ? vecs_per_row : 32);
  t.threads_y = kNormBlockThreads / t.threads_x;
  t.col_tiles = ceil_div(vecs_per_row, t.threads_x);
  const int64_t blocks_per_chunk = segments * t.col_tiles;
  const int64_t wanted_chunks = blocks_per_chunk >= target_blocks ? 1 : ceil_div(target_blocks, blocks_per_chunk);
  const int64_t most_chunks = rows_per_seg / (4 * int64_t(t.threads_y));
  const int64_t chunks = wanted_chunks < most_chunks ? wanted_chunks : most_chunks > 1 ? most_chunks : 1;
  t.rows_per_chunk = ceil_div(ceil_div(rows_per_seg, chunks), t.threads_y) * t.threads_y;
  t.chunks = ceil_div(rows_per_seg, t.rows_per_chunk);
  return t;
}

// Segments per launch when a launcher works through the segments in slabs whose bytes stay
// within budget_bytes (so a second pass over a slab finds it in L2): at least one, at most all,
// and as even as the slab count allows (no small last slab that leaves the device half idle).
inline int64_t norm_slab_segments(int64_t segments, int64_t bytes_per_segment, int64_t budget_bytes) {
  int64_t fit = bytes_per_segment > 0 ? budget_bytes / bytes_per_segment : segments;
  fit = fit < 1 ? 1 : fit > segments ? segments : fit;
  return ceil_div(segments, ceil_div(segments, fit));
}

}  // namespace kd
