#include "tools/cli/bench_comm.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace kd::cli {

std::vector<AllReduceRate> measure_all_reduce(Communicator& comm, Context& ctx, const std::vector<int64_t>& sizes,
                                              int reps) {
  std::vector<AllReduceRate> out;
  for (int64_t bytes : sizes) {
    const int64_t count = std::max<int64_t>(1, bytes / 4);
    Tensor buffer = Tensor::empty({count}, DType::f32, ctx);
    Tensor host = Tensor::zeros_cpu({count}, DType::f32);
    for (int64_t i = 0; i < count; ++i) host.data<float>()[i] = float(i % 7) * 0.25f;  // sums stay exact
    buffer.copy_from(host, &ctx);
    std::vector<double> times;
    for (int r = 0; r < reps + 2; ++r) {
      comm.barrier();
      const auto start = std::chrono::steady_clock::now();
      const CommTicket t = comm.all_reduce(buffer.raw(), count, DType::f32, ReduceOp::sum, ctx);
      comm.wait(t, ctx);
      ctx.synchronize();
      double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      comm.all_reduce_host(&seconds, 1, ReduceOp::max);  // the slowest rank's time
      if (r >= 2) times.push_back(seconds);
    }
    std::sort(times.begin(), times.end());
    AllReduceRate rate;
    rate.bytes = count * 4;
    rate.seconds = times[times.size() / 2];
    rate.algbw = double(rate.bytes) / rate.seconds;
    rate.busbw = rate.algbw * 2.0 * double(comm.size() - 1) / double(comm.size());
    out.push_back(rate);
  }
  return out;
}

void print_all_reduce(const Communicator& comm, const std::vector<AllReduceRate>& rates) {
  if (comm.rank() != 0) return;
  std::printf("all-reduce (f32, in place) over %s\n", comm.describe().c_str());
  std::printf("%12s %12s %12s %12s\n", "bytes", "time (us)", "algbw GB/s", "busbw GB/s");
  for (const AllReduceRate& r : rates)
    std::printf("%12lld %12.1f %12.3f %12.3f\n", (long long)r.bytes, r.seconds * 1e6, r.algbw / 1e9, r.busbw / 1e9);
  for (const AllReduceRate& r : rates)
    std::printf(
        "RESULT {\"tool\": \"kd-allreduce\", \"transport\": \"%s\", \"ranks\": %d, \"bytes\": %lld, "
        "\"seconds\": %.6g, \"algbw_gbps\": %.4f, \"busbw_gbps\": %.4f}\n",
        comm.transport(), comm.size(), (long long)r.bytes, r.seconds, r.algbw / 1e9, r.busbw / 1e9);
}

}  // namespace kd::cli
