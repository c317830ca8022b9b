// What a CUDA launcher needs from its caller: the stream, library handles and a scratch
// workspace. Forward declarations keep this header free of CUDA includes, so CPU-only code can
// pass it around; the types are the ones cuda_runtime.h / cudnn.h / cublasLt.h define.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

struct CUstream_st;
struct cudnnContext;
struct cublasContext;
struct cublasLtContext;

namespace kd {

// Grow-only scratch memory owned by the engine's context. Ops on one stream run in order, so
// one buffer serves all of them; growing frees the old buffer in stream order.
class CudaWorkspace {
 public:
  virtual ~CudaWorkspace() = default;
  virtual void* get(size_t bytes) = 0;
};

// Remembers autotuning choices across processes (engine/autotune_cache.h keeps them in a file).
// A key names everything a choice depends on (device, library version, op, shape, alignments).
class TuningStore {
 public:
  virtual ~TuningStore() = default;
  // The choice recorded for key (an index among the candidates the library lists for it), or -1.
  virtual int64_t find(const std::string& key) = 0;
  // Records a choice and the time it measured (milliseconds per run), for the next process too.
  virtual void put(const std::string& key, int64_t choice, double ms) = 0;
};

struct CudaHandles {
  CUstream_st* stream = nullptr;
  cudnnContext* cudnn = nullptr;
  cublasContext* cublas = nullptr;
  cublasLtContext* cublaslt = nullptr;
  CudaWorkspace* workspace = nullptr;
  int device = 0;
  int sm_count = 0;
  bool autotune = false;  // time cuDNN's candidate engines once per shape instead of taking the first
  TuningStore* tuning_store = nullptr;  // with autotune: earlier runs' choices (not owned; may be null)
  // GroupNorm in one pass where a span of groups fits in shared memory (groupnorm_one_pass.h):
  // the forward gave +15% images/s on the H200's default step; false: the two-pass path.
  bool groupnorm_one_pass = true;
  // The one-pass kernels' block size: 0 the plan's choice (512 threads from 4,096 chunks a block),
  // or 256 / 512 forced (bench_kernels' `.t256` rows: two blocks of 256 may share an SM where
  // one of 512 fills its registers, so one block's apply overlaps the other's loads).
  int groupnorm_threads = 0;
};

}  // namespace kd
