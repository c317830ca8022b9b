// The sample order of a training run as a pure function of (seed, step): the stream of samples
// is the concatenation of seeded per-epoch permutations of the dataset, and step s takes
// positions [s * batch, (s + 1) * batch) of it. Resuming at any step needs no saved state, and
// data-parallel ranks take their slice of each global batch.
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

namespace kd {

class EpochSampler {
 public:
  EpochSampler(int64_t dataset_size, int64_t global_batch, uint64_t seed, int rank = 0, int world_size = 1);
  // Source indices of this rank's part of global batch `step`: global slots
  // [first_slot(), first_slot() + local_batch()).
  std::vector<int64_t> indices(int64_t step);
  // The source index of any global slot of batch `step`.
  int64_t index_at(int64_t step, int64_t global_slot);
  // The image a rank mixes its first slot with: global slot (first_slot() - 1) mod batch.
  int64_t partner_index(int64_t step);
  int64_t local_batch() const { return global_batch_ / world_size_; }
  int64_t first_slot() const { return rank_ * local_batch(); }
  int64_t global_batch() const { return global_batch_; }
  double epoch_of(int64_t step) const { return double(step) * double(global_batch_) / double(size_); }
  int64_t steps_per_epoch() const { return (size_ + global_batch_ - 1) / global_batch_; }

 private:
  const std::vector<int64_t>& permutation(int64_t epoch);
  int64_t size_, global_batch_;
  uint64_t seed_;
  int rank_, world_size_;
  std::mutex mutex_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> cached_;
};

// Fisher-Yates shuffle of 0..n-1 driven by the counter-based generator (kernels/random.h).
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed, uint64_t stream);

}  // namespace kd
