#include "data/sampler.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "kernels/check.h"
#include "kernels/random.h"

namespace kd {

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed, uint64_t stream) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = int64_t(random_bits(seed, stream, uint64_t(i)) % uint64_t(i + 1));
    std::swap(p[size_t(i)], p[size_t(j)]);
  }
  return p;
}

ShardLayout shard_layout(const std::vector<int>& shard_of, int64_t shuffle_shards) {
  KD_CHECK(shuffle_shards >= 1, "sampler: shuffle_shards must be at least 1, got ", shuffle_shards);
  ShardLayout layout;
  layout.shuffle_shards = shuffle_shards;
  int shards = 0;
  for (size_t i = 0; i < shard_of.size(); ++i) {
    KD_CHECK(shard_of[i] >= 0, "sampler: sample ", i, " has no shard");
    shards = std::max(shards, shard_of[i] + 1);
  }
  // Counting sort by shard: begin[k + 1] counts shard k first, then becomes a running sum.
  layout.begin.assign(size_t(shards) + 1, 0);
  for (int k : shard_of) ++layout.begin[size_t(k) + 1];
  for (int k = 0; k < shards; ++k) layout.begin[size_t(k) + 1] += layout.begin[size_t(k)];
  layout.samples.resize(shard_of.size());
  std::vector<int64_t> next(layout.begin.begin(), layout.begin.end() - 1);
  for (size_t i = 0; i < shard_of.size(); ++i) layout.samples[size_t(next[size_t(shard_of[i])]++)] = int64_t(i);
  return layout;
}

std::vector<int64_t> shard_epoch_order(const ShardLayout& layout, uint64_t seed, int64_t epoch) {
  const int64_t shards = layout.shards(), group = layout.shuffle_shards;
  const std::vector<int64_t> shard_order = seeded_permutation(shards, seed, 0x7368617264ull ^ mix64(uint64_t(epoch)));  // "shard"
  std::vector<int64_t> order, pool;
  order.reserve(layout.samples.size());
  for (int64_t first = 0; first < shards; first += group) {
    pool.clear();
    for (int64_t g = first; g < std::min(first + group, shards); ++g) {
      const int64_t k = shard_order[size_t(g)];
      pool.insert(pool.end(), layout.samples.begin() + layout.begin[size_t(k)],
                  layout.samples.begin() + layout.begin[size_t(k) + 1]);
    }
    const uint64_t stream = mix64(0x67726f7570ull ^ mix64(uint64_t(epoch))) ^ uint64_t(first);  // "group"
    for (int64_t j : seeded_permutation(int64_t(pool.size()), seed, stream)) order.push_back(pool[size_t(j)]);
  }
  return order;
}

EpochSampler::EpochSampler(ShardLayout layout, int64_t global_batch, uint64_t seed, int rank, int world_size)
    : EpochSampler(int64_t(layout.samples.size()), global_batch, seed, rank, world_size) {
  KD_CHECK(layout.shards() >= 1 && layout.begin.front() == 0 && layout.begin.back() == size_,
           "sampler: the shard layout does not cover its ", size_, " samples");
  KD_CHECK(layout.shuffle_shards >= 1, "sampler: shuffle_shards must be at least 1, got ", layout.shuffle_shards);
  std::vector<bool> seen(size_t(size_), false);
  for (int64_t i : layout.samples) {
    KD_CHECK(i >= 0 && i < size_ && !seen[size_t(i)], "sampler: the shard layout lists sample ", i,
             " twice or out of range");
    seen[size_t(i)] = true;
  }
  layout_ = std::move(layout);
}

EpochSampler::EpochSampler(int64_t dataset_size, int64_t global_batch, uint64_t seed, int rank, int world_size)
    : size_(dataset_size), global_batch_(global_batch), seed_(seed), rank_(rank), world_size_(world_size) {
  KD_CHECK(dataset_size > 0, "sampler: the dataset is empty");
  KD_CHECK(global_batch > 0, "sampler: batch size must be positive, got ", global_batch);
  KD_CHECK(world_size > 0 && rank >= 0 && rank < world_size, "sampler: rank ", rank, " outside world of ", world_size);
  KD_CHECK(global_batch % world_size == 0, "sampler: batch size ", global_batch, " is not divisible by ", world_size,
           " ranks");
}

const std::vector<int64_t>& EpochSampler::permutation(int64_t epoch) {
  if (epoch != cached_epoch_) {
    cached_ = layout_.shards() > 0 ? shard_epoch_order(layout_, seed_, epoch)
                                   : seeded_permutation(size_, seed_, 0x65706f6368ull ^ mix64(uint64_t(epoch)));  // "epoch"
    cached_epoch_ = epoch;
  }
  return cached_;
}

int64_t EpochSampler::index_at(int64_t step, int64_t global_slot) {
  KD_CHECK(step >= 0, "sampler: negative step ", step);
  KD_CHECK(global_slot >= 0 && global_slot < global_batch_, "sampler: slot ", global_slot, " outside a batch of ",
           global_batch_);
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t position = step * global_batch_ + global_slot;
  return permutation(position / size_)[size_t(position % size_)];
}

std::vector<int64_t> EpochSampler::indices(int64_t step) {
  const int64_t local = local_batch();
  std::vector<int64_t> out(static_cast<size_t>(local));
  for (int64_t j = 0; j < local; ++j) out[size_t(j)] = index_at(step, first_slot() + j);
  return out;
}

int64_t EpochSampler::partner_index(int64_t step) {
  return index_at(step, (first_slot() + global_batch_ - 1) % global_batch_);
}

}  // namespace kd
