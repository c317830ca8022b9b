#include "train/distributed.h"

#include <cstdio>
#include <sstream>

#include "engine/bootstrap.h"
#include "engine/comm_mpi.h"
#include "engine/comm_nccl.h"

namespace kd {

std::string choose_backend(const std::string& backend, int world_size, bool on_gpu) {
  if (backend != "auto") return backend;
  if (world_size == 1) return "local";
  return on_gpu ? "nccl" : "mpi";
}

namespace {

// "auto" and "cuda" go to the rank's own GPU on a multi-GPU node; cpu and cuda:N stay as given.
std::string device_for_rank(const std::string& device, const LaunchInfo& launch) {
  if (device == "cpu" || device.rfind("cuda:", 0) == 0) return device;
  std::string why;
  const bool gpu = cuda_available(&why);
  KD_CHECK(device != "cuda" || gpu, "run.device = cuda but no CUDA device is usable: ", why);
  if (!gpu) return "cpu";
  return "cuda:" + std::to_string(gpu_for_local_rank(launch.local_rank, launch.local_size, cuda_device_count()));
}

}  // namespace

Distributed start_distributed(const ParallelOptions& options, const std::string& device) {
  Distributed d;
  d.launch = detect_launch();
  d.device = device_for_rank(device, d.launch);
  const bool on_gpu = d.device != "cpu";
  const std::string backend = choose_backend(options.backend, d.launch.size, on_gpu);
  CommOptions co;
  co.timeout_s = options.timeout_s;
  if (backend == "local") {
    KD_CHECK(d.launch.size == 1, "comm.backend = local, but the launcher (", d.launch.launcher, ") started ",
             d.launch.size, " ranks; use mpi (CPU) or nccl (GPU), or auto");
    d.comm = make_local_communicator();
  } else if (backend == "mpi") {
    KD_CHECK(!on_gpu, "comm.backend = mpi carries CPU tensors; on GPUs use nccl (or run.device = cpu)");
    KD_CHECK(d.launch.launcher == "mpi" || d.launch.launcher == "slurm" || d.launch.size == 1,
             "comm.backend = mpi needs an MPI launch (mpirun or srun --mpi=pmix); this job was launched by ",
             d.launch.launcher, " (", d.launch.describe(), ")");
    d.comm = make_mpi_communicator(co);
    KD_CHECK(d.comm->size() == d.launch.size && d.comm->rank() == d.launch.rank, "MPI sees rank ", d.comm->rank(),
             " of ", d.comm->size(), " but the environment says ", d.launch.describe(),
             " (srun without --mpi=pmix starts independent MPI singletons)");
  } else if (backend == "nccl") {
    KD_CHECK(on_gpu, "comm.backend = nccl needs GPUs (run.device = cuda); CPU runs use mpi");
    // The unique id travels over MPI when mpirun started the job (and kd has MPI), else over TCP.
    std::unique_ptr<Bootstrap> bootstrap;
    if (d.launch.size == 1)
      bootstrap = make_local_bootstrap();
    else if (d.launch.launcher == "mpi" && mpi_built())
      bootstrap = make_comm_bootstrap(make_mpi_communicator(co));
    else
      bootstrap = make_tcp_bootstrap(d.launch, options.timeout_s);
    d.ctx = make_context(d.device);
    d.comm = make_nccl_communicator(std::move(bootstrap), *d.ctx, co);
  } else {
    KD_FAIL("comm.backend = '", backend, "' is not one of auto, local, mpi, nccl");
  }
  if (!d.ctx) d.ctx = make_context(d.device);
  return d;
}

std::string RankFingerprint::encode() const {
  std::ostringstream o;
  o << "kd version=" << version << "\nconfig hash=" << config_hash << "\ncheckpoint step=" << start_step
    << "\nparameter checksum=" << params_checksum << "\n";
  return o.str();
}

namespace {
std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}
}  // namespace

void check_ranks_agree(Communicator& comm, const RankFingerprint& mine, const std::string& resolved_config) {
  if (comm.size() == 1) return;
  const std::vector<std::string> all = comm.all_gather_host(mine.encode());
  const auto lines = split_lines;
  const std::vector<std::string> reference = lines(all[0]);
  std::string differences;
  for (size_t r = 1; r < all.size(); ++r) {
    const std::vector<std::string> other = lines(all[r]);
    for (size_t i = 0; i < reference.size(); ++i) {
      const std::string theirs = i < other.size() ? other[i] : "(missing)";
      if (theirs == reference[i]) continue;
      differences += "\n  rank " + std::to_string(r) + ": " + theirs +
                     " (rank 0: " + reference[i].substr(reference[i].find('=') + 1) + ")";
    }
  }
  // Which settings differ: rank 0's configuration against each other rank's (every rank takes
  // part, since every rank saw the same fingerprints).
  bool configs_differ = false;
  for (const std::string& f : all) configs_differ |= split_lines(f)[1] != reference[1];
  if (configs_differ) {
    const std::vector<std::string> configs = comm.all_gather_host(resolved_config);
    const std::vector<std::string> base = split_lines(configs[0]);
    for (size_t r = 1; r < configs.size(); ++r) {
      const std::vector<std::string> other = split_lines(configs[r]);
      int shown = 0;
      for (size_t i = 0; i < std::max(base.size(), other.size()) && shown < 5; ++i) {
        const std::string a = i < base.size() ? base[i] : "", b = i < other.size() ? other[i] : "";
        if (a == b) continue;
        differences += "\n    rank " + std::to_string(r) + " has '" + b + "' where rank 0 has '" + a + "'";
        ++shown;
      }
    }
  }
  KD_CHECK(differences.empty(),
           "the ranks of this job disagree, so it would train different models under one name; every rank must "
           "run the same kd with the same configuration from the same checkpoint:",
           differences);
}

uint64_t fnv1a64(const void* data, size_t bytes, uint64_t hash) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 0x100000001b3ull;
  return hash;
}

uint64_t params_checksum(const ParamStore& params, Context& ctx) {
  const Tensor host = params.values().to(Device::cpu, &ctx);
  return fnv1a64(host.raw(), host.nbytes());
}

}  // namespace kd
