#include "engine/timer.h"

#include <chrono>
#include <map>

#if KD_HAVE_CUDA
#include "kernels/cuda_check.h"
#endif

namespace kd {

struct PhaseTimer::Impl {
  Context& ctx;
  std::vector<std::string> order;
  std::map<std::string, double> total_ms;
  std::string running;
  std::chrono::steady_clock::time_point started;
#if KD_HAVE_CUDA
  // Pairs (phase, start event, stop event) waiting to be read; events are reused.
  struct Pending {
    std::string phase;
    cudaEvent_t begin, end;
  };
  std::vector<Pending> pending;
  std::vector<cudaEvent_t> free_events;
  cudaEvent_t current_begin = nullptr;
  cudaEvent_t take_event() {
    if (!free_events.empty()) {
      cudaEvent_t e = free_events.back();
      free_events.pop_back();
      return e;
    }
    cudaEvent_t e;
    KD_CUDA_CHECK(cudaEventCreate(&e));
    return e;
  }
#endif
  explicit Impl(Context& c) : ctx(c) {}

  void begin(const std::string& phase) {
    if (!total_ms.count(phase)) order.push_back(phase), total_ms[phase] = 0;
    running = phase;
    if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
      current_begin = take_event();
      KD_CUDA_CHECK(cudaEventRecord(current_begin, ctx.cuda_handles().stream));
#endif
    } else {
      started = std::chrono::steady_clock::now();
    }
  }

  void end() {
    if (running.empty()) return;
    if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
      cudaEvent_t stop = take_event();
      KD_CUDA_CHECK(cudaEventRecord(stop, ctx.cuda_handles().stream));
      pending.push_back({running, current_begin, stop});
#endif
    } else {
      total_ms[running] += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
    }
    running.clear();
  }

  void collect() {
#if KD_HAVE_CUDA
    for (Pending& p : pending) {
      KD_CUDA_CHECK(cudaEventSynchronize(p.end));
      float ms = 0;
      KD_CUDA_CHECK(cudaEventElapsedTime(&ms, p.begin, p.end));
      total_ms[p.phase] += ms;
      free_events.push_back(p.begin);
      free_events.push_back(p.end);
    }
    pending.clear();
#endif
  }

  ~Impl() {
#if KD_HAVE_CUDA
    for (Pending& p : pending) free_events.push_back(p.begin), free_events.push_back(p.end);
    for (cudaEvent_t e : free_events) cudaEventDestroy(e);
#endif
  }
};

PhaseTimer::PhaseTimer(Context& ctx) : impl_(std::make_unique<Impl>(ctx)) {}
PhaseTimer::~PhaseTimer() = default;

void PhaseTimer::mark(const std::string& phase) {
  impl_->end();
  impl_->begin(phase);
}

void PhaseTimer::stop() { impl_->end(); }

std::vector<std::pair<std::string, double>> PhaseTimer::totals_ms() {
  impl_->collect();
  std::vector<std::pair<std::string, double>> out;
  for (const std::string& p : impl_->order) out.emplace_back(p, impl_->total_ms[p]);
  return out;
}

void PhaseTimer::reset() {
  impl_->collect();
  for (auto& kv : impl_->total_ms) kv.second = 0;
}

}  // namespace kd
