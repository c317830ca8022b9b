#include "tools/cli/info.h"

#include <omp.h>

#include <cstdio>

#include "engine/context.h"
#if KD_HAVE_CUDA
#include <nccl.h>

#include "kernels/cuda_check.h"
#endif

namespace kd::cli {

namespace {

void print_info() {
  std::printf("kd 0.1, built %s with %s\n", __DATE__, KD_HAVE_CUDA ? "CUDA" : "no CUDA (CPU only)");
  std::printf("cpu: %d OpenMP threads, OpenBLAS %s\n", omp_get_max_threads(), KD_HAVE_OPENBLAS ? "yes" : "no");
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
  std::printf("nccl: loaded %d, compiled against %d\n", nccl, NCCL_VERSION_CODE);
  std::string why;
  if (!cuda_available(&why)) {
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
