// How the row kernels over logits (distill_loss, cross_entropy: one block per row) read a row
// with 16-byte loads and stage it on chip. Host-testable: the CPU tests run this arithmetic.
//
// A row of n fp32 logits starts anywhere a float may (rows of 21,843 classes are not 16-byte
// aligned one after the other). It splits into a scalar head up to the first 16-byte boundary,
// whole float4 quads, and a scalar tail:
//   misalign = (address / 4) mod 4,  head = (4 - misalign) mod 4 (at most n),
//   quads = (n - head) / 4,  tail = n - head - 4 quads.
// A row staged in shared memory keeps its global row's 16-byte phase: it starts `misalign`
// floats into its region, so element c of the copy is 16-byte aligned exactly where element c of
// the global row is, and the same quads load from one and store to the other as float4.
#pragma once
#include <cstdint>

#include "kernels/common.h"

namespace kd {

struct RowQuads {
  int32_t head = 0, quads = 0, tail = 0;
};

KD_HD int32_t float_misalignment(const float* p) { return int32_t((reinterpret_cast<uintptr_t>(p) >> 2) & 3u); }

KD_HD RowQuads row_quads(int32_t n, int32_t misalign) {
  RowQuads q;
  q.head = (4 - misalign) & 3;
  if (q.head > n) q.head = n;
  q.quads = (n - q.head) / 4;
  q.tail = n - q.head - 4 * q.quads;
  return q;
}

// Thread `tid` of THREADS visits its share of a row: `one(c)` for single elements (head, tail),
// `four(c)` for the quad c..c+3 (c 16-byte aligned in the row's memory). Over the threads every
// element is visited exactly once; consecutive threads take consecutive quads (coalesced).
template <int THREADS, typename One, typename Four>
KD_HD void visit_row(const RowQuads& q, int32_t tid, One&& one, Four&& four) {
  if (tid < q.head) one(tid);
#ifdef __CUDA_ARCH__
#pragma unroll 2
#endif
  for (int32_t i = tid; i < q.quads; i += THREADS) four(q.head + 4 * i);
  if (tid < q.tail) one(q.head + 4 * q.quads + tid);
}

// A row kernel's launch: `row_count` logit rows of `classes` per block (distill_loss: the student
// and each teacher; cross_entropy: one), after `header_bytes` (a multiple of 16) of per-row
// statistics in dynamic shared memory. The rows are staged there (read from global memory once)
// when header + row_count * row_stride floats fit `max_shared_bytes`, the dynamic shared memory a
// block may have on the device (48 KiB without opt-in; ~227 KiB on Hopper with it), else the
// later passes re-read global memory, where the rows just read are still in L2.
struct LogitRowsPlan {
  static constexpr int64_t kDefaultSharedBytes = 48 * 1024;  // every device, no opt-in
  int threads = 128;
  bool cache_rows = false;
  int64_t row_stride = 0;    // floats between staged rows: round_up(classes + 3, 4)
  int64_t shared_bytes = 0;  // dynamic shared memory per block
};
// threads: 128 up to 1,024 classes, 256 to 4,096, 512 to 8,192, 1,024 beyond (a staged row of
// ImageNet-21k's 21,843 classes leaves room for one block per SM: it takes all the threads).
LogitRowsPlan logit_rows_plan(int64_t classes, int64_t row_count, int64_t header_bytes, int64_t max_shared_bytes);

}  // namespace kd
