#include "data/loader.h"

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <thread>

#include "tests/data/data_fixtures.h"

namespace kd {
namespace {

using test::TempDir;

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

// Image i is 2x3 pixels, every byte (i % 251), label i % 4. Indices in `bad` are unreadable
// (DecodeError), those in `fatal` fail for another reason (kd::Error). Loads take a little time
// that varies with the index, so threads finish out of order; the source counts how many loads
// run at once.
class FakeSource final : public DataSource {
 public:
  FakeSource(int64_t n, std::set<int64_t> bad = {}, std::set<int64_t> fatal = {}, int delay_ms = 1)
      : n_(n), bad_(std::move(bad)), fatal_(std::move(fatal)), delay_ms_(delay_ms) {}
  int64_t size() const override { return n_; }
  int num_classes() const override { return 4; }
  int label(int64_t i) const override {
    check_index(i);
    return int(i % 4);
  }
  std::string where(int64_t i) const override { return "fake #" + std::to_string(i); }
  std::string describe() const override { return "fake"; }
  Image load(int64_t i) const override {
    check_index(i);
    const int now = ++active_;
    for (int seen = max_active_; now > seen && !max_active_.compare_exchange_weak(seen, now);) {
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_ms_ * 1000 * ((i * 37) % 5) / 4));
    --active_;
    if (bad_.count(i)) throw DecodeError(where(i), "bad bytes");
    if (fatal_.count(i)) KD_FAIL("disk on fire at image ", i);
    Image im;
    im.height = 2;
    im.width = 3;
    im.label = label(i);
    im.pixels.assign(18, uint8_t(i % 251));
    return im;
  }
  int max_active() const { return max_active_; }

 private:
  int64_t n_;
  std::set<int64_t> bad_, fatal_;
  int delay_ms_;
  mutable std::atomic<int> active_{0}, max_active_{0};
};

// Batch `step` of a seeded sampler: 16 indices drawn from mt19937_64(1000 + step).
std::vector<int64_t> sampled(int64_t step, int64_t n, int size = 16) {
  std::mt19937_64 rng(uint64_t(1000 + step));
  std::vector<int64_t> v(static_cast<size_t>(size));
  for (int64_t& x : v) x = int64_t(rng() % uint64_t(n));
  return v;
}

LoaderOptions options(int batch, int threads, int prefetch) {
  LoaderOptions o;
  o.batch_size = batch;
  o.num_threads = threads;
  o.prefetch_batches = prefetch;
  return o;
}

// Loader options whose bad-image reports go into `log`.
LoaderOptions logging(int batch, int threads, int prefetch, std::vector<std::string>* log) {
  LoaderOptions o = options(batch, threads, prefetch);
  o.on_bad_image = [log](const std::string& origin, const std::string& reason) { log->push_back(origin); };
  return o;
}

TEST(Loader, BatchesFollowThePlanInStepOrderWhateverTheThreads) {
  auto source = std::make_shared<FakeSource>(500);
  const int64_t steps = 12;
  BatchPlan plan = [&](int64_t step) { return step < steps ? sampled(step, 500) : std::vector<int64_t>(); };
  for (auto [threads, prefetch] : {std::pair{1, 1}, {4, 2}, {4, 6}}) {
    Loader loader(source, plan, options(16, threads, prefetch));
    for (int64_t step = 0; step < steps; ++step) {
      std::optional<Batch> b = loader.next();
      ASSERT_TRUE(b.has_value());
      EXPECT_EQ(b->step, step);
      const auto want = sampled(step, 500);
      ASSERT_EQ(b->indices, want) << threads << " threads, step " << step;
      ASSERT_EQ(b->size(), want.size());
      EXPECT_EQ(b->replaced, 0);
      for (size_t j = 0; j < want.size(); ++j) {
        EXPECT_EQ(b->labels[j], int(want[j] % 4));
        EXPECT_EQ(b->images[j].label, b->labels[j]);
        ASSERT_EQ(b->images[j].pixels, std::vector<uint8_t>(18, uint8_t(want[j] % 251)));
      }
    }
    EXPECT_FALSE(loader.next().has_value());
    EXPECT_EQ(loader.bad_images(), 0);
  }
  EXPECT_GE(source->max_active(), 2) << "four threads never decoded at the same time";
}

TEST(Loader, RangePlanHandsOutConsecutiveIndicesInBatchesThenEnds) {
  const BatchPlan plan = range_plan(5, 7, 3);
  EXPECT_EQ(plan(0), (std::vector<int64_t>{5, 6, 7}));
  EXPECT_EQ(plan(1), (std::vector<int64_t>{8, 9, 10}));
  EXPECT_EQ(plan(2), (std::vector<int64_t>{11})) << "the last batch is shorter";
  EXPECT_TRUE(plan(3).empty());
  EXPECT_TRUE(plan(-1).empty());
  EXPECT_TRUE(range_plan(0, 0, 4)(0).empty());
  EXPECT_THROW(range_plan(0, 4, 0), Error);
}

TEST(Loader, UnreadableImagesAreReplacedByTheNextReadableOneOfTheDataset) {
  // The replacement depends on the index alone (not on the batch), so ranks and micro-batches
  // that split a global batch fill its slots the same way.
  auto source = std::make_shared<FakeSource>(40, std::set<int64_t>{3, 10, 11, 39});
  const std::vector<std::vector<int64_t>> batches = {{1, 3, 5, 7}, {3, 10, 3, 2}, {10, 11, 12, 13}, {20, 39}};
  const std::vector<std::vector<int64_t>> delivered = {{1, 4, 5, 7}, {4, 12, 4, 2}, {12, 12, 12, 13}, {20, 0}};
  const std::vector<int> replaced = {1, 3, 2, 1};
  const std::vector<int64_t> bad_after = {1, 3, 3, 4};
  for (int threads : {1, 4}) {
    std::vector<std::string> log;
    Loader loader(source, fixed_plan(batches), logging(4, threads, 3, &log));
    for (size_t k = 0; k < batches.size(); ++k) {
      std::optional<Batch> b = loader.next();
      ASSERT_TRUE(b.has_value());
      EXPECT_EQ(b->indices, delivered[k]) << threads << " threads, batch " << k;
      EXPECT_EQ(b->replaced, replaced[k]);
      EXPECT_EQ(loader.bad_images(), bad_after[k]);
      for (size_t j = 0; j < b->size(); ++j) {
        EXPECT_EQ(b->labels[j], int(delivered[k][j] % 4));
        EXPECT_EQ(b->images[j].pixels[0], uint8_t(delivered[k][j]));
      }
    }
    EXPECT_FALSE(loader.next().has_value());
    EXPECT_EQ(log, (std::vector<std::string>{"fake #3", "fake #10", "fake #11", "fake #39"}))
        << "each bad image reported once, in order";
  }
}

TEST(Loader, ACorruptJpegIsSkippedReportedOnceOnStderrAndCounted) {
  TempDir dir;
  test::write_flat_png(dir.file("a/0.png"), 4, 4, 10);
  test::write_bytes(dir.file("a/1.jpg"), test::random_bytes(5000, 77));  // random bytes named .jpg
  test::write_flat_png(dir.file("b/2.png"), 4, 4, 20);
  test::write_flat_png(dir.file("b/3.png"), 4, 4, 30);
  SourcePtr source = open_image_folder(dir.str());
  ASSERT_EQ(source->size(), 4);
  // Two epochs over the same images: the bad one comes up twice but is reported once.
  BatchPlan plan = fixed_plan({{0, 1}, {2, 3}, {1, 3}, {0, 2}});
  testing::internal::CaptureStderr();
  std::vector<std::vector<int64_t>> got;
  int64_t bad = -1;
  {
    Loader loader(source, plan, options(2, 2, 2));
    while (auto b = loader.next()) got.push_back(b->indices);
    bad = loader.bad_images();
  }
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(bad, 1);
  EXPECT_EQ(got, (std::vector<std::vector<int64_t>>{{0, 2}, {2, 3}, {2, 3}, {0, 2}}));
  const std::string path = dir.str() + "/a/1.jpg";
  EXPECT_CONTAINS(err, path);
  EXPECT_EQ(err.find(path), err.rfind(path)) << "reported more than once:\n" << err;
}

TEST(Loader, ALongRunOfUnreadableImagesIsAnErrorAndTheStreamGoesOn) {
  std::set<int64_t> bad;
  for (int64_t i = 1; i <= kMaxUnreadableInARow; ++i) bad.insert(i);
  auto source = std::make_shared<FakeSource>(kMaxUnreadableInARow + 10, bad, std::set<int64_t>{}, 0);
  std::vector<std::string> log;
  Loader loader(source, fixed_plan({{0}, {1, 2}, {kMaxUnreadableInARow + 3}}), logging(2, 2, 2, &log));
  EXPECT_EQ(loader.next()->step, 0);
  try {
    loader.next();
    FAIL() << "no error for " << kMaxUnreadableInARow << " unreadable images in a row";
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "batch 1");
    EXPECT_CONTAINS(e.what(), "in a row are unreadable");
    EXPECT_CONTAINS(e.what(), "fake #1: bad bytes");
  }
  EXPECT_EQ(loader.next()->indices, std::vector<int64_t>{kMaxUnreadableInARow + 3});
}

TEST(Loader, OtherErrorsOfAWorkerReachTheCallerOfNext) {
  for (int threads : {1, 3}) {
    auto source = std::make_shared<FakeSource>(10, std::set<int64_t>{}, std::set<int64_t>{5});
    Loader loader(source, fixed_plan({{0, 1}, {4, 5, 6}, {7}}), options(3, threads, 3));
    EXPECT_EQ(loader.next()->step, 0);
    try {
      loader.next();
      FAIL() << "the worker's error was lost";
    } catch (const Error& e) {
      EXPECT_CONTAINS(e.what(), "disk on fire at image 5");
    }
    EXPECT_EQ(loader.next()->step, 2);
    EXPECT_FALSE(loader.next().has_value());
  }
}

TEST(Loader, PlanErrorsArriveInTheirStepAndEndTheStream) {
  auto source = std::make_shared<FakeSource>(10);
  BatchPlan plan = [](int64_t step) -> std::vector<int64_t> {
    if (step == 2) KD_FAIL("sampler broke at step ", step);
    return {step, step + 1};
  };
  Loader loader(source, plan, options(2, 2, 4));
  EXPECT_EQ(loader.next()->indices, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(loader.next()->indices, (std::vector<int64_t>{1, 2}));
  EXPECT_THROW(
      {
        try {
          loader.next();
        } catch (const Error& e) {
          EXPECT_CONTAINS(e.what(), "sampler broke at step 2");
          throw;
        }
      },
      Error);
  EXPECT_FALSE(loader.next().has_value());

  Loader too_big(source, fixed_plan({{0, 1, 2}}), options(2, 1, 1));
  EXPECT_THROW(too_big.next(), Error);
  Loader out_of_range(source, fixed_plan({{0, 10}}), options(2, 1, 1));
  EXPECT_THROW(out_of_range.next(), Error);
}

TEST(Loader, StartsAtTheFirstStepAndEndsWithNullopt) {
  auto source = std::make_shared<FakeSource>(10);
  LoaderOptions o = options(1, 2, 2);
  o.first_step = 1;
  Loader loader(source, fixed_plan({{0}, {1}, {2}}), o);
  EXPECT_EQ(loader.next()->step, 1);
  EXPECT_EQ(loader.next()->indices, std::vector<int64_t>{2});
  EXPECT_FALSE(loader.next().has_value());
  EXPECT_FALSE(loader.next().has_value());
}

TEST(Loader, DestructorJoinsWhileThreadsAreMidBatch) {
  auto source = std::make_shared<FakeSource>(1000, std::set<int64_t>{}, std::set<int64_t>{}, 20);
  BatchPlan endless = [](int64_t step) { return sampled(step, 1000, 32); };
  const auto start = std::chrono::steady_clock::now();
  {
    Loader idle(source, endless, options(32, 4, 4));  // destroyed before anyone asks for a batch
  }
  {
    Loader loader(source, endless, options(32, 4, 4));
    ASSERT_TRUE(loader.next().has_value());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // workers are inside the next batches
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // One batch is 32 loads of <= 20 ms on 4 threads (~0.2 s); finishing the queue would take longer.
  EXPECT_LT(seconds, 3.0);
}

TEST(Loader, RejectsBadSettings) {
  auto source = std::make_shared<FakeSource>(4);
  EXPECT_THROW(Loader(source, fixed_plan({{0}}), options(0, 1, 1)), Error);
  EXPECT_THROW(Loader(source, fixed_plan({{0}}), options(1, 0, 1)), Error);
  EXPECT_THROW(Loader(source, fixed_plan({{0}}), options(1, 1, 0)), Error);
  EXPECT_THROW(Loader(nullptr, fixed_plan({{0}}), options(1, 1, 1)), Error);
  EXPECT_THROW(Loader(std::make_shared<FakeSource>(0), fixed_plan({{0}}), options(1, 1, 1)), Error);
}

}  // namespace
}  // namespace kd
