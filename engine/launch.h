// Launch environment: which process of a multi-process run this is, read from the variables the
// launcher set. kd does not start its processes itself; mpirun, srun or a torchrun-style launcher
// does, and each tells its children their rank in its own variables:
//
//   launcher  variables (the first group present wins)
//   "mpi"     Open MPI:    OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE
//             PMIx:        PMIX_RANK; the size from OMPI_COMM_WORLD_SIZE or the Slurm step
//             MPICH/Hydra: PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS (Intel MPI too)
//   "env"     torchrun:    RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE
//   "slurm"   srun:        SLURM_PROCID, SLURM_STEP_NUM_TASKS (or SLURM_NTASKS), SLURM_LOCALID,
//                          and this node's entry of SLURM_STEP_TASKS_PER_NODE (or
//                          SLURM_TASKS_PER_NODE, SLURM_NTASKS_PER_NODE) at SLURM_NODEID
//   "single"  none of the above: rank 0 of 1
//
// "env" is checked before "slurm" on purpose: Slurm's variables are inherited by everything a
// srun task starts, so `srun torchrun ... kd` sees both, and only RANK/WORLD_SIZE describe the
// process itself. Slurm counts only inside a step that srun launched (SLURM_STEP_ID, or the older
// SLURM_STEPID, names a real step); an sbatch script or an salloc shell is "single". The MPI
// launchers take the node-local rank from their own variables and, when those are missing, from
// the Slurm step's (srun --mpi=pmix / pmi2 sets only the global ones). The "env" launcher is
// chosen when RANK or WORLD_SIZE is set; LOCAL_RANK alone does not make a multi-process run.
// A variable set to the empty string counts as unset.
//
// The rendezvous address (engine/tcp_store.h) is MASTER_ADDR:MASTER_PORT for every launcher.
// When MASTER_ADDR is unset: if srun started this process directly (a Slurm step whose
// SLURM_PROCID and task count equal the rank and size found above), the first host of
// SLURM_STEP_NODELIST (else SLURM_JOB_NODELIST, SLURM_NODELIST) -- srun places task 0 on its first
// node, except under --distribution=arbitrary, which then needs MASTER_ADDR; otherwise
// 127.0.0.1. A run whose ranks span several nodes (local_size < size) with the 127.0.0.1 default
// is an error: the other nodes could not reach rank 0 (mpirun: pass -x MASTER_ADDR=<rank 0's
// host>). MASTER_PORT defaults to 29500.
//
// Errors (kd::Error) name the variable and its value: a value that is not a decimal integer, a
// rank outside [0, size), a local rank outside [0, local_size), size < 1, local_size > size, a
// port outside [1, 65535], a launcher whose rank variable is set but not its size.
#pragma once
#include <cstdlib>
#include <functional>
#include <string>

namespace kd {

struct LaunchInfo {
  int rank = 0, size = 1;              // this process among all of the run's processes
  int local_rank = 0, local_size = 1;  // among those on this node; picks the GPU
  std::string launcher;                // "single", "mpi", "slurm" or "env"
  std::string master_addr;             // where rank 0's TcpStore listens (host name or IPv4)
  int master_port = 0;
  // "rank 1 of 8 (local 1 of 4), launched by slurm, rendezvous at node01:29500"
  std::string describe() const;
};

// `getenv` is injectable for tests; it returns nullptr for an unset variable.
LaunchInfo detect_launch(const std::function<const char*(const char*)>& getenv = std::getenv);

// The GPU index a rank drives, given how many devices its process sees: its local rank when the
// node's ranks all see every GPU; 0 when each sees exactly one (a launcher that binds a GPU per
// task: Slurm's --gpus-per-task=1, a per-rank CUDA_VISIBLE_DEVICES). Anything else is an error
// naming the counts and CUDA_VISIBLE_DEVICES.
int gpu_for_local_rank(int local_rank, int local_size, int visible_devices);

// The first host of a Slurm node list: "node7" -> "node7", "a,b" -> "a",
// "gpu[01-04,07]" -> "gpu01", "r[1-2]-n[3,5],x" -> "r1-n3". Throws on an unclosed bracket or a
// bracket that does not start with a number; `what` names the list in the message.
std::string first_host_of_nodelist(const std::string& nodelist, const std::string& what = "node list");

}  // namespace kd
