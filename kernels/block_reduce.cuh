// Block-wide reductions for the one-block-per-row kernels (distill_loss.cu, softmax.cu): CUB's
// BlockReduce, whose result only thread 0 holds, followed by a broadcast through shared memory so
// that every thread continues with it. Include only from .cu files.
#pragma once
#include <cub/block/block_reduce.cuh>
#include <cub/util_type.cuh>

#include "kernels/softmax.h"

namespace kd::gpu {

// Shared memory of one all-reduce of T over THREADS threads. Trivially constructible, so it can
// be a __shared__ variable or a member of a __shared__ union.
template <typename T, int THREADS>
struct AllReduceStorage {
  typename cub::BlockReduce<T, THREADS>::TempStorage reduce;
  cub::Uninitialized<T> result;
};

// Every thread calls it with its partial value and gets the block's reduction. Ends with a
// barrier, so the storage may be reused by the next call right away.
template <int THREADS, typename T, typename Op>
__device__ __forceinline__ T block_all_reduce(T partial, Op op, AllReduceStorage<T, THREADS>& storage) {
  const T total = cub::BlockReduce<T, THREADS>(storage.reduce).Reduce(partial, op);
  if (threadIdx.x == 0) storage.result.Alias() = total;
  __syncthreads();
  const T result = storage.result.Alias();
  __syncthreads();
  return result;
}

// softmax_stats_merge as a CUB reduction operator (associative and commutative).
struct SoftmaxStatsMerge {
  SoftmaxStatsSpec spec;
  __device__ __forceinline__ SoftmaxStats operator()(const SoftmaxStats& a, const SoftmaxStats& b) const {
    return softmax_stats_merge(a, b, spec);
  }
};

// Two float sums and a count in one reduction.
struct RowSums {
  float a, b;
  int32_t count;
};

struct RowSumsAdd {
  __device__ __forceinline__ RowSums operator()(const RowSums& x, const RowSums& y) const {
    return RowSums{x.a + y.a, x.b + y.b, x.count + y.count};
  }
};

}  // namespace kd::gpu
