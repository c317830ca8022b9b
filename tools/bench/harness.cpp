#include "tools/bench/harness.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "engine/gemm_rate.h"
#include "kernels/random.h"
#if KD_HAVE_CUDA
#include "kernels/cuda_check.h"
#endif

namespace kd::bench {

int Env::copies_for(double slot_bytes) const {
  if (slot_bytes <= 0) return 1;
  return int(std::clamp<double>(std::ceil(double(rotate_bytes) / slot_bytes), 1, 64));
}

// ---- buffers ----

Buf::Buf(const Env& env, size_t elem_size, int64_t n, int copies)
    : cuda_(env.cuda), ctx_(env.ctx), elem_(elem_size), n_(n), copies_(std::max(copies, 1)) {
  stride_ = (std::max<size_t>(slot_bytes(), 1) + 255) / 256 * 256;
  const size_t total = stride_ * size_t(copies_);
  base_ = static_cast<char*>(cuda_ ? device_alloc(total, ctx_->device_index()) : std::aligned_alloc(256, total));
  KD_CHECK(base_, "bench: out of host memory allocating ", total, " bytes");
}

Buf::~Buf() {
  if (!base_) return;
  if (cuda_) {
    try {
      ctx_->synchronize();             // kernels still queued on the stream may use it
    } catch (const std::exception&) {  // a failed kernel: its error was reported where it surfaced
    }
    device_free(base_);
  } else {
    std::free(base_);
  }
}

Buf& Buf::operator=(Buf&& o) noexcept {
  std::swap(cuda_, o.cuda_), std::swap(ctx_, o.ctx_), std::swap(base_, o.base_), std::swap(elem_, o.elem_);
  std::swap(stride_, o.stride_), std::swap(n_, o.n_), std::swap(copies_, o.copies_);
  return *this;
}

void Buf::upload(const void* host, int copy) {
  const Device dev = cuda_ ? Device::cuda : Device::cpu;
  for (int k = 0; k < copies_; ++k)
    if (copy < 0 || copy == k) copy_bytes(at<char>(k), dev, host, Device::cpu, slot_bytes(), ctx_);
}

void Buf::download(void* host) const {
  copy_bytes(host, Device::cpu, at<char>(0), cuda_ ? Device::cuda : Device::cpu, slot_bytes(), ctx_);
}

void Buf::fill_bytes(int value) {
  if (!cuda_) {
    std::memset(base_, value, slot_bytes());
    return;
  }
  KD_BENCH_CUDA(KD_CUDA_CHECK(cudaMemsetAsync(base_, value, slot_bytes(), ctx_->cuda_handles().stream));
                ctx_->synchronize());
}

std::vector<float> uniform(int64_t n, uint64_t seed, float lo, float hi, bool round_bf16) {
  std::vector<float> v(static_cast<size_t>(std::max<int64_t>(n, 0)));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float x = lo + (hi - lo) * random_uniform(seed, 0x62656e6368ull, uint64_t(i));
    v[size_t(i)] = round_bf16 ? bf16_to_float(float_to_bf16(x)) : x;
  }
  return v;
}

std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

void act_upload(const Env& env, Buf& b, const std::vector<float>& values, int copy) {
  if (!env.cuda) return b.upload(values.data(), copy);
  std::vector<bf16> bits(values.size());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < int64_t(values.size()); ++i) bits[size_t(i)] = float_to_bf16(values[size_t(i)]);
  b.upload(bits.data(), copy);
}

Buf act_buf(const Env& env, const std::vector<float>& values, int copies, int copy) {
  Buf b(env, env.act_size(), int64_t(values.size()), copies);
  act_upload(env, b, values, copy);
  return b;
}

Buf act_out(const Env& env, int64_t n, int copies) { return Buf(env, env.act_size(), n, copies); }

std::vector<float> read_act(const Env& env, const Buf& b) {
  if (!env.cuda) return read<float>(b);
  const std::vector<bf16> bits = read<bf16>(b);
  std::vector<float> v(bits.size());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < int64_t(v.size()); ++i) v[size_t(i)] = bf16_to_float(bits[size_t(i)]);
  return v;
}

// ---- checks ----

void Check::record(const std::string& what, double err, double tol) {
  ran = true;
  const bool pass = err <= tol;  // false for NaN
  ok = ok && pass;
  worst = std::max(worst, pass ? err / tol : INFINITY);
  max_err = std::max(max_err, std::isnan(err) ? INFINITY : err);
  std::ostringstream o;
  o.precision(2);
  o << (detail.empty() ? "" : ", ") << what << " " << std::scientific << err << (pass ? "" : " FAIL");
  detail += o.str();
}

void Check::exact(const std::string& what, int64_t mismatches) {
  ran = true;
  ok = ok && mismatches == 0;
  if (mismatches) worst = INFINITY;
  detail +=
      (detail.empty() ? "" : ", ") + what + (mismatches ? " " + std::to_string(mismatches) + " differ FAIL" : " exact");
}

void Check::nan_free(const std::string& what, const std::vector<float>& got, size_t from) {
  int64_t nans = 0;
  for (size_t i = from; i < got.size(); ++i) nans += std::isnan(got[i]) ? 1 : 0;
  if (nans) exact(what + " unwritten (NaN)", nans);
}

std::string dims(std::initializer_list<int64_t> d) {
  std::string s = "[";
  for (int64_t v : d) s += (s.size() > 1 ? ", " : "") + std::to_string(v);
  return s + "]";
}

// ---- timing ----

// GPU: one event pair around each run. The stream is first given a few milliseconds of other work
// (env.lead: large GEMMs), so that the host enqueues the runs while the GPU is busy and the events
// time the kernels back to back, not the host's launch latency. That lead work also leaves L2
// holding its own data, not this case's.
std::vector<double> time_runs(const Env& env, const std::function<void(int)>& run, int copies, int first, int reps) {
  std::vector<double> seconds;
  if (!env.cuda) {
    for (int i = 0; i < reps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      run((first + i) % copies);
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return seconds;
  }
#if KD_HAVE_CUDA
  cudaStream_t stream = env.h().stream;
  std::vector<cudaEvent_t> events(static_cast<size_t>(2 * reps));
  for (cudaEvent_t& e : events) KD_CUDA_CHECK(cudaEventCreate(&e));
  if (env.lead) env.lead(reps);
  for (int i = 0; i < reps; ++i) {
    KD_CUDA_CHECK(cudaEventRecord(events[size_t(2 * i)], stream));
    run((first + i) % copies);
    KD_CUDA_CHECK(cudaEventRecord(events[size_t(2 * i + 1)], stream));
  }
  KD_CUDA_CHECK(cudaEventSynchronize(events.back()));
  for (int i = 0; i < reps; ++i) {
    float ms = 0;
    KD_CUDA_CHECK(cudaEventElapsedTime(&ms, events[size_t(2 * i)], events[size_t(2 * i + 1)]));
    seconds.push_back(double(ms) * 1e-3);
  }
  for (cudaEvent_t e : events) cudaEventDestroy(e);
  KD_CUDA_CHECK(cudaGetLastError());
#endif
  return seconds;
}

Result run_case(const Env& env, const std::string& name, const Case& c) {
  Result r;
  r.name = name, r.shape = c.shape, r.note = c.note, r.bytes = c.bytes, r.flops = c.flops, r.copies = c.copies;
  r.floor_rate = c.floor_rate, r.floor_name = c.floor_name;
  try {
    if (c.check) r.check = c.check();  // first, while every buffer still holds its initial values
    const int warm = std::max(2, c.copies);
    for (int i = 0; i < warm; ++i) c.run(i % c.copies);
    env.ctx->synchronize();
    // Repetitions: enough for ~0.25 s of timed work (quick: ~10 ms), within [min, max].
    const double estimate = median_of(time_runs(env, c.run, c.copies, 0, 3));
    const double target = env.quick ? 0.01 : 0.25;
    const int lo = env.quick ? 3 : 10, hi = env.quick ? 10 : (env.cuda ? 200 : 50);
    r.reps = int(std::clamp<double>(estimate > 0 ? target / estimate : hi, lo, hi));
    r.median_s = median_of(time_runs(env, c.run, c.copies, 3, r.reps));
    const double floor = c.floor_rate > 0 ? c.floor_rate : c.flops > 0 ? env.matmul_rate : env.copy_rate;
    r.rate = (c.flops > 0 ? c.flops : c.bytes) / r.median_s;
    r.floor_fraction = floor > 0 ? r.rate / floor : 0;
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  return r;
}

}  // namespace kd::bench
