// The element-wise grafting and update of Shampoo (kernels/graft.h): against the written formulas
// in double, and, with Adam grafting, against kd's AdamW kernel bit for bit (float); the CUDA
// versions against the CPU over several steps, awkward sizes and a bf16 compute copy.
#include "kernels/graft.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kernels/optim.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;

TEST(Graft, AdamAdagradSgdFollowTheirFormulas) {
  const int64_t n = 301;
  const auto grad = random_vector<double>(size_t(n), 1, -2, 2);
  for (GraftKind kind : {GraftKind::adam, GraftKind::adagrad, GraftKind::sgd}) {
    std::vector<double> s1 = random_vector<double>(size_t(n), 2, 0, 1), s2 = random_vector<double>(size_t(n), 3, 0, 1);
    const auto s1_before = s1, s2_before = s2;
    std::vector<double> a(static_cast<size_t>(n)), f(static_cast<size_t>(n));
    GraftHyper h;
    h.kind = kind, h.beta1 = 0.8, h.beta2 = 0.95, h.eps = 1e-3, h.step = 3;
    graft_cpu<double>(n, h, 0.5, grad.data(), s1.data(), s2.data(), a.data(), f.data());
    for (int64_t i = 0; i < n; ++i) {
      const double g = 0.5 * grad[size_t(i)];
      double want_a = g, want_f = g;
      if (kind == GraftKind::adam) {
        const double m = 0.8 * s1_before[size_t(i)] + 0.2 * g, v = 0.95 * s2_before[size_t(i)] + 0.05 * g * g;
        const double mh = m / (1 - std::pow(0.8, 3)), vh = v / (1 - std::pow(0.95, 3));
        want_a = mh / (std::sqrt(vh) + 1e-3), want_f = mh;
        EXPECT_NEAR(s1[size_t(i)], m, 1e-15);
        EXPECT_NEAR(s2[size_t(i)], v, 1e-15);
      } else if (kind == GraftKind::adagrad) {
        const double hh = s1_before[size_t(i)] + g * g;
        want_a = g / (std::sqrt(hh) + 1e-3);
        EXPECT_NEAR(s1[size_t(i)], hh, 1e-15);
      }
      EXPECT_NEAR(a[size_t(i)], want_a, 1e-13 * (1 + std::fabs(want_a))) << int(kind) << " " << i;
      EXPECT_NEAR(f[size_t(i)], want_f, 1e-13 * (1 + std::fabs(want_f)));
    }
  }
}

TEST(Graft, UpdateWithNesterovMomentumAndDecay) {
  const int64_t n = 77;
  const auto d = random_vector<double>(size_t(n), 4);
  std::vector<double> w = random_vector<double>(size_t(n), 5), u = random_vector<double>(size_t(n), 6);
  const auto w0 = w, u0 = u;
  UpdateHyper h;
  h.lr = 0.1, h.weight_decay = 0.01, h.momentum = 0.9, h.nesterov = true, h.first = false;
  apply_update_cpu<double>(n, h, d.data(), u.data(), w.data());
  for (int64_t i = 0; i < n; ++i) {
    const double uu = 0.9 * u0[size_t(i)] + d[size_t(i)], step = d[size_t(i)] + 0.9 * uu;
    EXPECT_NEAR(u[size_t(i)], uu, 1e-15);
    EXPECT_NEAR(w[size_t(i)], w0[size_t(i)] - 0.1 * (step + 0.01 * w0[size_t(i)]), 1e-15);
  }
  h.first = true;  // the first step: u = D
  apply_update_cpu<double>(n, h, d.data(), u.data(), w.data());
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(u[size_t(i)], d[size_t(i)]);
}

// Adam grafting, then the update with D = a: exactly AdamW (kernels/optim.h), in float.
TEST(Graft, AdamGraftingThenUpdateIsAdamWBitForBit) {
  const int64_t n = 1000;
  std::vector<float> w1 = random_vector<float>(size_t(n), 7), w2 = w1;
  std::vector<float> m1(size_t(n), 0), v1(size_t(n), 0), m2(size_t(n), 0), v2(size_t(n), 0);
  std::vector<float> a(static_cast<size_t>(n)), f(static_cast<size_t>(n));
  for (int step = 1; step <= 4; ++step) {
    const auto g = random_vector<float>(size_t(n), uint64_t(10 + step), -3, 3);
    AdamHyper ah;
    ah.lr = 0.01f, ah.step = step;
    adam_update_cpu(n, ah, 0.05f, 0.7f, w1.data(), g.data(), m1.data(), v1.data());
    GraftHyper gh;
    gh.step = step;
    graft_cpu<float>(n, gh, 0.7f, g.data(), m2.data(), v2.data(), a.data(), f.data());
    UpdateHyper uh;
    uh.lr = double(0.01f), uh.weight_decay = double(0.05f);
    apply_update_cpu<float>(n, uh, a.data(), nullptr, w2.data());
    ASSERT_EQ(w1, w2) << "step " << step;
    ASSERT_EQ(m1, m2);
    ASSERT_EQ(v1, v2);
  }
}

TEST(GraftCuda, MatchesTheCpuOverSeveralSteps) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& ch = test::cuda_test_context().cuda_handles();
  for (int64_t n : {int64_t(1), int64_t(4099), (int64_t(1) << 20) + 3})
    for (GraftKind kind : {GraftKind::adam, GraftKind::adagrad, GraftKind::sgd}) {
      std::vector<float> w = random_vector<float>(size_t(n), 20), s1 = random_vector<float>(size_t(n), 21, 0, 1),
                         s2 = random_vector<float>(size_t(n), 22, 0, 1), u(size_t(n), 0.0f);
      test::DeviceArray<float> dw(w), ds1(s1), ds2(s2), du(u), da(std::vector<float>(size_t(n), 0.0f)),
          df(std::vector<float>(size_t(n), 0.0f));
      test::DeviceArray<bf16> dwc(std::vector<bf16>(size_t(n), bf16{0}));
      std::vector<float> a(static_cast<size_t>(n)), f(static_cast<size_t>(n));
      for (int step = 1; step <= 3; ++step) {
        const auto g = random_vector<float>(size_t(n), uint64_t(30 + step), -2, 2);
        test::DeviceArray<float> dg(g);
        GraftHyper gh;
        gh.kind = kind, gh.step = step;
        UpdateHyper uh;
        uh.lr = 0.02, uh.weight_decay = 0.01, uh.momentum = kind == GraftKind::sgd ? 0.9 : 0.0, uh.nesterov = true;
        uh.first = step == 1;
        float* up = kind == GraftKind::sgd ? u.data() : nullptr;
        graft_cpu<float>(n, gh, 0.8f, g.data(), s1.data(), s2.data(), a.data(), f.data());
        apply_update_cpu<float>(n, uh, a.data(), up, w.data());
        graft_cuda(ch, n, gh, 0.8f, dg.get(), ds1.get(), ds2.get(), da.get(), df.get());
        apply_update_cuda(ch, n, uh, da.get(), kind == GraftKind::sgd ? du.get() : nullptr, dw.get(), dwc.get());
      }
      // The GPU may fuse multiply-adds where the CPU rounds twice: a few ulps.
      EXPECT_LT(test::rel_l2(dw.download(), w), 1e-6) << "n " << n << " kind " << int(kind);
      EXPECT_LT(test::rel_l2(da.download(), a), 1e-5);
      const std::vector<bf16> copy = dwc.download();
      const std::vector<float> wd = dw.download();
      size_t bad = 0;
      for (size_t i = 0; i < wd.size(); ++i) bad += copy[i].bits != float_to_bf16(wd[i]).bits;
      EXPECT_EQ(bad, 0u) << "the bf16 copy is the rounded weight";
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
