// MemoryPool: the caching allocator's reuse, and its graph-private blocks (the memory a captured
// CUDA graph replays on, which work outside the graph must never receive).
#include "engine/pool.h"

#include <gtest/gtest.h>

#include <set>

#include "tests/support/testing.h"

namespace kd {
namespace {

void* address_of(const std::shared_ptr<Storage>& s) { return s->data; }

TEST(MemoryPool, AFreedBlockServesTheNextAllocationOfItsSizeClass) {
  auto pool = MemoryPool::create(Device::cpu, 0);
  void* first = address_of(pool->allocate(1000));
  EXPECT_EQ(address_of(pool->allocate(1000 - 17)), first);  // same 256-byte class
  EXPECT_EQ(pool->bytes_in_use(), 0u);
  EXPECT_EQ(pool->bytes_reserved(), MemoryPool::size_class(1000));
}

// Blocks taken while a private set is in use go back to the set: shared allocations never get
// them, the set's next use does, and retiring the set hands them to the shared cache.
TEST(MemoryPool, PrivateBlocksAreNeverHandedToSharedAllocations) {
  auto pool = MemoryPool::create(Device::cpu, 0);
  void* shared_free = address_of(pool->allocate(4096));  // a cached block the set may take
  auto set = pool->new_private_blocks();
  pool->use_private(set);
  std::set<void*> graph;
  {
    auto a = pool->allocate(4096), b = pool->allocate(4096), c = pool->allocate(300);
    graph = {address_of(a), address_of(b), address_of(c)};
    EXPECT_TRUE(graph.count(shared_free)) << "the set takes the shared cache's free block first";
  }
  pool->use_private(nullptr);
  EXPECT_EQ(MemoryPool::private_bytes(*set), 2 * MemoryPool::size_class(4096) + MemoryPool::size_class(300));
  EXPECT_EQ(pool->bytes_cached_shared(), 0u) << "the set's idle blocks are cached, but not for shared use";
  EXPECT_EQ(pool->bytes_reserved() - pool->bytes_in_use(), MemoryPool::private_bytes(*set));
  // Outside: the set's (free) blocks are not reused; fresh memory is.
  std::vector<std::shared_ptr<Storage>> outside;
  for (int i = 0; i < 4; ++i) {
    outside.push_back(pool->allocate(4096));
    outside.push_back(pool->allocate(300));
    EXPECT_FALSE(graph.count(address_of(outside[outside.size() - 2])));
    EXPECT_FALSE(graph.count(address_of(outside.back())));
  }
  // Inside again: the set's own blocks come back, and a block that was allocated outside and
  // dies while the set is in use joins the set (a captured kernel may have used it before it
  // died, or the capture may hand it out again): shared allocations never get it after.
  pool->use_private(set);
  void* died_inside = address_of(outside.back());
  outside.pop_back();
  {
    auto a = pool->allocate(4096), b = pool->allocate(4096);
    EXPECT_TRUE(graph.count(address_of(a)) && graph.count(address_of(b)));
  }
  pool->use_private(nullptr);
  EXPECT_EQ(MemoryPool::private_bytes(*set), 2 * MemoryPool::size_class(4096) + 2 * MemoryPool::size_class(300));
  const auto shared_300 = pool->allocate(300);
  EXPECT_FALSE(graph.count(address_of(shared_300)));
  EXPECT_NE(address_of(shared_300), died_inside);
  graph.insert(died_inside);
  // Retired: what the set held is shared again.
  pool->retire(*set);
  std::set<void*> after;
  for (int i = 0; i < 2; ++i) after.insert(address_of(outside.emplace_back(pool->allocate(4096))));
  for (void* p : after) EXPECT_TRUE(graph.count(p));
  const std::string why = test::error_of([&] { pool->use_private(set); });
  EXPECT_NE(why.find("retired"), std::string::npos) << why;
}

// A block of the set still in use when the set retires goes to the shared cache when it dies.
TEST(MemoryPool, ABlockOfARetiredSetReturnsToTheSharedCache) {
  auto pool = MemoryPool::create(Device::cpu, 0);
  auto set = pool->new_private_blocks();
  pool->use_private(set);
  auto live = pool->allocate(2048);
  void* where = address_of(live);
  pool->use_private(nullptr);
  pool->retire(*set);
  live.reset();
  EXPECT_EQ(address_of(pool->allocate(2048)), where);
}

}  // namespace
}  // namespace kd
