// CUDA graphs (issue 16 item 5): the work a function queues on a context's stream, captured once
// and replayed. A replay runs the same kernels with the same arguments on the same addresses, so
// what is captured must read everything that changes between replays from device memory at
// fixed addresses (the step's inputs, its statistics block and its schedule: train/step_graph.h),
// and must not do host work that a replay would have to repeat: the capture fails, naming it,
// on a host wait (a read-back, a synchronous copy), a staging upload, or the shared workspace
// growing. The memory the captured work allocates comes from a private set of the context's pool
// (engine/pool.h), which nothing outside the graph is ever handed, and goes back to the pool
// when the graph is destroyed.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>

#include "engine/context.h"

namespace kd {

class CudaGraph {
 public:
  // Runs `enqueue` once in (relaxed) stream capture and instantiates what it queued; nothing of
  // it executes until launch(). Throws kd::Error (capture abandoned, stream usable, the private
  // blocks handed back) when the context is not a CUDA one, when `enqueue` throws, or when the
  // driver refuses the capture; the message says which.
  static std::unique_ptr<CudaGraph> capture(Context& ctx, const std::function<void()>& enqueue);
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Queues one replay on the context's stream (returns at once).
  void launch();
  size_t nodes() const { return nodes_; }
  size_t private_bytes() const;  // pool memory the graph owns

 private:
  struct State;
  explicit CudaGraph(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
  size_t nodes_ = 0;
};

}  // namespace kd
