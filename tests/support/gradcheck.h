// The one gradient checker every backward test uses: central finite differences in double.
// The scalar under test is L = sum(out * probe) for a fixed random probe, so the analytic side
// is simply backward(probe). Elements are compared with |a - n| <= tol * max(|a|, |n|, 1)
// (Caffe's GradientChecker threshold), on all elements or a random sample of large inputs.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kd::test {

using Vec = std::vector<double>;

struct GradInput {
  std::string name;
  Vec* values;  // perturbed in place during the check, restored afterwards
};

// forward(): outputs as one flat vector, from the current input values.
// backward(dout): gradients of sum(out * dout) w.r.t. each input, in the order of `inputs`.
void expect_gradients_match(const std::vector<GradInput>& inputs, const std::function<Vec()>& forward,
                            const std::function<std::vector<Vec>(const Vec& dout)>& backward, double tol = 1e-6,
                            int max_checks_per_input = 300, double step = 1e-6, uint64_t seed = 7);

}  // namespace kd::test
