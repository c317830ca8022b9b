// bench_kernels: kd's kernels, each timed next to its floor (the llm.c dev/cuda way).
//
// First the floors, measured in the same run: a large copy (device-to-device on a GPU, host memcpy
// on the CPU; bytes read + written) and the dense matrix-product rate (bf16 8192^3 through
// gemm_cuda; fp32 sgemm 1024^3 on the CPU), as engine/gemm_rate.h defines it for kd bench too.
// Then every benchmark (tools/bench/cases_*.cpp): its output checked once against the CPU reference (a wrong kernel prints FAIL and the exit status is
// 1), then timed: warm-up, then the median of many runs (CUDA events), each run on the next of
// enough copies of its buffers to exceed L2, and reported as GB/s (or TFLOP/s) and % of the floor.
//
//   bench_kernels [--device cpu|cuda|auto] [--quick] [--filter SUBSTRING] [--list]
//
// Without a GPU (--device cpu, or auto on a machine without one) the same benchmarks run the CPU
// references, in fp32 and at small sizes, checked against fp64. The last lines are one
// `RESULT {json}` per benchmark for tools/gpu_check.sh.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

#include "engine/gemm_rate.h"
#include "kernels/gemm.h"
#include "tools/bench/harness.h"
#if KD_HAVE_CUDA
#include "kernels/cuda_check.h"
#include "kernels/gemm_cuda.h"
#endif

namespace kd::bench {
namespace {

struct Args {
  std::string device = "auto", filter;
  bool quick = false, list = false;
};

const char* kUsage =
    "usage: bench_kernels [--device cpu|cuda|auto] [--quick] [--filter SUBSTRING] [--list]\n"
    "  --device  where to run (auto: cuda when a device is usable, else cpu)\n"
    "  --quick   small sizes and few repetitions (a smoke test, not a measurement)\n"
    "  --filter  run only the benchmarks whose name contains SUBSTRING (the floors always run)\n"
    "  --list    print the names of the benchmarks that would run, and exit\n";

bool parse_args(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--help" || arg == "-h") {
      std::printf("%s", kUsage);
      std::exit(0);
    }
    if (arg == "--quick") {
      a->quick = true;
    } else if (arg == "--list") {
      a->list = true;
    } else if (arg == "--device" && has_value) {
      a->device = argv[++i];
    } else if (arg == "--filter" && has_value) {
      a->filter = argv[++i];
    } else {
      return false;
    }
  }
  return true;
}

// ---- the floors ----

Case copy_case(const Env& env) {
  const int64_t bytes = (env.cuda ? (env.quick ? 128 : 512) : (env.quick ? 32 : 256)) * (int64_t(1) << 20);
  auto src = std::make_shared<Buf>(env, 1, bytes), dst = std::make_shared<Buf>(env, 1, bytes);
  src->fill_bytes(1), dst->fill_bytes(0);  // touch every page before timing
  Case c;
  c.shape = std::to_string(bytes >> 20) + " MiB " + (env.cuda ? "device-to-device" : "host memcpy");
  c.bytes = 2.0 * double(bytes);
  c.note = "floor.copy: bytes read + bytes written";
  c.run = [=, &env](int) {
    if (!env.cuda) {
      const int64_t chunk = int64_t(1) << 20;
#pragma omp parallel for schedule(static)
      for (int64_t off = 0; off < bytes; off += chunk)
        std::memcpy(dst->at<char>(0) + off, src->at<char>(0) + off, size_t(std::min(chunk, bytes - off)));
    }
    KD_BENCH_CUDA(if (env.cuda) KD_CUDA_CHECK(
        cudaMemcpyAsync(dst->at<char>(0), src->at<char>(0), size_t(bytes), cudaMemcpyDeviceToDevice, env.h().stream)));
  };
  return c;
}

Case gemm_case(const Env& env) {
  const int64_t n = gemm_rate_size(env.cuda, env.quick);
  // The operands of engine/gemm_rate.h (as bf16 values): the check below is of the product timed.
  auto operand = [n](int which) {
    auto v = std::make_shared<std::vector<float>>(static_cast<size_t>(n * n));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n * n; ++i) (*v)[size_t(i)] = bf16_to_float(float_to_bf16(gemm_rate_operand(which, i)));
    return v;
  };
  auto a = operand(0), b = operand(1);
  auto ba = std::make_shared<Buf>(act_buf(env, *a, 1)), bb = std::make_shared<Buf>(act_buf(env, *b, 1));
  auto bc = std::make_shared<Buf>(act_out(env, n * n, 1));
  Case c;
  c.shape = std::to_string(n) + "^3 " + (env.cuda ? "bf16 (fp32 accumulate)" : "fp32") + ", C = A B^T";
  c.flops = 2.0 * double(n) * double(n) * double(n);
  c.note = "floor.gemm: 2 n^3 (engine/gemm_rate.h: A B^T, distinct operands uniform in [-1, 1), median of ~0.25 s of runs)";
  c.run = [=, &env](int) {
    if (!env.cuda)
      gemm_cpu<float>(false, true, n, n, n, 1.0f, ba->at<float>(0), n, bb->at<float>(0), n, 0.0f, bc->at<float>(0), n);
    KD_BENCH_CUDA(if (env.cuda) gemm_cuda(env.h(), false, true, n, n, n, 1.0f, ba->at<bf16>(0), n, bb->at<bf16>(0), n,
                                          0.0f, bc->at<bf16>(0), n));
  };
  c.check = [=, &env, run = c.run] {  // the first two rows of C against fp64 dot products
    bc->fill_bytes(0xFF);
    run(0);
    std::vector<double> ref(static_cast<size_t>(2 * n));
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int64_t k = 0; k < n; ++k) dot += double((*a)[size_t(i * n + k)]) * double((*b)[size_t(j * n + k)]);
        ref[size_t(i * n + j)] = dot;
      }
    Check chk;
    chk.rel("C[0:2]", read_act(env, *bc), ref, env.tol_act(), ref.size());
    return chk;
  };
  return c;
}

// ---- printing ----

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}
std::string fmt_time(double s) {
  return s < 1e-3 ? fmt("%.1f us", s * 1e6) : s < 1 ? fmt("%.3f ms", s * 1e3) : fmt("%.3f s", s);
}
std::string fmt_work(const Result& r) {
  if (r.flops > 0) return r.flops >= 1e12 ? fmt("%.2f TFLOP", r.flops / 1e12) : fmt("%.2f GFLOP", r.flops / 1e9);
  return r.bytes >= 1e9 ? fmt("%.2f GB", r.bytes / 1e9) : fmt("%.2f MB", r.bytes / 1e6);
}
std::string fmt_rate(const Result& r) {
  if (r.flops > 0) return r.rate >= 1e12 ? fmt("%.1f TFLOP/s", r.rate / 1e12) : fmt("%.1f GFLOP/s", r.rate / 1e9);
  return fmt("%.1f GB/s", r.rate / 1e9);
}
std::string check_text(const Result& r) {
  if (!r.error.empty()) return "ERROR: " + r.error;
  if (!r.check.ran) return "-";
  return std::string(r.check.ok ? "ok" : "FAIL") + " (" + r.check.detail + ")";
}

void print_header() {
  std::printf("%-36s %-56s %11s %10s %10s %14s %7s  %s\n", "benchmark", "shape", "work", "floor", "median", "rate",
              "%floor", "check vs CPU reference (relative L2)");
}

void print_row(const Env& env, const Result& r) {
  const double floor_rate = r.floor_rate > 0 ? r.floor_rate : r.flops > 0 ? env.matmul_rate : env.copy_rate;
  const double floor_s = floor_rate > 0 ? (r.flops > 0 ? r.flops : r.bytes) / floor_rate : 0;
  if (!r.error.empty()) {
    std::printf("%-36s %-56s %11s %10s %10s %14s %7s  %s\n", r.name.c_str(), r.shape.c_str(), fmt_work(r).c_str(), "-",
                "-", "-", "-", check_text(r).c_str());
  } else {
    std::printf("%-36s %-56s %11s %10s %10s %14s %6.1f%%  %s\n", r.name.c_str(), r.shape.c_str(), fmt_work(r).c_str(),
                fmt_time(floor_s).c_str(), fmt_time(r.median_s).c_str(), fmt_rate(r).c_str(), 100 * r.floor_fraction,
                check_text(r).c_str());
  }
  std::fflush(stdout);
}

std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') o += '\\';
    if (uint8_t(ch) >= 0x20) o += ch;  // control characters dropped
  }
  return o + "\"";
}

void print_result_json(const std::string& device, bool env_cuda, const Result& r) {
  const bool compute = r.flops > 0;
  std::printf(
      "RESULT {\"tool\": \"bench_kernels\", \"device\": %s, \"name\": %s, \"shape\": %s, \"%s\": %.6g, "
      "\"median_ms\": %.6g, \"%s\": %.6g, \"floor\": \"%s\", \"floor_pct\": %.2f, \"reps\": %d, "
      "\"copies\": %d, \"check\": \"%s\", \"max_rel_err\": %.3g",
      json_string(device).c_str(), json_string(r.name).c_str(), json_string(r.shape).c_str(),
      compute ? "flops" : "bytes", compute ? r.flops : r.bytes, r.median_s * 1e3, compute ? "tflops" : "gbps",
      compute ? r.rate / 1e12 : r.rate / 1e9,
      !r.floor_name.empty() ? r.floor_name.c_str()
      : compute             ? (env_cuda ? "bf16_gemm" : "sgemm")
                            : "copy",
      100 * r.floor_fraction, r.reps, r.copies,
      !r.error.empty() ? "error"
      : !r.check.ran   ? "none"
      : r.check.ok     ? "ok"
                       : "FAIL",
      std::isfinite(r.check.max_err) ? r.check.max_err : -1.0);
  if (!r.error.empty()) std::printf(", \"error\": %s", json_string(r.error).c_str());
  std::printf("}\n");
}

int run(const Args& args) {
  Registry registry;
  add_loss_cases(registry);
  add_norm_cases(registry);
  add_pointwise_cases(registry);
  add_conv_cases(registry);
  add_shampoo_cases(registry);
  std::vector<const Entry*> chosen;
  for (const Entry& e : registry)
    if (e.name.find(args.filter) != std::string::npos) chosen.push_back(&e);
  if (args.list) {
    std::printf("floor.copy\nfloor.gemm\n");
    for (const Entry* e : chosen) std::printf("%s\n", e->name.c_str());
    return 0;
  }
  if (chosen.empty()) {
    std::fprintf(stderr, "bench_kernels: no benchmark name contains '%s' (--list shows them)\n", args.filter.c_str());
    return 2;
  }

  std::unique_ptr<Context> ctx = make_context(args.device);
  Env env;
  env.ctx = ctx.get();
  env.cuda = ctx->is_cuda();
  env.quick = args.quick;
  env.rotate_bytes = env.cuda ? (int64_t(128) << 20) : env.quick ? 0 : (int64_t(64) << 20);
  const std::string device = ctx->describe();
  std::printf("bench_kernels on %s%s (%d OpenMP threads for the CPU %s)\n", device.c_str(),
              args.quick ? ", --quick" : "", omp_get_max_threads(), env.cuda ? "references" : "kernels");
  if (env.rotate_bytes > 0)
    std::printf("inputs and outputs rotated over copies adding up to >= %lld MB%s", (long long)(env.rotate_bytes >> 20),
                env.cuda ? " (H100 L2: 50 MB)" : "");
  else
    std::printf("inputs not rotated (--quick on the CPU: caches not defeated, times not meaningful)");
  std::printf("; median of the runs (%s)\n\n",
              env.cuda ? "CUDA events, the host enqueueing ahead of the GPU" : "steady clock");
  print_header();

  std::vector<Result> results;
  // Floors first: the GEMM (which then keeps the GPU busy ahead of each timed series), then the copy.
  // floor.gemm: checked here, timed by engine/gemm_rate.h (the definition kd bench uses too).
  const Case gemm = gemm_case(env);
  {
    Result g;
    g.name = "floor.gemm", g.shape = gemm.shape, g.note = gemm.note, g.flops = gemm.flops;
    try {
      g.check = gemm.check();
      const GemmRate rate = measure_gemm_rate(*env.ctx, env.quick);
      g.median_s = rate.median_s, g.reps = rate.reps, g.rate = rate.flops_per_s;
    } catch (const std::exception& ex) {
      g.error = ex.what();
    }
    results.push_back(g);
  }
  env.matmul_rate = results.back().rate;
  const double gemm_s = results.back().median_s;
  if (env.cuda && gemm_s > 0)
    env.lead = [run = gemm.run, gemm_s](int reps) {
      const int count = int(std::clamp(std::ceil(reps * 20e-6 / gemm_s), 1.0, 64.0));  // ~20 us of host time a run
      for (int i = 0; i < count; ++i) run(0);
    };
  results.push_back(run_case(env, "floor.copy", copy_case(env)));
  env.copy_rate = results.back().rate;
  for (Result& r : results) r.floor_fraction = r.rate > 0 ? 1.0 : 0.0, print_row(env, r);

  for (const Entry* e : chosen) {
    Result r;
    try {
      r = run_case(env, e->name, e->make(env));
    } catch (const std::exception& ex) {  // building the inputs failed
      r.name = e->name, r.error = ex.what();
    }
    print_row(env, r);
    results.push_back(r);
  }

  int failed = 0;
  std::set<std::string> notes;
  std::printf("\nwork counted (essential bytes: every input read once, every output written once):\n");
  for (const Result& r : results)
    if (!r.note.empty() && notes.insert(r.note).second) std::printf("  %s\n", r.note.c_str());
  for (const Result& r : results) failed += r.failed() ? 1 : 0;
  std::printf("\n%zu benchmarks, %d failed\n", results.size(), failed);
  for (const Result& r : results) print_result_json(device, env.cuda, r);
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace kd::bench

int main(int argc, char** argv) {
  kd::bench::Args args;
  if (!kd::bench::parse_args(argc, argv, &args)) {
    std::fprintf(stderr, "%s", kd::bench::kUsage);
    return 2;
  }
  try {
    return kd::bench::run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kernels: %s\n", e.what());
    return 2;
  }
}
