#include "engine/cuda_graph.h"

#include <string>

#if KD_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda_check.h"
#endif

namespace kd {

struct CudaGraph::State {
  Context* ctx = nullptr;
  std::shared_ptr<MemoryPool::PrivateBlocks> blocks;
#if KD_HAVE_CUDA
  cudaGraphExec_t exec = nullptr;
#endif
  ~State() {
#if KD_HAVE_CUDA
    if (exec) cudaGraphExecDestroy(exec);
#endif
    if (blocks) ctx->pool().retire(*blocks);
  }
};

CudaGraph::CudaGraph(std::unique_ptr<State> state) : state_(std::move(state)) {}
CudaGraph::~CudaGraph() = default;

size_t CudaGraph::private_bytes() const { return MemoryPool::private_bytes(*state_->blocks); }

#if KD_HAVE_CUDA

namespace {
// The pool's private set and the context's capture flag for the duration of a capture, undone
// on every exit.
struct CaptureScope {
  Context& ctx;
  CaptureScope(Context& c, std::shared_ptr<MemoryPool::PrivateBlocks> blocks) : ctx(c) {
    ctx.pool().use_private(std::move(blocks));
    ctx.set_capturing(true);
  }
  ~CaptureScope() {
    ctx.set_capturing(false);
    ctx.pool().use_private(nullptr);
  }
};
}  // namespace

std::unique_ptr<CudaGraph> CudaGraph::capture(Context& ctx, const std::function<void()>& enqueue) {
  KD_CHECK(ctx.is_cuda(), "CUDA graphs need a CUDA context, not ", ctx.describe());
  KD_CHECK(!ctx.capturing(), "a CUDA graph capture inside another one");
  auto state = std::make_unique<State>();
  state->ctx = &ctx;
  state->blocks = ctx.pool().new_private_blocks();
  cudaStream_t stream = ctx.cuda_handles().stream;
  KD_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  cudaGraph_t graph = nullptr;
  std::string failure;
  {
    CaptureScope scope(ctx, state->blocks);
    try {
      enqueue();
    } catch (const std::exception& e) {
      failure = e.what();
    } catch (...) {  // whatever it was, the capture must still be ended below
      failure = "an exception that is not a std::exception";
    }
  }
  // Ends the capture whatever happened (the stream leaves capture mode; an invalidated capture
  // returns an error and no graph), then clears the error so the context stays usable.
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (failure.empty() && ended != cudaSuccess)
    failure = std::string("the driver ended the capture with ") + cudaGetErrorString(ended) +
              " (a call in the step is not allowed while a stream is captured)";
  if (!failure.empty()) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    KD_FAIL("CUDA graph capture failed: ", failure);
  }
  size_t nodes = 0;
  if (const cudaError_t counted = cudaGraphGetNodes(graph, nullptr, &nodes); counted != cudaSuccess) {
    cudaGraphDestroy(graph);
    cudaGetLastError();
    KD_FAIL("CUDA graph capture failed: counting the captured graph's nodes returned ", cudaGetErrorString(counted));
  }
  const cudaError_t made = cudaGraphInstantiate(&state->exec, graph, 0);
  cudaGraphDestroy(graph);
  if (made != cudaSuccess) {
    cudaGetLastError();
    state->exec = nullptr;
    KD_FAIL("CUDA graph capture failed: instantiating the captured graph (", nodes, " nodes) returned ",
            cudaGetErrorString(made));
  }
  ctx.keep_workspace_buffers();  // the graph's kernels hold the workspace's address
  std::unique_ptr<CudaGraph> g(new CudaGraph(std::move(state)));
  g->nodes_ = nodes;
  return g;
}

void CudaGraph::launch() { KD_CUDA_CHECK(cudaGraphLaunch(state_->exec, state_->ctx->cuda_handles().stream)); }

#else  // built without CUDA

std::unique_ptr<CudaGraph> CudaGraph::capture(Context& ctx, const std::function<void()>&) {
  KD_FAIL("CUDA graphs need a CUDA context, not ", ctx.describe(), " (kd was built without CUDA)");
}
void CudaGraph::launch() { KD_FAIL("CUDA graphs: kd was built without CUDA"); }

#endif

}  // namespace kd
