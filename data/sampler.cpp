#include "data/sampler.h"

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
    cached_ = seeded_permutation(size_, seed_, 0x65706f6368ull ^ mix64(uint64_t(epoch)));  // "epoch"
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
