// GroupNorm on the CPU, NHWC. One image at a time per thread (images in parallel): an image is a
// contiguous [hw, c] block, so every pass below is a straight sweep over memory that accumulates
// per-channel sums in double; a group's statistic is then the sum of its c/groups channels.
//   forward:  pass 1 sums x (-> group means), pass 2 sums (x - mean)^2 (-> group variances,
//             around the mean, so no cancellation), pass 3 writes y. Sums run in T over chunks of
//             16 pixels (so the channel loops vectorise) and in double across chunks.
//   backward: pass 1 sums g and g * x_hat per channel (g = dL/d(gamma x_hat + beta), the ReLU
//             mask recomputed), which gives dbeta, dgamma and the group means of
//             dL/dx_hat = gamma * g; pass 2 writes dx. dgamma/dbeta are reduced over images in
//             image order after the parallel loop (deterministic).
#include "kernels/groupnorm.h"

#include <algorithm>
#include <vector>

#include "kernels/check.h"

namespace kd {

namespace {

constexpr int64_t kChunk = 16;  // pixels summed in T before the double accumulators

std::string describe(const GroupNormShape& s) {
  return detail::concat("groupnorm [n ", s.n, ", hw ", s.hw, ", c ", s.c, "] groups ", s.groups);
}

// Per-channel copies of the image's group statistics, so the inner loops index by channel only.
template <typename T>
void expand_to_channels(const GroupNormShape& s, const T* group_values, T* channel_values) {
  const int64_t cpg = s.channels_per_group();
  for (int64_t ch = 0; ch < s.c; ++ch) channel_values[ch] = group_values[ch / cpg];
}

}  // namespace

void validate(const GroupNormShape& s) {
  KD_CHECK(s.n > 0 && s.hw > 0 && s.c > 0 && s.groups > 0, "groupnorm: sizes must be positive: ", describe(s));
  KD_CHECK(s.c % s.groups == 0, "groupnorm: ", s.groups, " groups do not divide ", s.c, " channels: ", describe(s));
}

template <typename T>
void groupnorm_forward_cpu(const GroupNormShape& s, T eps, const T* x, const T* gamma, const T* beta, bool relu, T* y,
                           T* mean, T* rstd) {
  validate(s);
  KD_CHECK(eps >= T(0), "groupnorm: eps must be non-negative, got ", eps);
  const int64_t c = s.c, cpg = s.channels_per_group();
  const double count = double(s.group_size());
#pragma omp parallel
  {
    std::vector<double> sums(static_cast<size_t>(c)), channel_mean(static_cast<size_t>(c));
    std::vector<T> mean_c(static_cast<size_t>(c)), rstd_c(static_cast<size_t>(c)), partial(static_cast<size_t>(c)),
        centre(static_cast<size_t>(c));
#pragma omp for schedule(static)
    for (int64_t img = 0; img < s.n; ++img) {
      const T* xi = x + img * s.hw * c;
      T* yi = y + img * s.hw * c;
      T* mean_i = mean + img * s.groups;
      T* rstd_i = rstd + img * s.groups;

      // Sums in T over chunks of kChunk pixels (vectorisable over channels), then in double.
      T* part = partial.data();
      std::fill(sums.begin(), sums.end(), 0.0);
      for (int64_t p0 = 0; p0 < s.hw; p0 += kChunk) {
        std::fill(part, part + c, T(0));
        for (int64_t p = p0; p < std::min(s.hw, p0 + kChunk); ++p) {
          const T* xr = xi + p * c;
          for (int64_t ch = 0; ch < c; ++ch) part[ch] += xr[ch];
        }
        for (int64_t ch = 0; ch < c; ++ch) sums[size_t(ch)] += double(part[ch]);
      }
      for (int64_t g = 0; g < s.groups; ++g) {
        double total = 0;
        for (int64_t j = 0; j < cpg; ++j) total += sums[size_t(g * cpg + j)];
        for (int64_t j = 0; j < cpg; ++j) channel_mean[size_t(g * cpg + j)] = total / count;
      }

      // Squares around the (double) mean, rounded to T once per channel: the centred values are
      // of the order of the spread, so T sums over a chunk keep full relative accuracy.
      for (int64_t ch = 0; ch < c; ++ch) centre[size_t(ch)] = T(channel_mean[size_t(ch)]);
      std::fill(sums.begin(), sums.end(), 0.0);
      for (int64_t p0 = 0; p0 < s.hw; p0 += kChunk) {
        std::fill(part, part + c, T(0));
        for (int64_t p = p0; p < std::min(s.hw, p0 + kChunk); ++p) {
          const T* xr = xi + p * c;
          for (int64_t ch = 0; ch < c; ++ch) {
            const T d = xr[ch] - centre[size_t(ch)];
            part[ch] += d * d;
          }
        }
        for (int64_t ch = 0; ch < c; ++ch) sums[size_t(ch)] += double(part[ch]);
      }
      for (int64_t g = 0; g < s.groups; ++g) {
        double total = 0;
        for (int64_t j = 0; j < cpg; ++j) total += sums[size_t(g * cpg + j)];
        mean_i[g] = T(channel_mean[size_t(g * cpg)]);
        rstd_i[g] = T(norm_rstd(total / count, double(eps)));
      }

      expand_to_channels(s, mean_i, mean_c.data());
      expand_to_channels(s, rstd_i, rstd_c.data());
      const T* m = mean_c.data();
      const T* r = rstd_c.data();
      for (int64_t p = 0; p < s.hw; ++p) {
        const T* xr = xi + p * c;
        T* yr = yi + p * c;
        for (int64_t ch = 0; ch < c; ++ch) yr[ch] = norm_affine_act(xr[ch], m[ch], r[ch], gamma[ch], beta[ch], relu);
      }
    }
  }
}

template <typename T>
void groupnorm_backward_cpu(const GroupNormShape& s, const T* x, const T* gamma, const T* beta, const T* mean,
                            const T* rstd, bool relu, const T* dy, T* dx, T* dgamma, T* dbeta) {
  validate(s);
  const int64_t c = s.c, cpg = s.channels_per_group();
  const double count = double(s.group_size());
  // Per image and channel: sum of g and of g * x_hat, kept for the dgamma/dbeta reduction.
  std::vector<double> sum_g(size_t(s.n * c)), sum_g_x_hat(size_t(s.n * c));
#pragma omp parallel
  {
    std::vector<T> mean_c(static_cast<size_t>(c)), rstd_c(static_cast<size_t>(c)), mean_dxh(static_cast<size_t>(c)),
        mean_dxh_xh(static_cast<size_t>(c)), part_g(static_cast<size_t>(c)), part_gx(static_cast<size_t>(c));
#pragma omp for schedule(static)
    for (int64_t img = 0; img < s.n; ++img) {
      const T* xi = x + img * s.hw * c;
      const T* dyi = dy + img * s.hw * c;
      T* dxi = dx + img * s.hw * c;
      double* sg = sum_g.data() + img * c;
      double* sgx = sum_g_x_hat.data() + img * c;
      expand_to_channels(s, mean + img * s.groups, mean_c.data());
      expand_to_channels(s, rstd + img * s.groups, rstd_c.data());

      // Sums in T over chunks of kChunk pixels (vectorisable over channels), then in double.
      std::fill(sg, sg + c, 0.0);
      std::fill(sgx, sgx + c, 0.0);
      const T* m = mean_c.data();
      const T* r = rstd_c.data();
      T* pg = part_g.data();
      T* pgx = part_gx.data();
      for (int64_t p0 = 0; p0 < s.hw; p0 += kChunk) {
        std::fill(pg, pg + c, T(0));
        std::fill(pgx, pgx + c, T(0));
        for (int64_t p = p0; p < std::min(s.hw, p0 + kChunk); ++p) {
          const T* xr = xi + p * c;
          const T* dyr = dyi + p * c;
          for (int64_t ch = 0; ch < c; ++ch) {
            const T g = norm_upstream_grad(dyr[ch], xr[ch], m[ch], r[ch], gamma[ch], beta[ch], relu);
            pg[ch] += g;
            pgx[ch] += g * norm_x_hat(xr[ch], m[ch], r[ch]);
          }
        }
        for (int64_t ch = 0; ch < c; ++ch) sg[ch] += double(pg[ch]), sgx[ch] += double(pgx[ch]);
      }
      // Group means of dL/dx_hat = gamma * g and of dL/dx_hat * x_hat.
      for (int64_t grp = 0; grp < s.groups; ++grp) {
        double a = 0, b = 0;
        for (int64_t ch = grp * cpg; ch < (grp + 1) * cpg; ++ch) {
          a += double(gamma[ch]) * sg[ch];
          b += double(gamma[ch]) * sgx[ch];
        }
        for (int64_t ch = grp * cpg; ch < (grp + 1) * cpg; ++ch) {
          mean_dxh[size_t(ch)] = T(a / count);
          mean_dxh_xh[size_t(ch)] = T(b / count);
        }
      }

      const T* mg = mean_dxh.data();
      const T* mgx = mean_dxh_xh.data();
      for (int64_t p = 0; p < s.hw; ++p) {
        const T* xr = xi + p * c;
        const T* dyr = dyi + p * c;
        T* dxr = dxi + p * c;
        for (int64_t ch = 0; ch < c; ++ch) {
          const T g = norm_upstream_grad(dyr[ch], xr[ch], m[ch], r[ch], gamma[ch], beta[ch], relu);
          dxr[ch] = norm_affine_input_grad(g, gamma[ch], norm_x_hat(xr[ch], m[ch], r[ch]), mg[ch], mgx[ch], r[ch]);
        }
      }
    }
  }
  for (int64_t ch = 0; ch < c; ++ch) {
    double db = 0, dg = 0;
    for (int64_t img = 0; img < s.n; ++img) {
      db += sum_g[size_t(img * c + ch)];
      dg += sum_g_x_hat[size_t(img * c + ch)];
    }
    dbeta[ch] += T(db);
    dgamma[ch] += T(dg);
  }
}

#define KD_INSTANTIATE_GROUPNORM(T)                                                                          \
  template void groupnorm_forward_cpu<T>(const GroupNormShape&, T, const T*, const T*, const T*, bool, T*, T*, \
                                         T*);                                                                 \
  template void groupnorm_backward_cpu<T>(const GroupNormShape&, const T*, const T*, const T*, const T*,       \
                                          const T*, bool, const T*, T*, T*, T*);
KD_INSTANTIATE_GROUPNORM(float)
KD_INSTANTIATE_GROUPNORM(double)

}  // namespace kd
