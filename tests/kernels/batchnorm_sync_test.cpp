// SyncBatchNorm's stages (kernels/batchnorm.h) on the CPU: a batch split over three "ranks" of
// unequal size, each running the stages on its rows with the collectives done by hand (gather the
// moments in rank order, sum the gradient sums), gives the single-batch BatchNorm of the whole
// batch: y, dx, batch and running statistics within 1e-12 (relative L2, double), dgamma and dbeta
// once summed over ranks (the gradient all-reduce). Every rank's statistics agree bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/batchnorm.h"
#include "kernels/check.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;
using Vec = std::vector<double>;

constexpr int64_t kC = 5;
const std::vector<int64_t> kRankRows{100, 37, 163};  // 300 rows in all

struct RankState {
  int64_t first_row = 0, rows = 0;
  Vec mean, rstd, running_mean, running_var, y, dx, dgamma, dbeta;
  Vec moments, sums;
  double total_count = 0;
};

class BatchNormSync : public ::testing::Test {
 protected:
  const int64_t rows_ = std::accumulate(kRankRows.begin(), kRankRows.end(), int64_t(0));
  const Vec x_ = random_vector<double>(size_t(rows_ * kC), 1, -1, 3);
  const Vec dy_ = random_vector<double>(size_t(rows_ * kC), 2, -1, 1);
  const Vec gamma_ = random_vector<double>(kC, 3, 0.5, 1.5), beta_ = random_vector<double>(kC, 4);
  const Vec running_mean0_ = random_vector<double>(kC, 5), running_var0_ = random_vector<double>(kC, 6, 0.5, 2);
  const double eps_ = 1e-5, momentum_ = 0.1;

  // The ranks' forward and backward, collectives in between done here.
  std::vector<RankState> run_ranks() const {
    std::vector<RankState> ranks;
    int64_t first = 0;
    for (int64_t rows : kRankRows) {
      RankState r;
      r.first_row = first, r.rows = rows;
      first += rows;
      r.moments.assign(size_t(batchnorm_moments_size(kC)), NAN);
      batchnorm_moments_cpu<double>({rows, kC}, at(x_, r), r.moments.data());
      ranks.push_back(std::move(r));
    }
    Vec gathered;  // all-gather, rank order
    for (const RankState& r : ranks) gathered.insert(gathered.end(), r.moments.begin(), r.moments.end());
    for (RankState& r : ranks) {
      r.mean.assign(kC, NAN), r.rstd.assign(kC, NAN);
      r.running_mean = running_mean0_, r.running_var = running_var0_;
      batchnorm_finish_moments_cpu<double>(kC, int64_t(ranks.size()), gathered.data(), eps_, momentum_,
                                           r.mean.data(), r.rstd.data(), &r.total_count, r.running_mean.data(),
                                           r.running_var.data());
      r.y.assign(size_t(r.rows * kC), NAN);
      batchnorm_normalize_cpu<double>({r.rows, kC}, at(x_, r), r.mean.data(), r.rstd.data(), gamma_.data(),
                                      beta_.data(), r.y.data());
      r.sums.assign(size_t(batchnorm_grad_sums_size(kC)), NAN);
      batchnorm_grad_sums_cpu<double>({r.rows, kC}, at(x_, r), r.mean.data(), r.rstd.data(), at(dy_, r),
                                      r.sums.data());
    }
    Vec total(size_t(batchnorm_grad_sums_size(kC)), 0.0);  // all-reduce (sum)
    for (const RankState& r : ranks)
      for (size_t i = 0; i < total.size(); ++i) total[i] += r.sums[i];
    for (RankState& r : ranks) {
      r.dx.assign(size_t(r.rows * kC), NAN), r.dgamma.assign(kC, 0.0), r.dbeta.assign(kC, 0.0);
      batchnorm_backward_from_sums_cpu<double>({r.rows, kC}, at(x_, r), gamma_.data(), r.mean.data(), r.rstd.data(),
                                               at(dy_, r), r.sums.data(), total.data(), r.total_count, r.dx.data(),
                                               r.dgamma.data(), r.dbeta.data());
    }
    return ranks;
  }

  static const double* at(const Vec& v, const RankState& r) { return v.data() + r.first_row * kC; }
};

TEST_F(BatchNormSync, RanksTogetherEqualTheWholeBatch) {
  const BatchNormShape whole{rows_, kC};
  Vec y(x_.size()), mean(kC), rstd(kC), rm = running_mean0_, rv = running_var0_;
  batchnorm_forward_train_cpu<double>(whole, eps_, momentum_, x_.data(), gamma_.data(), beta_.data(), y.data(),
                                      mean.data(), rstd.data(), rm.data(), rv.data());
  Vec dx(x_.size()), dgamma(kC, 0.0), dbeta(kC, 0.0);
  batchnorm_backward_cpu<double>(whole, x_.data(), gamma_.data(), mean.data(), rstd.data(), dy_.data(), dx.data(),
                                 dgamma.data(), dbeta.data());

  const std::vector<RankState> ranks = run_ranks();
  Vec y_ranks, dx_ranks, dgamma_sum(kC, 0.0), dbeta_sum(kC, 0.0);
  for (const RankState& r : ranks) {
    EXPECT_EQ(r.total_count, double(rows_));
    EXPECT_LE(rel_l2(r.mean, mean), 1e-12);
    EXPECT_LE(rel_l2(r.rstd, rstd), 1e-12);
    EXPECT_LE(rel_l2(r.running_mean, rm), 1e-12);
    EXPECT_LE(rel_l2(r.running_var, rv), 1e-12);
    y_ranks.insert(y_ranks.end(), r.y.begin(), r.y.end());
    dx_ranks.insert(dx_ranks.end(), r.dx.begin(), r.dx.end());
    for (int64_t c = 0; c < kC; ++c) dgamma_sum[size_t(c)] += r.dgamma[size_t(c)], dbeta_sum[size_t(c)] += r.dbeta[size_t(c)];
  }
  EXPECT_LE(rel_l2(y_ranks, y), 1e-12);
  EXPECT_LE(rel_l2(dx_ranks, dx), 1e-12);
  EXPECT_LE(rel_l2(dgamma_sum, dgamma), 1e-12);
  EXPECT_LE(rel_l2(dbeta_sum, dbeta), 1e-12);
}

TEST_F(BatchNormSync, EveryRankHoldsTheSameStatisticsBitForBit) {
  const std::vector<RankState> ranks = run_ranks();
  for (size_t i = 1; i < ranks.size(); ++i) {
    EXPECT_EQ(ranks[i].mean, ranks[0].mean) << "rank " << i;
    EXPECT_EQ(ranks[i].rstd, ranks[0].rstd) << "rank " << i;
    EXPECT_EQ(ranks[i].running_mean, ranks[0].running_mean) << "rank " << i;
    EXPECT_EQ(ranks[i].running_var, ranks[0].running_var) << "rank " << i;
  }
  // The statistics differ from a rank's own: the sync did something.
  Vec own_mean(kC), own_rstd(kC);
  Vec y(size_t(ranks[1].rows * kC));
  batchnorm_forward_train_cpu<double>({ranks[1].rows, kC}, eps_, momentum_, at(x_, ranks[1]), gamma_.data(),
                                      beta_.data(), y.data(), own_mean.data(), own_rstd.data(), nullptr, nullptr);
  EXPECT_GT(rel_l2(own_mean, ranks[1].mean), 1e-3);
}

TEST_F(BatchNormSync, CombinedMomentsMatchTheTwoPassDefinition) {
  // One channel, three ranks, means far from zero: Chan's combination against the direct sums.
  const Vec a = random_vector<double>(7, 7, 100, 101), b = random_vector<double>(2, 8, 99, 100),
            c = random_vector<double>(11, 9, 100, 102);
  Vec all = a;
  all.insert(all.end(), b.begin(), b.end());
  all.insert(all.end(), c.begin(), c.end());
  Vec gathered;
  for (const Vec* part : {&a, &b, &c}) {
    Vec m(size_t(batchnorm_moments_size(1)));
    batchnorm_moments_cpu<double>({int64_t(part->size()), 1}, part->data(), m.data());
    gathered.insert(gathered.end(), m.begin(), m.end());
  }
  double mean = 0, var = 0, count = 0;
  batchnorm_combine_moments(gathered.data(), 3, 1, 0, &mean, &var, &count);
  double ref_mean = 0, ref_var = 0;
  for (double v : all) ref_mean += v / double(all.size());
  for (double v : all) ref_var += (v - ref_mean) * (v - ref_mean) / double(all.size());
  EXPECT_EQ(count, double(all.size()));
  EXPECT_NEAR(mean, ref_mean, 1e-12 * ref_mean);
  EXPECT_NEAR(var, ref_var, 1e-10 * ref_var);
}

TEST_F(BatchNormSync, OneRowInAllIsAnError) {
  const Vec x{0.5, 1.5};
  Vec moments(size_t(batchnorm_moments_size(2))), mean(2), rstd(2);
  batchnorm_moments_cpu<double>({1, 2}, x.data(), moments.data());
  EXPECT_THROW(batchnorm_finish_moments_cpu<double>(2, 1, moments.data(), eps_, momentum_, mean.data(), rstd.data(),
                                                    nullptr, nullptr, nullptr),
               Error);
}

TEST_F(BatchNormSync, BackwardRejectsATotalSmallerThanTheRank) {
  const Vec sums(size_t(batchnorm_grad_sums_size(kC)), 1.0);
  Vec dx(x_.size()), dgamma(kC, 0.0), dbeta(kC, 0.0);
  try {
    batchnorm_backward_from_sums_cpu<double>({rows_, kC}, x_.data(), gamma_.data(), gamma_.data(), gamma_.data(),
                                             dy_.data(), sums.data(), sums.data(), double(rows_ - 1), dx.data(),
                                             dgamma.data(), dbeta.data());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("smaller than this rank's"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kd
