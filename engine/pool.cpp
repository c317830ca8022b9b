#include "engine/pool.h"

#include <algorithm>
#include <cstdlib>

#include "engine/context.h"

namespace kd {

struct MemoryPool::PrivateBlocks {
  std::multimap<size_t, void*> free_blocks;  // size class -> block (guarded by the pool's mutex)
  size_t bytes = 0;                          // size classes of the blocks it owns
  bool retired = false;
};

struct MemoryPool::State {
  Device device;
  int device_index;
  std::mutex mutex;
  std::multimap<size_t, void*> free_blocks;  // size class -> block
  size_t in_use = 0, reserved = 0, peak = 0;
  std::shared_ptr<PrivateBlocks> active;  // use_private()

  // A free block of class `cls` from `blocks`, or null.
  static void* take(std::multimap<size_t, void*>& blocks, size_t cls) {
    auto it = blocks.find(cls);
    if (it == blocks.end()) return nullptr;
    void* p = it->second;
    blocks.erase(it);
    return p;
  }

  void* system_alloc(size_t bytes) {
    if (device == Device::cuda) return device_alloc(bytes, device_index);
    void* p = std::aligned_alloc(64, bytes);
    KD_CHECK(p, "out of host memory allocating ", bytes, " bytes");
    return p;
  }
  std::vector<std::weak_ptr<PrivateBlocks>> sets;  // every set made, for the destructor

  ~State() {
    for (auto& [cls, p] : free_blocks) system_free(p);
    for (auto& weak : sets)
      if (auto set = weak.lock()) {
        for (auto& [cls, p] : set->free_blocks) system_free(p);
        set->free_blocks.clear();
      }
  }
  void system_free(void* p) {
    if (device == Device::cuda)
      device_free(p);
    else
      std::free(p);
  }
};

std::unique_ptr<MemoryPool> MemoryPool::create(Device device, int device_index) {
  return std::unique_ptr<MemoryPool>(new MemoryPool(device, device_index));
}

MemoryPool::MemoryPool(Device device, int device_index) : state_(std::make_shared<State>()) {
  state_->device = device;
  state_->device_index = device_index;
}

MemoryPool::~MemoryPool() { release_cached(); }

// 256-byte granularity up to 1 MiB, then 64 KiB: the same tensor shape always lands in the
// same class, and rounding wastes at most a few percent.
size_t MemoryPool::size_class(size_t bytes) {
  const size_t small = 256, large = 64 << 10;
  if (bytes == 0) bytes = 1;
  return bytes <= (1u << 20) ? ceil_div(int64_t(bytes), small) * small : ceil_div(int64_t(bytes), large) * large;
}

std::shared_ptr<Storage> MemoryPool::allocate(size_t bytes) {
  const size_t cls = size_class(bytes);
  std::shared_ptr<State> st = state_;
  void* p = nullptr;
  std::shared_ptr<PrivateBlocks> owner;
  {
    std::lock_guard<std::mutex> lock(st->mutex);
    owner = st->active;
    if (owner) p = State::take(owner->free_blocks, cls);
    if (!p) {
      p = State::take(st->free_blocks, cls);
      if (p && owner) owner->bytes += cls;
    }
  }
  if (!p) {
    try {
      p = st->system_alloc(cls);
    } catch (const Error&) {
      // Out of memory: drop the cache and try once more before giving up; not while a graph is
      // captured (cudaFree synchronizes the device, which a capture may not do: the capture fails
      // with this error instead, and the step runs uncaptured).
      if (owner) throw;
      release_cached();
      p = st->system_alloc(cls);
    }
    std::lock_guard<std::mutex> lock(st->mutex);
    st->reserved += cls;
    if (owner) owner->bytes += cls;
  }
  {
    std::lock_guard<std::mutex> lock(st->mutex);
    st->in_use += cls;
    st->peak = std::max(st->peak, st->in_use);
  }
  auto storage = std::make_shared<Storage>();
  storage->data = p;
  storage->bytes = bytes;
  storage->device = st->device;
  storage->release = [st, cls, owner](void* ptr) {
    std::lock_guard<std::mutex> lock(st->mutex);
    st->in_use -= cls;
    if (owner && !owner->retired) {
      owner->free_blocks.emplace(cls, ptr);
    } else if (!owner && st->active) {
      // A block from before the capture whose last tensor died inside it: the capture may hand it
      // out again (its address then baked into the graph), so it belongs to the graph's set now.
      st->active->free_blocks.emplace(cls, ptr);
      st->active->bytes += cls;
    } else {
      st->free_blocks.emplace(cls, ptr);
    }
  };
  return storage;
}

std::shared_ptr<MemoryPool::PrivateBlocks> MemoryPool::new_private_blocks() {
  auto set = std::make_shared<PrivateBlocks>();
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->sets.push_back(set);
  return set;
}

void MemoryPool::use_private(std::shared_ptr<PrivateBlocks> set) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  KD_CHECK(!set || !set->retired, "memory pool: a retired set of private blocks cannot be used again");
  state_->active = std::move(set);
}

void MemoryPool::retire(PrivateBlocks& set) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  if (state_->active.get() == &set) state_->active.reset();
  set.retired = true;
  state_->free_blocks.insert(set.free_blocks.begin(), set.free_blocks.end());
  set.free_blocks.clear();
}

size_t MemoryPool::private_bytes(const PrivateBlocks& set) { return set.bytes; }

void MemoryPool::release_cached() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  for (auto& [cls, p] : state_->free_blocks) {
    state_->system_free(p);
    state_->reserved -= cls;
  }
  state_->free_blocks.clear();
}

size_t MemoryPool::bytes_in_use() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->in_use;
}
size_t MemoryPool::bytes_reserved() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->reserved;
}
size_t MemoryPool::bytes_cached_shared() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  size_t bytes = 0;
  for (const auto& [cls, p] : state_->free_blocks) bytes += cls;
  return bytes;
}
size_t MemoryPool::peak_bytes_in_use() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->peak;
}
void MemoryPool::reset_peak() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->peak = state_->in_use;
}

}  // namespace kd
