// Communicator: the collectives of data-parallel training, behind one interface.
//   local  one rank; collectives are no-ops (all_gather copies)
//   mpi    CPU tensors over Open MPI (built when KD_HAVE_MPI)
//   nccl   GPU tensors over NCCL on a stream of its own, ordered with the compute stream by
//          events, never by a host wait (built with CUDA)
//
// Data collectives start at once and return a ticket; wait() completes one (MPI: polls it;
// NCCL: makes the context's stream wait for it), wait_all() every ticket outstanding. Every
// rank issues the same collectives in the same order. A collective that does not finish within
// the timeout ends the job with a message naming the collective and, where the transport can
// tell, the ranks that never reached it (MPI_Abort / ncclCommAbort): a hung rank is never a
// silent hang.
//
// The host control plane (all_reduce_host, all_gather_host, barrier) carries small host values:
// the step's loss and stop flag, the start-up agreement check. It blocks, with the same timeout.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/context.h"
#include "engine/tensor.h"

namespace kd {

enum class ReduceOp : uint8_t { sum, avg, max };

struct CommOptions {
  double timeout_s = 300;  // a collective open longer than this ends the job
};

struct CommTicket {
  int64_t id = -1;
  bool valid() const { return id >= 0; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  int rank() const { return rank_; }
  int size() const { return size_; }
  virtual const char* transport() const = 0;  // "local", "mpi", "nccl"
  virtual bool accepts(Device d) const = 0;   // can the data collectives read buffers on d
  virtual std::string describe() const;       // "mpi: rank 1 of 4"

  // In place over `count` elements (f32, f64, i32 or i64) at `data`.
  virtual CommTicket all_reduce(void* data, int64_t count, DType dtype, ReduceOp op, Context& ctx) = 0;
  virtual CommTicket broadcast(void* data, int64_t count, DType dtype, int root, Context& ctx) = 0;
  // recv holds size() * count elements, rank r's at r * count.
  virtual CommTicket all_gather(const void* send, void* recv, int64_t count, DType dtype, Context& ctx) = 0;
  virtual void wait(CommTicket ticket, Context& ctx) = 0;
  virtual void wait_all(Context& ctx) = 0;
  // Lets the transport advance collectives in flight (MPI has no progress thread); cheap.
  virtual void progress() {}

  // CUDA graphs (engine/cuda_graph.h): whether the data collectives may be issued while the
  // context's stream is being captured (NCCL: they become nodes of the graph, and the timeout
  // cannot watch them one by one), and the timeout watching a whole launch instead: the work
  // queued on the context's stream so far (a replay of `what`) must finish within it.
  virtual bool captures_collectives() const { return false; }
  virtual void watch_launch(Context&, const std::string&) {}
  // After a capture that failed: forgets the collectives issued into it (none of them ran).
  virtual void abandon_captured() {}

  virtual void all_reduce_host(double* values, int64_t count, ReduceOp op) = 0;
  virtual std::vector<std::string> all_gather_host(const std::string& mine) = 0;
  virtual void barrier() = 0;

 protected:
  Communicator(int rank, int size) : rank_(rank), size_(size) {}
  int rank_, size_;
};

std::unique_ptr<Communicator> make_local_communicator();

// Bytes of one element of a dtype the collectives carry; throws for others.
size_t comm_element_size(DType dtype);

}  // namespace kd
