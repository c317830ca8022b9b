// Bringing up the ranks of a job: who this process is (the launcher's environment), which
// device it drives (LOCAL_RANK picks the GPU), which transport carries its collectives, and a
// start-up check that every rank runs the same thing (kd version, resolved configuration,
// checkpoint step, a checksum of the initial parameters): ranks that disagree refuse to run,
// naming what differs, instead of training different models under one name.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "engine/comm.h"
#include "engine/launch.h"
#include "engine/param.h"
#include "train/options.h"

namespace kd {

struct Distributed {
  LaunchInfo launch;
  std::string device;                  // run.device resolved for this rank (engine/launch.h gpu_for_local_rank)
  std::unique_ptr<Context> ctx;        // this rank's device
  std::unique_ptr<Communicator> comm;  // destroyed before the context
};

// Reads the launch environment, makes this rank's context (LOCAL_RANK picks the GPU) and starts
// the transport comm.backend names.
Distributed start_distributed(const ParallelOptions& options, const std::string& device);
// The transport comm.backend = auto chooses: local for one rank, nccl on GPUs, mpi on CPUs.
std::string choose_backend(const std::string& backend, int world_size, bool on_gpu);

struct RankFingerprint {
  std::string version;
  uint64_t config_hash = 0;
  int64_t start_step = 0;
  uint64_t params_checksum = 0;
  std::string encode() const;
};
// Throws on every rank, naming the ranks and fields that differ from rank 0's; when the
// configurations differ, also the first lines that do (resolved_config: this rank's).
void check_ranks_agree(Communicator& comm, const RankFingerprint& mine, const std::string& resolved_config);

uint64_t fnv1a64(const void* data, size_t bytes, uint64_t hash = 0xcbf29ce484222325ull);
// Of the parameter values as stored (host copy of the flat buffer).
uint64_t params_checksum(const ParamStore& params, Context& ctx);

}  // namespace kd
