#include "tests/support/gradcheck.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace kd::test {

void expect_gradients_match(const std::vector<GradInput>& inputs, const std::function<Vec()>& forward,
                            const std::function<std::vector<Vec>(const Vec& dout)>& backward, double tol,
                            int max_checks_per_input, double step, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  const Vec out0 = forward();
  ASSERT_FALSE(out0.empty()) << "forward produced no outputs";
  Vec probe(out0.size());
  for (double& p : probe) p = normal(rng);
  auto loss = [&]() {
    const Vec out = forward();
    return std::inner_product(out.begin(), out.end(), probe.begin(), 0.0);
  };
  const std::vector<Vec> analytic = backward(probe);
  ASSERT_EQ(analytic.size(), inputs.size()) << "backward returned the wrong number of gradients";

  for (size_t k = 0; k < inputs.size(); ++k) {
    Vec& x = *inputs[k].values;
    ASSERT_EQ(analytic[k].size(), x.size()) << "gradient of " << inputs[k].name << " has the wrong size";
    std::vector<size_t> order(x.size());
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    order.resize(std::min<size_t>(order.size(), size_t(max_checks_per_input)));
    int failures = 0;
    double nonzero = 0;
    for (size_t i : order) {
      const double saved = x[i];
      x[i] = saved + step;
      const double up = loss();
      x[i] = saved - step;
      const double down = loss();
      x[i] = saved;
      const double numeric = (up - down) / (2 * step);
      const double a = analytic[k][i];
      nonzero += std::abs(numeric);
      const double scale = std::max({std::abs(a), std::abs(numeric), 1.0});
      if (!(std::abs(a - numeric) <= tol * scale) && failures++ < 5)
        ADD_FAILURE() << inputs[k].name << "[" << i << "]: analytic " << a << " vs numeric " << numeric;
    }
    EXPECT_EQ(failures, 0) << failures << " of " << order.size() << " gradient entries of " << inputs[k].name
                           << " differ beyond " << tol;
    EXPECT_GT(nonzero, 0.0) << "all sampled numeric gradients of " << inputs[k].name
                            << " are zero: the check would not catch a wrong backward";
  }
}

}  // namespace kd::test
