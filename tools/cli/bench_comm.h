// The communication part of `kd bench --comm`: all-reduce bandwidth of the job's transport over
// message sizes, reported as nccl-tests do: algorithm bandwidth (bytes / time) and bus bandwidth
// (algbw x 2 (n - 1) / n, what each link carries in a ring all-reduce, comparable across rank
// counts and with the link's bandwidth).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/comm.h"

namespace kd::cli {

struct AllReduceRate {
  int64_t bytes = 0;
  double seconds = 0;           // median of the timed repetitions (slowest rank)
  double algbw = 0, busbw = 0;  // bytes/s
};

// f32 in-place all-reduces of `sizes` bytes (rounded to whole floats), `reps` timed after 2
// untimed; every rank must call it. On a GPU the buffer is device memory and each repetition is
// timed from the host after the stream synchronises.
std::vector<AllReduceRate> measure_all_reduce(Communicator& comm, Context& ctx, const std::vector<int64_t>& sizes,
                                              int reps);
// The table (rank 0 prints it) and one RESULT line per size.
void print_all_reduce(const Communicator& comm, const std::vector<AllReduceRate>& rates);

}  // namespace kd::cli
