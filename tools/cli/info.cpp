#include "tools/cli/info.h"

#include <omp.h>

#include <cstdio>

#include "engine/comm_mpi.h"
#include "engine/comm_nccl.h"
#include "engine/context.h"
#include "engine/launch.h"
#include "engine/version.h"
#include "train/distributed.h"
#if KD_HAVE_CUDA
#include <nccl.h>

#include "kernels/cuda_check.h"
#endif

namespace kd::cli {

namespace {

void print_info() {
  std::printf("kd %s, built %s with %s\n", kVersion, __DATE__, KD_HAVE_CUDA ? "CUDA" : "no CUDA (CPU only)");
  std::printf("cpu: %d OpenMP threads, OpenBLAS %s\n", omp_get_max_threads(), KD_HAVE_OPENBLAS ? "yes" : "no");
  // This process in its job, as the launcher's environment describes it, and how it would talk.
  const LaunchInfo launch = detect_launch();
  std::string why;
  const bool gpu = cuda_available(&why);
  std::printf("rank: %d of %d (local %d of %d), launched by %s\n", launch.rank, launch.size, launch.local_rank,
              launch.local_size, launch.launcher.c_str());
  std::printf("transport: %s (comm.backend = auto on %s)\n", choose_backend("auto", launch.size, gpu).c_str(),
              gpu ? "GPUs" : "the CPU");
  std::printf("mpi: %s\n", mpi_library_version().c_str());
  if (!KD_HAVE_CUDA) std::printf("nccl: %s\n", nccl_version().c_str());
#if KD_HAVE_CUDA
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  std::printf("cuda: runtime %d.%d, driver %d.%d\n", runtime / 1000, runtime % 1000 / 10, driver / 1000,
              driver % 1000 / 10);
  const size_t cudnn = cudnnGetVersion();
  std::printf("cudnn: loaded %zu.%zu.%zu, compiled against %d.%d.%d%s\n", cudnn / 10000, cudnn % 10000 / 100,
              cudnn % 100, CUDNN_MAJOR, CUDNN_MINOR, CUDNN_PATCHLEVEL,
              cudnn < size_t(CUDNN_MAJOR * 10000) ? "  (OLDER MAJOR VERSION THAN THE HEADERS)" : "");
  std::printf("cublasLt: loaded %zu\n", cublasLtGetVersion());
  int nccl = 0;
  ncclGetVersion(&nccl);
  std::printf("nccl: %s loaded (%d), compiled against %d\n", nccl_version().c_str(), nccl, NCCL_VERSION_CODE);
  if (!gpu) {
    std::printf("devices: none (%s)\n", why.c_str());
    return;
  }
  int count = 0;
  KD_CUDA_CHECK(cudaGetDeviceCount(&count));
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    KD_CUDA_CHECK(cudaGetDeviceProperties(&p, i));
    std::printf("device %d: %s, sm_%d%d, %d SMs, %.1f GiB\n", i, p.name, p.major, p.minor, p.multiProcessorCount,
                double(p.totalGlobalMem) / double(1ull << 30));
  }
#endif
}

}  // namespace

void add_info_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("info", "Library versions (compiled and loaded) and devices");
  cmd->callback([] { print_info(); });
}

}  // namespace kd::cli
