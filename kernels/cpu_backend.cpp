#include "kernels/cpu_backend.h"

#include <atomic>
#include <cstdlib>
#include <sstream>

#include "kernels/check.h"

#if KD_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif
#if KD_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace kd {

bool onednn_built() { return KD_HAVE_ONEDNN != 0; }

const char* cpu_backend_name(CpuBackend b) { return b == CpuBackend::onednn ? "onednn" : "reference"; }

CpuBackend parse_cpu_backend(const std::string& name) {
  if (name == "auto") return onednn_built() ? CpuBackend::onednn : CpuBackend::reference;
  if (name == "reference") return CpuBackend::reference;
  if (name == "onednn") {
    KD_CHECK(onednn_built(), "CPU backend 'onednn': this kd was built without oneDNN (install libdnnl-dev and "
                             "rebuild, or use 'reference')");
    return CpuBackend::onednn;
  }
  KD_FAIL("CPU backend '", name, "' is not one of auto, onednn, reference");
}

namespace {
CpuBackend initial_backend() {
  const char* env = std::getenv("KD_CPU_BACKEND");
  return parse_cpu_backend(env && *env ? env : "auto");
}
std::atomic<int>& backend_slot() {
  static std::atomic<int> slot{int(initial_backend())};
  return slot;
}
}  // namespace

CpuBackend cpu_backend() { return CpuBackend(backend_slot().load(std::memory_order_relaxed)); }

void set_cpu_backend(CpuBackend b) {
  KD_CHECK(b != CpuBackend::onednn || onednn_built(), "CPU backend 'onednn': this kd was built without oneDNN");
  backend_slot().store(int(b), std::memory_order_relaxed);
}

std::string cpu_backend_describe() {
  std::ostringstream o;
  o << cpu_backend_name(cpu_backend());
#if KD_HAVE_ONEDNN
  if (cpu_backend() == CpuBackend::onednn) {
    const dnnl_version_t* v = dnnl_version();
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    const char* isa_name = isa == dnnl_cpu_isa_avx512_core_amx    ? "avx512_core_amx"
                           : isa == dnnl_cpu_isa_avx512_core_bf16 ? "avx512_core_bf16"
                           : isa == dnnl_cpu_isa_avx512_core_vnni ? "avx512_core_vnni"
                           : isa == dnnl_cpu_isa_avx512_core      ? "avx512_core"
                           : isa == dnnl_cpu_isa_avx2_vnni        ? "avx2_vnni"
                           : isa == dnnl_cpu_isa_avx2             ? "avx2"
                                                                  : "older than avx2";
    o << " " << v->major << "." << v->minor << "." << v->patch << " (" << isa_name << ")";
  }
#endif
#if KD_HAVE_OPENBLAS
  o << ", OpenBLAS " << openblas_get_corename();
#endif
  return o.str();
}

}  // namespace kd
