// Which implementation the CPU path's fp32 matrix products and convolutions use.
//   onednn     oneDNN (Debian's libdnnl, the library PyTorch runs on the CPU): its JIT sgemm for
//              every fp32 matrix product, and its convolutions for those with a spatial kernel
//              (conv_onednn.h). It picks its instruction set from CPUID, so it is fast on CPUs
//              that OpenBLAS 0.3.21 does not know (docs/perf-notes.md: it falls back to SSE3
//              "Prescott" kernels on Sapphire/Emerald Rapids, 4-5x slower).
//   reference  kd's own: im2col + OpenBLAS (or the blocked loop), direct depthwise loops. The
//              reference the tests compare the fast path with.
// The default is onednn when kd was built with it. KD_CPU_BACKEND=reference|onednn in the
// environment sets the starting value (tests and `kd bench` comparisons); run.cpu_backend does
// the same for a run. fp64 (the gradient checker) always takes the reference.
#pragma once
#include <string>

namespace kd {

enum class CpuBackend { reference = 0, onednn = 1 };

bool onednn_built();
CpuBackend cpu_backend();
// Throws kd::Error when onednn is asked for in a build without it.
void set_cpu_backend(CpuBackend b);
const char* cpu_backend_name(CpuBackend b);
// "auto" (onednn when built, else reference), "onednn" or "reference"; throws naming the value.
CpuBackend parse_cpu_backend(const std::string& name);
// "onednn 2.6.3 (avx512_core)" or "reference (OpenBLAS Prescott)": what a run log records.
std::string cpu_backend_describe();

// Restores the previous backend when it goes out of scope (tests).
class ScopedCpuBackend {
 public:
  explicit ScopedCpuBackend(CpuBackend b) : saved_(cpu_backend()) { set_cpu_backend(b); }
  ~ScopedCpuBackend() { set_cpu_backend(saved_); }
  ScopedCpuBackend(const ScopedCpuBackend&) = delete;
  ScopedCpuBackend& operator=(const ScopedCpuBackend&) = delete;

 private:
  CpuBackend saved_;
};

}  // namespace kd
