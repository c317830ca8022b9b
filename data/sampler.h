// The sample order of a training run as a pure function of (seed, step): the stream of samples
// is the concatenation of seeded per-epoch permutations of the dataset, and step s takes
// positions [s * batch, (s + 1) * batch) of it. Resuming at any step needs no saved state, and
// data-parallel ranks take their slice of each global batch.
//
// Shard-aware order (packed shards, data.kind = shards): reading one shard at a time needs an
// order that stays inside a few shards for a while. Each epoch the shards are permuted by
// (seed, epoch) and taken in groups of `shuffle_shards` consecutive shards of that permutation;
// the samples of a group are shuffled together (a shuffle buffer spanning the group), and the
// groups follow each other. Every sample still comes once per epoch, and the order is still a
// pure function of (seed, step); only the mixing is local: two samples of different groups
// never share a batch, except in the batch that straddles two groups.
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

namespace kd {

// The samples of each shard: shard k holds samples[begin[k] .. begin[k + 1]).
struct ShardLayout {
  std::vector<int64_t> samples;
  std::vector<int64_t> begin;  // shards + 1 entries
  int64_t shuffle_shards = 4;  // consecutive shards (of the epoch's shard order) shuffled together
  int64_t shards() const { return int64_t(begin.size()) - 1; }
};
// The layout of samples 0..n-1 whose shard is shard_of[i] (>= 0); shards are numbered densely.
ShardLayout shard_layout(const std::vector<int>& shard_of, int64_t shuffle_shards);

class EpochSampler {
 public:
  EpochSampler(int64_t dataset_size, int64_t global_batch, uint64_t seed, int rank = 0, int world_size = 1);
  // The shard-aware order over the samples of `layout` (a partition of 0..n-1).
  EpochSampler(ShardLayout layout, int64_t global_batch, uint64_t seed, int rank = 0, int world_size = 1);
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
  ShardLayout layout_;  // no shards: a permutation of the whole dataset per epoch
  std::mutex mutex_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> cached_;
};

// Fisher-Yates shuffle of 0..n-1 driven by the counter-based generator (kernels/random.h).
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed, uint64_t stream);
// One epoch of the shard-aware order (see the top of this file).
std::vector<int64_t> shard_epoch_order(const ShardLayout& layout, uint64_t seed, int64_t epoch);

}  // namespace kd
