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

  size_t bytes_in_use() const;
  size_t bytes_reserved() const;  // in use + cached
  size_t peak_bytes_in_use() const;
  void reset_peak();
  static size_t size_class(size_t bytes);

 private:
  MemoryPool(Device device, int device_index);
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace kd
