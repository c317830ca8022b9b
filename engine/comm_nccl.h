// The NCCL communicator: GPU buffers, one rank per GPU. Collectives run on a stream of their own;
// each waits for an event recorded on the compute stream when it was issued, and wait() makes the
// compute stream wait for the collective's completion event: the host never waits for NCCL.
// A watchdog thread polls the completion events and NCCL's asynchronous error state; a
// collective open past comm.timeout_s (or an NCCL error) aborts the communicator
// (ncclCommAbort) and ends the process with a message naming the collective, so a hung peer
// never hangs the job silently. The host control plane goes over the bootstrap.
#pragma once
#include <memory>

#include "engine/bootstrap.h"
#include "engine/comm.h"

namespace kd {

bool nccl_built();
// ctx: this rank's CUDA context (its device is the rank's GPU). The unique id travels from rank
// 0 over `bootstrap`, which the communicator keeps for its host control plane.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Bootstrap> bootstrap, Context& ctx,
                                                     const CommOptions& options);
// NCCL's version as "2.28.9" (the library loaded at run time), or "not built".
std::string nccl_version();

}  // namespace kd
