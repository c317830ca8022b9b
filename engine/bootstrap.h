// Bootstrap: the host-side rendezvous of a job's ranks. It carries what must travel before (or
// beside) the fast transport: NCCL's unique id from rank 0 to everyone, the start-up agreement
// check, and the small host control values of each step. Three ways:
//   local  one rank
//   tcp    rank 0 listens on MASTER_ADDR:MASTER_PORT (engine/tcp_store.h): torchrun-style and
//          Slurm launches, and the GPU machine, which has no MPI
//   mpi    over an MPI communicator's host plane, when the job was launched by mpirun
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kd {

class Communicator;
struct LaunchInfo;

class Bootstrap {
 public:
  virtual ~Bootstrap() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* kind() const = 0;
  virtual void broadcast(std::vector<uint8_t>& blob, int root) = 0;
  virtual std::vector<std::vector<uint8_t>> all_gather(const std::vector<uint8_t>& mine) = 0;
  virtual void barrier() = 0;
};

std::unique_ptr<Bootstrap> make_local_bootstrap();
std::unique_ptr<Bootstrap> make_tcp_bootstrap(const LaunchInfo& launch, double timeout_s);
// Over a communicator's host plane (an MPI communicator), which the bootstrap owns.
std::unique_ptr<Bootstrap> make_comm_bootstrap(std::unique_ptr<Communicator> comm);

}  // namespace kd
