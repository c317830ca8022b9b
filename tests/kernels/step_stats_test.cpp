// The step statistics kept on the device (kernels/step_stats.h): the gate's clipping and skipping
// decision, the loss rows' sum and agreement count, and (GPU) the device versions of both and the
// optimizer kernels under the gate against the CPU.
#include "kernels/step_stats.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/optim.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;

std::vector<double> block(double loss_sum, double sum_squares) {
  std::vector<double> s(kStatWidth, -7.0);  // junk where the gate writes
  s[kStatLossSum] = loss_sum, s[kStatGradSumSq] = sum_squares;
  return s;
}

TEST(StepGate, ClipsAboveTheNormAndSkipsWhatIsNotFinite) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  struct Case {
    double loss, sum_squares, clip, scale, applied;
  };
  const Case cases[] = {
      {2.5, 16.0, 1.0, 0.25, 1},  // norm 4 > 1: scaled to norm 1
      {2.5, 0.25, 1.0, 1.0, 1},   // norm 0.5 <= 1: as it is
      {2.5, 16.0, 0.0, 1.0, 1},   // clipping off
      {2.5, 16.0, 4.0, 1.0, 1},   // exactly at the limit: as it is
      {nan, 16.0, 1.0, 1.0, 0},   // a NaN loss
      {-inf, 16.0, 1.0, 1.0, 0},  // an infinite loss
      {2.5, nan, 1.0, 1.0, 0},    // a NaN gradient
      {2.5, inf, 1.0, 1.0, 0},    // an infinite gradient
  };
  for (const Case& c : cases) {
    std::vector<double> s = block(c.loss, c.sum_squares);
    step_gate_cpu(c.clip, s.data());
    EXPECT_EQ(s[kStatApplied], c.applied) << c.loss << " " << c.sum_squares;
    EXPECT_DOUBLE_EQ(s[kStatGradScale], c.scale) << c.loss << " " << c.sum_squares;
  }
  EXPECT_TRUE(finite_f64(0.0) && finite_f64(-1e308) && finite_f64(5e-324));
  EXPECT_FALSE(finite_f64(inf) || finite_f64(-inf) || finite_f64(nan));
}

TEST(StepStatsRows, AddTheRowsInOrderAndCountTheAgreeingOnes) {
  const std::vector<float> loss = random_vector<float>(37, 1, 0.1, 3.0);
  std::vector<int32_t> rank(37);
  for (size_t i = 0; i < rank.size(); ++i) rank[i] = int32_t(i % 3 == 0 ? 0 : i % 5);
  std::vector<double> s(kStatWidth, 0.0);
  s[kStatLossSum] = 1.5, s[kStatAgree] = 2;  // an earlier micro-batch's
  add_loss_rows_cpu<float>(37, loss.data(), rank.data(), s.data());
  double expected = 1.5;
  int64_t agree = 2;
  for (size_t i = 0; i < loss.size(); ++i) expected += double(loss[i]), agree += rank[i] == 0;
  EXPECT_EQ(s[kStatLossSum], expected);  // bit for bit: the host's order
  EXPECT_EQ(s[kStatAgree], double(agree));
  add_loss_rows_cpu<float>(37, loss.data(), nullptr, s.data());
  EXPECT_EQ(s[kStatAgree], double(agree)) << "no ranks: no agreement counted";
  // f64 rows are rounded to fp32 first, as the host's read-back was.
  const std::vector<double> wide = {0.1, 1.0 / 3.0};
  std::vector<double> t(kStatWidth, 0.0);
  add_loss_rows_cpu<double>(2, wide.data(), nullptr, t.data());
  EXPECT_EQ(t[kStatLossSum], double(float(0.1)) + double(float(1.0 / 3.0)));
}

TEST(StepStatsFlags, AnyNanOrInfinitySetsTheFlagAndFiniteValuesLeaveIt) {
  std::vector<float> x = random_vector<float>(1000, 7, -1e30, 1e30);
  double flag = 0;
  flag_nonfinite_cpu<float>(1000, x.data(), &flag);
  EXPECT_EQ(flag, 0.0) << "large finite values";
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
    std::vector<float> y = x;
    y[999] = bad;
    double f = 0;
    flag_nonfinite_cpu<float>(1000, y.data(), &f);
    EXPECT_EQ(f, 1.0) << bad;
    flag_nonfinite_cpu<float>(999, y.data(), &f);
    EXPECT_EQ(f, 1.0) << "a set flag stays set";
  }
}

#if KD_HAVE_CUDA
using test::DeviceArray;

TEST(StepStatsCuda, TheNonFiniteFlagMatchesTheCpu) {
  KD_REQUIRE_CUDA();
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (int64_t n : {int64_t(1), int64_t(4099), (int64_t(1) << 20) + 3}) {
    std::vector<float> x = random_vector<float>(size_t(n), 8, -5, 5);
    for (int64_t bad_at : {int64_t(-1), n - 1, n / 2}) {
      std::vector<float> y = x;
      if (bad_at >= 0) y[size_t(bad_at)] = std::nanf("");
      DeviceArray<float> d_y(y);
      DeviceArray<double> d_flag(std::vector<double>{0.0});
      flag_nonfinite_cuda(h, n, d_y.get(), d_flag.get());
      EXPECT_EQ(d_flag.download()[0], bad_at >= 0 ? 1.0 : 0.0) << n << " " << bad_at;
    }
  }
}

TEST(StepStatsCuda, RowsAndGateMatchTheCpu) {
  KD_REQUIRE_CUDA();
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (int64_t rows : {1, 7, 256, 1000}) {
    const std::vector<float> loss = random_vector<float>(size_t(rows), 2 + uint64_t(rows), 0.1, 3.0);
    std::vector<int32_t> rank(static_cast<size_t>(rows));
    for (int64_t i = 0; i < rows; ++i) rank[size_t(i)] = int32_t(i % 4);
    std::vector<double> cpu(kStatWidth, 0.0);
    cpu[kStatLossSum] = 0.5, cpu[kStatGradSumSq] = 9.0;
    DeviceArray<double> d_stats(cpu);
    DeviceArray<float> d_loss(loss);
    DeviceArray<int32_t> d_rank(rank);
    add_loss_rows_cpu<float>(rows, loss.data(), rank.data(), cpu.data());
    add_loss_rows_cuda(h, rows, d_loss.get(), d_rank.get(), d_stats.get());
    step_gate_cpu(2.0, cpu.data());
    step_gate_cuda(h, 2.0, d_stats.get());
    const std::vector<double> got = d_stats.download();
    EXPECT_NEAR(got[kStatLossSum], cpu[kStatLossSum], 1e-12 * double(rows)) << rows;
    EXPECT_EQ(got[kStatAgree], cpu[kStatAgree]) << rows;
    EXPECT_EQ(got[kStatApplied], 1.0) << rows;
    EXPECT_EQ(got[kStatGradScale], cpu[kStatGradScale]) << rows;  // 2 / 3
  }
}

// The update kernels under the gate: a skipped step changes nothing, an applied one equals the
// plain kernel with the gate's scale. Under a gate the kernels take lr, the bias corrections and
// the step from the block too (kStatLr .. kStatStep, as begin_deferred writes them), so each
// optimizer gets a block with its own schedule; the host arguments' lr and step are decoys.
TEST(StepStatsCuda, TheUpdateKernelsFollowTheGate) {
  KD_REQUIRE_CUDA();
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  const int64_t n = 4099;
  const std::vector<float> w0 = random_vector<float>(size_t(n), 3), g = random_vector<float>(size_t(n), 4);
  const std::vector<float> m0 = random_vector<float>(size_t(n), 5, -0.1, 0.1),
                           v0 = random_vector<float>(size_t(n), 6, 0, 0.01);
  for (bool applied : {false, true}) {
    std::vector<double> gate(kStatWidth, 0.0);
    gate[kStatApplied] = applied ? 1 : 0, gate[kStatGradScale] = 0.37;
    AdamHyper hp;
    hp.lr = 0.01f, hp.step = 3;
    std::vector<double> adam_gate = gate, sgd_gate = gate;
    store_step_scalars({double(hp.lr), adam_bias_correction(hp.beta1, hp.step),
                        adam_bias_correction(hp.beta2, hp.step), hp.step},
                       adam_gate.data() + kStatLr);
    DeviceArray<double> d_gate(adam_gate);
    std::vector<float> w = w0, m = m0, v = v0;
    if (applied) adam_update_cpu(n, hp, 0.05f, 0.37f, w.data(), g.data(), m.data(), v.data());
    DeviceArray<float> d_w(w0), d_g(g), d_m(m0), d_v(v0);
    // grad_scale 5, lr 7 and step 9 are ignored: the gate's 0.37 and schedule count.
    AdamHyper decoy = hp;
    decoy.lr = 7.0f, decoy.step = 9;
    adam_update_cuda(h, n, decoy, 0.05f, 5.0f, d_w.get(), d_g.get(), d_m.get(), d_v.get(), nullptr, d_gate.get());
    EXPECT_LE(test::rel_l2(d_w.download(), w), 1e-6) << "adam applied " << applied;
    EXPECT_LE(test::rel_l2(d_v.download(), v), 1e-6) << "adam applied " << applied;
    if (!applied) {
      EXPECT_EQ(d_w.download(), w0);
    }

    SgdHyper sp;
    sp.lr = 0.1f, sp.step = 2;
    store_step_scalars({double(sp.lr), 1.0f, 1.0f, sp.step}, sgd_gate.data() + kStatLr);
    DeviceArray<double> d_sgd_gate(sgd_gate);
    std::vector<float> ws = w0, buf = m0;
    if (applied) sgd_update_cpu(n, sp, 0.0f, 0.37f, ws.data(), g.data(), buf.data());
    DeviceArray<float> d_ws(w0), d_buf(m0);
    SgdHyper sgd_decoy = sp;
    sgd_decoy.lr = 7.0f, sgd_decoy.step = 9;
    sgd_update_cuda(h, n, sgd_decoy, 0.0f, 5.0f, d_ws.get(), d_g.get(), d_buf.get(), nullptr, d_sgd_gate.get());
    EXPECT_LE(test::rel_l2(d_ws.download(), ws), 1e-6) << "sgd applied " << applied;
    if (!applied) {
      EXPECT_EQ(d_buf.download(), m0);
    }
  }
}
#endif

}  // namespace
}  // namespace kd
