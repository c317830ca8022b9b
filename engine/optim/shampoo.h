// Shampoo with grafting (docs/shampoo.md): the optimizer is made by Optimizer::create for
// optim.name = "shampoo"; what is declared here is the part tests and tools look at directly.
#pragma once
#include <cstdint>
#include <vector>

namespace kd {

// The owner rank of each root job (cost: n^3 for an n x n statistic): the largest job first, to
// the least loaded rank (ties: the lower rank, the earlier job), so every rank computes about the
// same share. The same on every rank: a pure function of the costs and the rank count.
std::vector<int> assign_root_jobs(const std::vector<double>& costs, int ranks);

}  // namespace kd
