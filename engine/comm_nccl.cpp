#include "engine/comm_nccl.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

#if KD_HAVE_CUDA
#include <cuda_runtime.h>
#include <nccl.h>

#include "kernels/cuda_check.h"
#endif

namespace kd {

#if KD_HAVE_CUDA

bool nccl_built() { return true; }

std::string nccl_version() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "unknown";
  // NCCL >= 2.9 encodes major * 10000 + minor * 100 + patch
  return std::to_string(v / 10000) + "." + std::to_string(v % 10000 / 100) + "." + std::to_string(v % 100);
}

namespace {

using Clock = std::chrono::steady_clock;

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
    case DType::i32:
      return ncclInt32;
    case DType::i64:
      return ncclInt64;
    default:
      KD_FAIL("NCCL collectives carry f32, f64, i32 or i64 here, not ", dtype_name(dtype));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return ncclSum;
    case ReduceOp::avg:
      return ncclAvg;
    case ReduceOp::max:
      return ncclMax;
  }
  return ncclSum;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Bootstrap> bootstrap, Context& ctx, const CommOptions& options)
      : Communicator(bootstrap->rank(), bootstrap->size()),
        bootstrap_(std::move(bootstrap)),
        options_(options),
        device_(ctx.device_index()) {
    KD_CHECK(ctx.is_cuda(), "NCCL needs a CUDA context (run.device = cuda)");
    KD_CUDA_CHECK(cudaSetDevice(device_));
    // Rank 0 makes the unique id; the bootstrap hands it to everyone.
    std::vector<uint8_t> id_bytes(sizeof(ncclUniqueId));
    ncclUniqueId id{};
    if (rank_ == 0) {
      check(ncclGetUniqueId(&id), "ncclGetUniqueId");
      std::memcpy(id_bytes.data(), &id, sizeof id);
    }
    bootstrap_->broadcast(id_bytes, 0);
    KD_CHECK(id_bytes.size() == sizeof id, "NCCL bootstrap: the unique id arrived with ", id_bytes.size(), " bytes");
    std::memcpy(&id, id_bytes.data(), sizeof id);
    // Non-blocking: initialisation and every call can be polled against the timeout.
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    check(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config), "ncclCommInitRankConfig");
    await("ncclCommInitRankConfig (every rank must start within comm.timeout_s)");
    KD_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    watchdog_ = std::thread([this] { watch(); });
  }

  ~NcclCommunicator() override {
    // The NCCL stream's last work is awaited only so long, with the watchdog still on: a
    // collective no peer joins (this rank leaving early) would otherwise hang the process at exit.
    // While an exception unwinds, the job is ending anyway: a short wait, then the abort.
    const double limit = std::uncaught_exceptions() > 0 ? std::min(options_.timeout_s, 10.0) : options_.timeout_s;
    const bool drained =
        !stream_ || wait_until_done([this] { return cudaStreamQuery(stream_) != cudaErrorNotReady; }, limit);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    if (!drained && comm_) {
      std::fprintf(stderr,
                   "kd: warning: rank %d (nccl on cuda:%d): collectives still queued at exit after %d s; "
                   "aborting the communicator\n",
                   rank_, device_, int(limit));
      abort_once();
      comm_ = nullptr;
    }
    for (auto& [id, op] : in_flight_) cudaEventDestroy(op.done);
    for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
    for (cudaEvent_t e : graph_events_) cudaEventDestroy(e);
    if (comm_) {
      // Non-blocking: finalize flushes the communicator's work, polled to the end (bounded), then
      // the destroy frees it.
      ncclResult_t state = ncclCommFinalize(comm_);
      const bool finalized = (state == ncclSuccess || state == ncclInProgress) &&
                             wait_until_done(
                                 [this] {
                                   ncclResult_t s = ncclSuccess;
                                   return ncclCommGetAsyncError(comm_, &s) != ncclSuccess || s != ncclInProgress;
                                 },
                                 std::min(options_.timeout_s, 30.0));
      if (finalized) {
        ncclCommDestroy(comm_);
      } else {
        abort_once();
      }
    }
    if (stream_) cudaStreamDestroy(stream_);
  }

  const char* transport() const override { return "nccl"; }
  bool accepts(Device d) const override { return d == Device::cuda; }
  std::string describe() const override {
    return "nccl " + nccl_version() + ": rank " + std::to_string(rank_) + " of " + std::to_string(size_) +
           " on cuda:" + std::to_string(device_) + " (bootstrap " + bootstrap_->kind() + ")";
  }

  CommTicket all_reduce(void* data, int64_t count, DType dtype, ReduceOp op, Context& ctx) override {
    const std::string what = "all-reduce of " + std::to_string(count) + " " + dtype_name(dtype);
    begin(ctx);
    {
      std::lock_guard<std::mutex> calls(nccl_mu_);
      check(ncclAllReduce(data, data, size_t(count), nccl_type(dtype), nccl_op(op), comm_, stream_), "ncclAllReduce");
    }
    await(what);
    return end(what);
  }

  CommTicket broadcast(void* data, int64_t count, DType dtype, int root, Context& ctx) override {
    KD_CHECK(root >= 0 && root < size_, "broadcast from rank ", root, " in a world of ", size_);
    const std::string what = "broadcast of " + std::to_string(count) + " " + dtype_name(dtype);
    begin(ctx);
    {
      std::lock_guard<std::mutex> calls(nccl_mu_);
      check(ncclBroadcast(data, data, size_t(count), nccl_type(dtype), root, comm_, stream_), "ncclBroadcast");
    }
    await(what);
    return end(what);
  }

  CommTicket all_gather(const void* send, void* recv, int64_t count, DType dtype, Context& ctx) override {
    const std::string what = "all-gather of " + std::to_string(count) + " " + dtype_name(dtype) + " per rank";
    begin(ctx);
    {
      std::lock_guard<std::mutex> calls(nccl_mu_);
      check(ncclAllGather(send, recv, size_t(count), nccl_type(dtype), comm_, stream_), "ncclAllGather");
    }
    await(what);
    return end(what);
  }

  void wait(CommTicket ticket, Context& ctx) override {
    cudaEvent_t done = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = in_flight_.find(ticket.id);
      if (it == in_flight_.end() || it->second.waited) return;
      done = it->second.done;  // (only this thread retires or reuses it: it is not waited yet)
    }
    // The CUDA call outside the lock: were it to block, the watchdog must still be able to abort.
    KD_CUDA_CHECK(cudaStreamWaitEvent(ctx.cuda_handles().stream, done, 0));
    std::lock_guard<std::mutex> lock(mu_);
    auto it = in_flight_.find(ticket.id);
    if (it == in_flight_.end()) return;
    it->second.waited = true;
    if (it->second.captured) {
      // Its event belongs to the graph now (querying it would break the capture): kept aside,
      // never reused, destroyed with the communicator.
      graph_events_.push_back(it->second.done);
      in_flight_.erase(it);
    } else if (it->second.completed) {
      retire(it);
    }
  }

  bool captures_collectives() const override { return true; }

  void abandon_captured() override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = in_flight_.begin(); it != in_flight_.end();)
      if (it->second.captured) {
        graph_events_.push_back(it->second.done);
        it = in_flight_.erase(it);
      } else {
        ++it;
      }
  }

  void watch_launch(Context& ctx, const std::string& what) override {
    cudaEvent_t done = take_event();
    KD_CUDA_CHECK(cudaEventRecord(done, ctx.cuda_handles().stream));
    std::lock_guard<std::mutex> lock(mu_);
    InFlight& op = in_flight_[next_id_++];
    op.done = done;
    op.started = Clock::now();
    op.what = what;
    op.waited = true;  // nobody waits for it: the watchdog retires it once it completed
  }

  void wait_all(Context& ctx) override {
    std::vector<int64_t> ids;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [id, op] : in_flight_)
        if (!op.waited) ids.push_back(id);
    }
    for (int64_t id : ids) wait(CommTicket{id}, ctx);
  }

  // Deterministic on every rank: all values gathered, then reduced in rank order.
  void all_reduce_host(double* values, int64_t count, ReduceOp op) override {
    std::vector<uint8_t> mine(size_t(count) * sizeof(double));
    std::memcpy(mine.data(), values, mine.size());
    const auto all = bootstrap_->all_gather(mine);
    for (int64_t i = 0; i < count; ++i) {
      double acc = 0;
      for (size_t r = 0; r < all.size(); ++r) {
        double v;
        std::memcpy(&v, all[r].data() + size_t(i) * sizeof(double), sizeof v);
        acc = r == 0 ? v : op == ReduceOp::max ? std::max(acc, v) : acc + v;
      }
      values[i] = op == ReduceOp::avg ? acc / double(size_) : acc;
    }
  }

  std::vector<std::string> all_gather_host(const std::string& mine) override {
    const auto all = bootstrap_->all_gather(std::vector<uint8_t>(mine.begin(), mine.end()));
    std::vector<std::string> out;
    for (const auto& blob : all) out.emplace_back(blob.begin(), blob.end());
    return out;
  }

  void barrier() override { bootstrap_->barrier(); }

 private:
  // A collective issued and not yet both completed (seen by the watchdog) and waited for (its
  // event handed to the compute stream); its event returns to the pool when both hold.
  struct InFlight {
    cudaEvent_t done = nullptr;
    Clock::time_point started;
    std::string what;
    bool completed = false, waited = false;
    bool captured = false;  // issued during a CUDA graph capture: not watched (watch_launch is)
  };
  using InFlightMap = std::map<int64_t, InFlight>;

  void retire(InFlightMap::iterator it) {  // called with mu_ held
    free_events_.push_back(it->second.done);
    in_flight_.erase(it);
  }

  void check(ncclResult_t r, const char* call) {
    if (r == ncclSuccess || r == ncclInProgress) return;
    KD_FAIL("NCCL: ", call, " failed on rank ", rank_, ": ", ncclGetErrorString(r), " (", ncclGetLastError(comm_), ")");
  }

  // A non-blocking communicator may still be enqueueing the last call: poll until it is done.
  void await(const std::string& what) {
    const auto started = Clock::now();
    for (;;) {
      ncclResult_t state = ncclSuccess;
      {
        std::lock_guard<std::mutex> calls(nccl_mu_);
        check(ncclCommGetAsyncError(comm_, &state), "ncclCommGetAsyncError");
      }
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) fail(what + ": " + ncclGetErrorString(state));
      if (std::chrono::duration<double>(Clock::now() - started).count() > options_.timeout_s)
        fail(what + " was not accepted within comm.timeout_s = " + std::to_string(int(options_.timeout_s)) + " s");
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  // Orders the collective after the work enqueued so far on the compute stream.
  void begin(Context& ctx) {
    KD_CHECK(ctx.is_cuda() && ctx.device_index() == device_, "NCCL collective on ", ctx.describe(),
             ", the communicator is on cuda:", device_);
    cudaEvent_t ready = take_event();
    KD_CUDA_CHECK(cudaEventRecord(ready, ctx.cuda_handles().stream));
    KD_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));  // (captured: the NCCL stream joins the capture)
    capturing_ = ctx.capturing();
    if (capturing_) {
      std::lock_guard<std::mutex> lock(mu_);
      graph_events_.push_back(ready);  // recorded inside the capture: never reused
    } else {
      give_event(ready);  // safe: the wait is enqueued, the event may be recorded again
    }
  }

  CommTicket end(const std::string& what) {
    cudaEvent_t done = take_event();
    KD_CUDA_CHECK(cudaEventRecord(done, stream_));
    const int64_t id = next_id_++;
    std::lock_guard<std::mutex> lock(mu_);
    InFlight& op = in_flight_[id];
    op.done = done;
    op.started = Clock::now();
    op.what = what;
    op.captured = capturing_;
    return CommTicket{id};
  }

  cudaEvent_t take_event() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_events_.empty()) {
        cudaEvent_t e = free_events_.back();
        free_events_.pop_back();
        return e;
      }
    }
    cudaEvent_t e = nullptr;  // (created outside the lock)
    KD_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }

  void give_event(cudaEvent_t e) {
    std::lock_guard<std::mutex> lock(mu_);
    free_events_.push_back(e);
  }

  // The watchdog: completed collectives leave the list; one open past the timeout, or an NCCL
  // error, ends the process.
  void watch() {
    // A new thread starts on device 0: without this, its first CUDA call would create a context
    // on GPU 0 in every rank's process (~0.5 GiB each there).
    const cudaError_t device_set = cudaSetDevice(device_);
    if (device_set != cudaSuccess)
      fail(std::string("the watchdog could not select the device: ") + cudaGetErrorString(device_set));
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, std::chrono::milliseconds(100));
      for (auto it = in_flight_.begin(); it != in_flight_.end();) {
        InFlight& op = it->second;
        if (op.captured) {  // a node of a graph being captured: its launch is watched instead
          ++it;
          continue;
        }
        if (!op.completed) {
          const cudaError_t q = cudaEventQuery(op.done);
          if (q == cudaSuccess) {
            op.completed = true;
          } else if (q != cudaErrorNotReady) {
            fail(op.what + ": CUDA error " + cudaGetErrorString(q));
          } else if (std::chrono::duration<double>(Clock::now() - op.started).count() > options_.timeout_s) {
            fail(op.what + " did not complete within comm.timeout_s = " + std::to_string(int(options_.timeout_s)) +
                 " s (a peer rank stopped, hung or crashed)");
          }
        }
        if (op.completed && op.waited)
          retire(it++);
        else
          ++it;
      }
      // NCCL's calls on one communicator must not overlap across threads (ncclCommGetAsyncError may
      // complete a pending group job): skipped while the main thread is inside one; the events'
      // timeout above still fires if it never returns.
      std::unique_lock<std::mutex> calls(nccl_mu_, std::try_to_lock);
      ncclResult_t state = ncclSuccess;
      if (calls.owns_lock() && ncclCommGetAsyncError(comm_, &state) == ncclSuccess && state != ncclSuccess &&
          state != ncclInProgress)
        fail(std::string("NCCL reported an error: ") + ncclGetErrorString(state));
    }
  }

  [[noreturn]] void fail(const std::string& why) {
    if (failing_.exchange(true)) {  // the other thread is already failing: it ends the process
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    std::fprintf(stderr, "kd: error: rank %d (nccl on cuda:%d): %s. Aborting the communicator and the job.\n", rank_,
                 device_, why.c_str());
    std::fflush(stderr);
    abort_once();
    std::_Exit(75);
  }

  // ncclCommAbort, at most once (the watchdog and the main thread may both get here), outside
  // nccl_mu_: it is what unblocks a call stuck inside NCCL.
  void abort_once() {
    if (!aborted_.exchange(true)) ncclCommAbort(comm_);
  }

  // Polls done() every millisecond until it holds (true) or `seconds` passed (false).
  template <typename Done>
  static bool wait_until_done(Done done, double seconds) {
    const auto started = Clock::now();
    while (!done()) {
      if (std::chrono::duration<double>(Clock::now() - started).count() > seconds) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }

  std::unique_ptr<Bootstrap> bootstrap_;
  CommOptions options_;
  int device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int64_t next_id_ = 0;
  std::mutex mu_;       // guards in_flight_, free_events_, stopping_
  std::mutex nccl_mu_;  // held around every NCCL call on comm_ (they must not overlap across threads)
  std::atomic<bool> failing_{false}, aborted_{false};
  std::condition_variable cv_;
  bool stopping_ = false;
  InFlightMap in_flight_;
  std::vector<cudaEvent_t> free_events_;
  std::vector<cudaEvent_t> graph_events_;  // recorded inside a capture (the graph's nodes refer to them)
  bool capturing_ = false;                 // the collective being issued is captured
  std::thread watchdog_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Bootstrap> bootstrap, Context& ctx,
                                                     const CommOptions& options) {
  KD_CHECK(bootstrap != nullptr, "NCCL needs a bootstrap");
  KD_CHECK(options.timeout_s > 0, "comm.timeout_s must be positive, got ", options.timeout_s);
  return std::make_unique<NcclCommunicator>(std::move(bootstrap), ctx, options);
}

#else  // built without CUDA

bool nccl_built() { return false; }
std::string nccl_version() { return "not built"; }

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Bootstrap>, Context&, const CommOptions&) {
  KD_FAIL("kd was built without CUDA, so without NCCL; CPU runs use comm.backend = mpi");
}

#endif

}  // namespace kd
