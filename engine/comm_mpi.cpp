#include "engine/comm_mpi.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <list>
#include <map>
#include <thread>

#if KD_HAVE_MPI
#include <mpi.h>
#endif

namespace kd {

#if KD_HAVE_MPI

bool mpi_built() { return true; }

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(text, &length);  // allowed before MPI_Init
  std::string v(text, size_t(length));
  return v.substr(0, v.find_first_of(",\n"));
}

namespace {

void check_mpi(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  KD_FAIL("MPI: ", what, " failed: ", std::string(text, size_t(length)));
}

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::i32:
      return MPI_INT32_T;
    case DType::i64:
      return MPI_INT64_T;
    default:
      KD_FAIL("MPI collectives carry f32, f64, i32 or i64, not ", dtype_name(dtype));
  }
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::max ? MPI_MAX : MPI_SUM; }  // avg: sum, then / size

// MPI_Init once per process, MPI_Finalize at exit (unless the job was aborted).
struct MpiRuntime {
  MpiRuntime() {
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) {
      int provided = 0;
      check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      owned = true;
    }
  }
  ~MpiRuntime() {
    int done = 0;
    MPI_Finalized(&done);
    if (owned && !done) MPI_Finalize();
  }
  bool owned = false;
};

MpiRuntime& mpi_runtime() {
  static MpiRuntime runtime;
  return runtime;
}

using Clock = std::chrono::steady_clock;

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const CommOptions& options) : Communicator(world_rank(), world_size()), options_(options) {
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &data_comm_), "MPI_Comm_dup");
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &heartbeat_comm_), "MPI_Comm_dup");
    seen_.assign(size_t(size_), 0);
    heard_.assign(size_t(size_), 0);
    heard_requests_.assign(size_t(size_), MPI_REQUEST_NULL);
    for (int peer = 0; peer < size_; ++peer)
      if (peer != rank_) post_heartbeat_receive(peer);
  }

  ~MpiCommunicator() override {
    // Unwinding after an error: no polite shutdown (the peers may be anywhere); the caller
    // reports the error and ends the job (abort_peers_after_error).
    if (std::uncaught_exceptions() > 0) return;
    // Every rank reaches this after the same collectives, so each peer has sent exactly seq_
    // heartbeats: receive them all, then nothing is left in flight when MPI finalises.
    try {
      barrier();
      for (int peer = 0; peer < size_; ++peer)
        while (peer != rank_ && seen_[size_t(peer)] < seq_) {
          MPI_Wait(&heard_requests_[size_t(peer)], MPI_STATUS_IGNORE);
          seen_[size_t(peer)] = std::max(seen_[size_t(peer)], heard_[size_t(peer)]);
          post_heartbeat_receive(peer);
        }
      for (MPI_Request& r : heard_requests_)
        if (r != MPI_REQUEST_NULL) MPI_Cancel(&r), MPI_Wait(&r, MPI_STATUS_IGNORE);
      for (Heartbeat& h : sends_) MPI_Waitall(int(h.requests.size()), h.requests.data(), MPI_STATUSES_IGNORE);
      MPI_Comm_free(&heartbeat_comm_);
      MPI_Comm_free(&data_comm_);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kd: rank %d: MPI shutdown: %s\n", rank_, e.what());
    }
  }

  const char* transport() const override { return "mpi"; }
  bool accepts(Device d) const override { return d == Device::cpu; }

  CommTicket all_reduce(void* data, int64_t count, DType dtype, ReduceOp op, Context& ctx) override {
    check_cpu(ctx, "all_reduce");
    Pending& p = start("all-reduce of " + std::to_string(count) + " " + dtype_name(dtype));
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data, int_count(count), mpi_type(dtype), mpi_op(op), data_comm_, &p.request),
              "MPI_Iallreduce");
    if (op == ReduceOp::avg) p.average = {data, count, dtype};
    return p.ticket;
  }

  CommTicket broadcast(void* data, int64_t count, DType dtype, int root, Context& ctx) override {
    check_cpu(ctx, "broadcast");
    KD_CHECK(root >= 0 && root < size_, "broadcast from rank ", root, " in a world of ", size_);
    Pending& p =
        start("broadcast of " + std::to_string(count) + " " + dtype_name(dtype) + " from rank " + std::to_string(root));
    check_mpi(MPI_Ibcast(data, int_count(count), mpi_type(dtype), root, data_comm_, &p.request), "MPI_Ibcast");
    return p.ticket;
  }

  CommTicket all_gather(const void* send, void* recv, int64_t count, DType dtype, Context& ctx) override {
    check_cpu(ctx, "all_gather");
    Pending& p = start("all-gather of " + std::to_string(count) + " " + dtype_name(dtype) + " per rank");
    check_mpi(MPI_Iallgather(send, int_count(count), mpi_type(dtype), recv, int_count(count), mpi_type(dtype),
                             data_comm_, &p.request),
              "MPI_Iallgather");
    return p.ticket;
  }

  void wait(CommTicket ticket, Context&) override { finish(ticket); }

  void wait_all(Context& ctx) override {
    while (!pending_.empty()) wait(CommTicket{pending_.begin()->first}, ctx);
  }

  void progress() override {
    int flag = 0;
    for (auto& [id, p] : pending_)
      if (p.request != MPI_REQUEST_NULL) MPI_Test(&p.request, &flag, MPI_STATUS_IGNORE);
  }

  void all_reduce_host(double* values, int64_t count, ReduceOp op) override {
    Pending& p = start("host all-reduce of " + std::to_string(count) + " values");
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, values, int_count(count), MPI_DOUBLE, mpi_op(op), data_comm_, &p.request),
              "MPI_Iallreduce");
    if (op == ReduceOp::avg) p.average = {values, count, DType::f64};
    finish(p.ticket);
  }

  std::vector<std::string> all_gather_host(const std::string& mine) override {
    std::vector<int> lengths(static_cast<size_t>(size_), 0);
    int length = int_count(int64_t(mine.size()));
    {
      Pending& p = start("host all-gather of lengths");
      check_mpi(MPI_Iallgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, data_comm_, &p.request),
                "MPI_Iallgather");
      finish(p.ticket);
    }
    std::vector<int> offsets(size_t(size_), 0);
    for (int r = 1; r < size_; ++r) offsets[size_t(r)] = offsets[size_t(r - 1)] + lengths[size_t(r - 1)];
    std::string all(size_t(offsets.back() + lengths.back()), '\0');
    {
      Pending& p = start("host all-gather of " + std::to_string(all.size()) + " bytes");
      check_mpi(MPI_Iallgatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR,
                                data_comm_, &p.request),
                "MPI_Iallgatherv");
      finish(p.ticket);
    }
    std::vector<std::string> out;
    for (int r = 0; r < size_; ++r) out.push_back(all.substr(size_t(offsets[size_t(r)]), size_t(lengths[size_t(r)])));
    return out;
  }

  void barrier() override {
    Pending& p = start("barrier");
    check_mpi(MPI_Ibarrier(data_comm_, &p.request), "MPI_Ibarrier");
    finish(p.ticket);
  }

 private:
  struct Average {
    void* data = nullptr;
    int64_t count = 0;
    DType dtype = DType::f32;
  };
  struct Pending {
    CommTicket ticket;
    uint64_t seq = 0;
    std::string what;
    MPI_Request request = MPI_REQUEST_NULL;
    Average average;
    Clock::time_point started;
  };
  struct Heartbeat {
    std::unique_ptr<uint64_t> value;  // the send buffer, alive until the sends complete
    std::vector<MPI_Request> requests;
  };

  static int world_rank() {
    mpi_runtime();
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
  }
  static int world_size() {
    mpi_runtime();
    int s = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &s);
    return s;
  }
  static int int_count(int64_t count) {
    KD_CHECK(count >= 0 && count <= int64_t(0x7fffffff), "MPI: a collective of ", count,
             " elements does not fit MPI's int count; use smaller gradient buckets (comm.bucket_mb)");
    return int(count);
  }
  static void check_cpu(const Context& ctx, const char* op) {
    KD_CHECK(!ctx.is_cuda(), "MPI ", op, ": kd's MPI communicator carries host memory; GPU runs use NCCL");
  }

  // Opens collective number seq_ + 1 and tells every peer this rank has reached it.
  Pending& start(std::string what) {
    ++seq_;
    reap_heartbeats();
    Heartbeat h;
    h.value = std::make_unique<uint64_t>(seq_);
    for (int peer = 0; peer < size_; ++peer) {
      if (peer == rank_) continue;
      h.requests.emplace_back();
      check_mpi(MPI_Isend(h.value.get(), 1, MPI_UINT64_T, peer, 0, heartbeat_comm_, &h.requests.back()), "MPI_Isend");
    }
    sends_.push_back(std::move(h));
    const int64_t id = next_id_++;
    Pending& p = pending_[id];
    p.ticket = CommTicket{id};
    p.seq = seq_;
    p.what = std::move(what);
    p.started = Clock::now();
    return p;
  }

  void finish(CommTicket ticket) {
    auto it = pending_.find(ticket.id);
    if (it == pending_.end()) return;  // finished already
    complete(it->second);
    pending_.erase(it);
  }

  // Polls until the collective completes; past the timeout, names the missing ranks and aborts.
  void complete(Pending& p) {
    int flag = 0;
    for (int polls = 0;; ++polls) {
      check_mpi(MPI_Test(&p.request, &flag, MPI_STATUS_IGNORE), "MPI_Test");
      if (flag) break;
      poll_heartbeats();
      const double waited = std::chrono::duration<double>(Clock::now() - p.started).count();
      if (waited > options_.timeout_s) hung(p, waited);
      // Spin briefly, then sleep: ranks may share cores (mpirun --oversubscribe).
      if (polls > 64) std::this_thread::sleep_for(std::chrono::microseconds(polls > 1000 ? 1000 : 50));
    }
    if (p.average.data) {
      const double inv = 1.0 / double(size_);
      if (p.average.dtype == DType::f32) {
        float* x = static_cast<float*>(p.average.data);
        for (int64_t i = 0; i < p.average.count; ++i) x[i] = float(double(x[i]) * inv);
      } else if (p.average.dtype == DType::f64) {
        double* x = static_cast<double*>(p.average.data);
        for (int64_t i = 0; i < p.average.count; ++i) x[i] *= inv;
      } else {
        KD_FAIL("MPI: an average of ", dtype_name(p.average.dtype), " values");
      }
    }
  }

  [[noreturn]] void hung(const Pending& p, double waited) {
    poll_heartbeats();
    std::string missing, last;
    for (int peer = 0; peer < size_; ++peer) {
      if (peer == rank_ || seen_[size_t(peer)] >= p.seq) continue;
      missing += (missing.empty() ? "" : ", ") + std::to_string(peer);
      last += (last.empty() ? "" : ", ") + std::to_string(peer) + ": #" + std::to_string(seen_[size_t(peer)]);
    }
    std::string why = "rank " + std::to_string(rank_) + ": collective #" + std::to_string(p.seq) + " (" + p.what +
                      ") did not complete within comm.timeout_s = " + std::to_string(int(options_.timeout_s)) +
                      " s (waited " + std::to_string(int(waited)) + " s); ";
    if (!missing.empty())
      why += "rank(s) " + missing + " never reached it (last collective seen " + last +
             "): stopped, hung or far behind. Aborting the job.";
    else
      why += "every rank reached it, so one stopped inside it or the network failed. Aborting the job.";
    abort_job(why, 75);
  }

  void post_heartbeat_receive(int peer) {
    check_mpi(
        MPI_Irecv(&heard_[size_t(peer)], 1, MPI_UINT64_T, peer, 0, heartbeat_comm_, &heard_requests_[size_t(peer)]),
        "MPI_Irecv");
  }

  void poll_heartbeats() {
    for (int peer = 0; peer < size_; ++peer) {
      if (peer == rank_) continue;
      for (int flag = 1; flag;) {
        check_mpi(MPI_Test(&heard_requests_[size_t(peer)], &flag, MPI_STATUS_IGNORE), "MPI_Test");
        if (!flag) break;
        seen_[size_t(peer)] = std::max(seen_[size_t(peer)], heard_[size_t(peer)]);
        post_heartbeat_receive(peer);
      }
    }
  }

  // Drops heartbeat sends that have completed.
  void reap_heartbeats() {
    while (!sends_.empty()) {
      int done = 0;
      Heartbeat& h = sends_.front();
      MPI_Testall(int(h.requests.size()), h.requests.data(), &done, MPI_STATUSES_IGNORE);
      if (!done) break;
      sends_.pop_front();
    }
    poll_heartbeats();
  }

  CommOptions options_;
  MPI_Comm data_comm_ = MPI_COMM_NULL, heartbeat_comm_ = MPI_COMM_NULL;
  uint64_t seq_ = 0;
  std::vector<uint64_t> seen_, heard_;
  std::vector<MPI_Request> heard_requests_;
  std::list<Heartbeat> sends_;
  std::map<int64_t, Pending> pending_;
  int64_t next_id_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions& options) {
  KD_CHECK(options.timeout_s > 0, "comm.timeout_s must be positive, got ", options.timeout_s);
  return std::make_unique<MpiCommunicator>(options);
}

void abort_job(const std::string& why, int exit_code) {
  std::fprintf(stderr, "kd: error: %s\n", why.c_str());
  std::fflush(stderr);
  int ready = 0, done = 0;
  MPI_Initialized(&ready);
  MPI_Finalized(&done);
  if (ready && !done) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

void abort_peers_after_error(int exit_code) {
  int ready = 0, done = 0, size = 1;
  MPI_Initialized(&ready);
  MPI_Finalized(&done);
  if (!ready || done) return;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
}

#else  // built without MPI

bool mpi_built() { return false; }
std::string mpi_library_version() { return "not built"; }

std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions&) {
  KD_FAIL(
      "kd was built without MPI (Open MPI's libopenmpi-dev was not found at configure time); install it and "
      "rebuild, or run on GPUs (NCCL)");
}

void abort_job(const std::string& why, int exit_code) {
  std::fprintf(stderr, "kd: error: %s\n", why.c_str());
  std::fflush(stderr);
  std::_Exit(exit_code);
}

void abort_peers_after_error(int) {}

#endif

}  // namespace kd
