// The activation arena: a caching allocator. Blocks are rounded up to a size class and go back
// to a free list when the last tensor using them dies, so after the first training step every
// allocation of the next step is served from the cache (same shapes, same sizes): no malloc,
// no cudaMalloc, no page faults in the steady state. On a GPU, blocks are reused in stream
// order, which is safe because each context has one compute stream.
#pragma once
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/tensor.h"

namespace kd {

class MemoryPool {
 public:
  static std::unique_ptr<MemoryPool> create(Device device, int device_index);
  ~MemoryPool();

  std::shared_ptr<Storage> allocate(size_t bytes);
  void release_cached();  // give cached (unused) blocks back to the system

  // Graph-private blocks (a CUDA graph's memory, issue 16 item 5). A captured graph replays its
  // kernels on the addresses they had at capture, including those of blocks that were freed and
  // reused inside the step; work outside the graph must never receive one of them, or a replay
  // would overwrite what it keeps there. While a set is in use (use_private), allocations take
  // its free blocks first, then the shared cache's, then the system's, and a block so taken goes
  // back to the set, never to the shared cache, when its last tensor dies, as does a block from
  // before that dies while the set is in use (a captured kernel may have used it): the set holds
  // the memory the graph may write, and nothing else is ever handed it. Out of memory while a
  // set is in use throws at once (no cache release: cudaFree may not run inside a capture).
  // retire() (the graph is gone) returns the set's free blocks to the shared cache, and later
  // releases go there too.
  struct PrivateBlocks;
  std::shared_ptr<PrivateBlocks> new_private_blocks();
  void use_private(std::shared_ptr<PrivateBlocks> set);  // null: the shared cache again
  void retire(PrivateBlocks& set);
  static size_t private_bytes(const PrivateBlocks& set);  // allocated into the set

  size_t bytes_in_use() const;
  size_t bytes_reserved() const;  // in use + cached
  // Cached blocks that work outside a graph may be handed (the shared cache; a private set's
  // free blocks are reserved but not among them).
  size_t bytes_cached_shared() const;
  size_t peak_bytes_in_use() const;
  void reset_peak();
  static size_t size_class(size_t bytes);

 private:
  MemoryPool(Device device, int device_index);
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace kd
