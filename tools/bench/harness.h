// bench_kernels' harness: the environment (device, measured floors), buffers rotated over copies,
// output checks against the CPU references, and the Case each benchmark builds.
//
// A benchmark is an Entry: a name and a factory. The factory allocates its inputs (random,
// seeded), and returns a Case: the essential bytes (or FLOPs) of one run, the op bound to copy k of
// its buffers, and a check that runs the op once on fresh outputs and compares them with the CPU
// reference. On a GPU the op is the kernel's `_cuda` function (bf16 activations, fp32 parameters);
// on the CPU it is the `_cpu` function in fp32, checked against the same function in fp64 (or, for
// ops that only exist in fp32, against the per-element math of the kernel header).
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/context.h"
#include "kernels/common.h"

// Code that calls `_cuda` functions, which exist only in CUDA builds.
#if KD_HAVE_CUDA
#define KD_BENCH_CUDA(...) __VA_ARGS__
#else
#define KD_BENCH_CUDA(...)
#endif

namespace kd::bench {

struct Env {
  Context* ctx = nullptr;
  bool cuda = false, quick = false;
  double copy_rate = 0;                // bytes (read + written) per second of a large copy: the memory floor
  double matmul_rate = 0;              // FLOP/s of bf16 8192^3 (CPU: fp32 sgemm): the compute floor
  int64_t rotate_bytes = 0;            // rotated copies of a case's buffers add up to at least this much
  std::function<void(int reps)> lead;  // GPU: enqueue work ahead of `reps` timed runs (see harness.cpp)

  const CudaHandles& h() const { return ctx->cuda_handles(); }
  size_t act_size() const { return cuda ? 2 : 4; }  // activations: bf16 on a GPU, fp32 on the CPU
  int64_t batch() const { return cuda ? (quick ? 8 : 128) : (quick ? 1 : 4); }
  double tol_act() const { return cuda ? 1e-2 : 1e-5; }  // outputs stored as activations
  int copies_for(double slot_bytes) const;
};

// `copies` slots of n elements, each 256-byte aligned, on the env's device. at(k) is slot k modulo
// the copies, so buffers that are not rotated take any k.
class Buf {
 public:
  Buf() = default;
  Buf(const Env& env, size_t elem_size, int64_t n, int copies = 1);
  ~Buf();
  Buf(Buf&& o) noexcept { *this = std::move(o); }
  Buf& operator=(Buf&& o) noexcept;
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;

  template <typename T>
  T* at(int k) const {
    return reinterpret_cast<T*>(base_ + size_t(k % copies_) * stride_);
  }
  int64_t size() const { return n_; }
  size_t slot_bytes() const { return size_t(n_) * elem_; }
  void upload(const void* host, int copy = -1);  // -1: every copy
  void download(void* host) const;               // copy 0
  void fill_bytes(int value);                    // copy 0: 0xFF poisons (NaN), 0 zeroes

 private:
  bool cuda_ = false;
  Context* ctx_ = nullptr;
  char* base_ = nullptr;
  size_t elem_ = 1, stride_ = 0;
  int64_t n_ = 0;
  int copies_ = 1;
};

// n values uniform in [lo, hi), a pure function of (seed, i); rounded to bf16 when round_bf16, so
// that the GPU's bf16 inputs and the reference's floats hold the same numbers.
std::vector<float> uniform(int64_t n, uint64_t seed, float lo, float hi, bool round_bf16 = true);
std::vector<double> to_double(const std::vector<float>& v);
template <typename T>
std::vector<T> zeros(int64_t n) {
  return std::vector<T>(size_t(n));
}

template <typename T>
Buf typed_buf(const Env& env, const std::vector<T>& host, int copies) {
  Buf b(env, sizeof(T), int64_t(host.size()), copies);
  b.upload(host.data());
  return b;
}
template <typename T>
std::vector<T> read(const Buf& b) {
  std::vector<T> host(size_t(b.size()));
  b.download(host.data());
  return host;
}
// Activations: bf16 on a GPU, f32 on the CPU, converted from and to float on the host.
Buf act_buf(const Env& env, const std::vector<float>& values, int copies, int copy = -1);
Buf act_out(const Env& env, int64_t n, int copies);
void act_upload(const Env& env, Buf& b, const std::vector<float>& values, int copy);
std::vector<float> read_act(const Env& env, const Buf& b);

// The outcome of a check: every output's relative L2 error ||got - ref|| / ||ref|| against its
// tolerance (NaN anywhere fails), and exact comparisons of integer outputs.
struct Check {
  bool ok = true, ran = false;
  double worst = 0;  // largest error / tolerance
  double max_err = 0;
  std::string detail;
  template <typename A, typename B>
  void rel(const std::string& what, const std::vector<A>& got, const std::vector<B>& ref, double tol,
           size_t count = size_t(-1));
  void exact(const std::string& what, int64_t mismatches);
  void nan_free(const std::string& what, const std::vector<float>& got, size_t from);
  void record(const std::string& what, double err, double tol);
};

struct Case {
  std::string shape;
  double bytes = 0;  // essential bytes of one run (memory-bound), or
  double flops = 0;  // FLOPs of one run (compute-bound)
  std::string note;  // how the work is counted, printed once under the table
  // A case's own floor (FLOP/s or B/s, measured by the case) instead of the env's, and its name
  // for the RESULT line: e.g. the fp32 GEMM rate for fp32 GEMM-bound work.
  double floor_rate = 0;
  std::string floor_name;
  int copies = 1;
  std::function<void(int copy)> run;
  std::function<Check()> check;  // runs the op on copy 0's fresh outputs, compares with the reference
};

struct Entry {
  std::string name;
  std::function<Case(const Env&)> make;
};
using Registry = std::vector<Entry>;

void add_loss_cases(Registry& r);       // augment, distill_loss, cross_entropy
void add_norm_cases(Registry& r);       // groupnorm, batchnorm, weight_std
void add_pointwise_cases(Registry& r);  // activation, add, maxpool, adam, cast
void add_conv_cases(Registry& r);       // convolutions at ResNet-50 / R152x2 shapes
void add_shampoo_cases(Registry& r);    // Shampoo's batched inverse 4th root

struct Result {
  std::string name, shape, note, error;
  double bytes = 0, flops = 0, median_s = 0, rate = 0, floor_fraction = 0;
  double floor_rate = 0;  // the case's own floor, 0: the env's
  std::string floor_name;
  int reps = 0, copies = 1;
  Check check;
  bool failed() const { return !error.empty() || !check.ok; }
};

// Checks, warms up (every copy once), then times runs (median; CUDA events on a GPU) and rates
// them against the env's floors. Exceptions become Result::error.
Result run_case(const Env& env, const std::string& name, const Case& c);
std::vector<double> time_runs(const Env& env, const std::function<void(int)>& run, int copies, int first, int reps);

std::string dims(std::initializer_list<int64_t> d);  // "[128, 3136, 256]"

template <typename A, typename B>
void Check::rel(const std::string& what, const std::vector<A>& got, const std::vector<B>& ref, double tol,
                size_t count) {
  const bool whole = count == size_t(-1);
  const size_t n = whole ? ref.size() : count;
  double num = 0, den = 0, err = 0;
  if ((whole && got.size() != ref.size()) || got.size() < n || ref.size() < n) err = INFINITY;
  for (size_t i = 0; i < n && err == 0; ++i) {
    const double x = double(got[i]), y = double(ref[i]);
    if (std::isnan(x) || std::isnan(y)) err = INFINITY;
    num += (x - y) * (x - y);
    den += y * y;
  }
  if (err == 0) err = den == 0 ? std::sqrt(num) : std::sqrt(num / den);
  record(what, err, tol);
}

}  // namespace kd::bench
