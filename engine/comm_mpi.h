// The MPI communicator (CPU tensors) and the process-wide MPI runtime. kd uses MPI only when a
// job was launched by an MPI launcher (mpirun, or srun with PMIx) and kd was built with Open MPI
// (KD_HAVE_MPI); a plain `kd distill` never initialises MPI.
//
// Hang detection: every collective carries a sequence number, and each rank tells every other
// rank, on a communicator of its own, which collective it has reached (an 8-byte message per peer
// and collective). A collective still open after comm.timeout_s names the ranks that never
// reached it, then MPI_Abort ends the job (mpirun then kills every rank, stopped ones included).
#pragma once
#include <memory>
#include <string>

#include "engine/comm.h"

namespace kd {

bool mpi_built();  // kd was built with Open MPI
// The MPI library's version line ("Open MPI v4.1.4, ..."), or "not built".
std::string mpi_library_version();
// Initialises MPI (once per process; finalised at exit) and returns a communicator over
// MPI_COMM_WORLD. Throws when kd was built without MPI.
std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions& options);
// Ends the job from any rank (MPI_Abort when MPI is initialised, else exit) after printing why.
[[noreturn]] void abort_job(const std::string& why, int exit_code);
// After an error on this rank (already reported): in an MPI job of several ranks, MPI_Abort, so
// the other ranks end now instead of waiting for this one until their timeout. Else nothing.
void abort_peers_after_error(int exit_code);

}  // namespace kd
