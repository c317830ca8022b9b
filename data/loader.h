// Loader: background threads that decode the images of the next batches while the training step
// runs. The caller decides which images form batch k (a BatchPlan, usually the seeded sampler);
// the loader only decodes and delivers, in step order, every image in the slot it was asked for.
//
// Determinism: batch k depends only on plan(k) and on which of its images are unreadable, never
// on thread timing. An unreadable image (DecodeError) is replaced by the next readable image of
// the dataset (index + 1, + 2, ..., cyclically), so batches stay full and a slot's content is a
// function of its index alone: data-parallel ranks and micro-batch splits see the same images.
// It is reported once per source index, from next() on the caller's thread, so reports and the
// bad_images() count also advance in step order. kMaxUnreadableInARow unreadable images in a
// row are an error.
//
// Threading: workers take single images (not whole batches) from the earliest unfinished batch,
// so several threads finish batch k before anyone starts k+1. At most `prefetch_batches` batches
// are planned but not yet handed out. All waiting is on condition variables. The destructor stops
// the workers (each finishes the image in hand) and joins them, also while batches are half done.
#pragma once
#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "data/source.h"

namespace kd {

constexpr int64_t kMaxUnreadableInARow = 256;

struct Batch {
  int64_t step = 0;
  std::vector<Image> images;     // slot j holds the image asked for in slot j (or its replacement)
  std::vector<int32_t> labels;   // labels[j] belongs to images[j]
  std::vector<int64_t> indices;  // the source index that filled slot j (differs where replaced)
  int replaced = 0;              // slots filled with a neighbour because their image was unreadable
  size_t size() const { return images.size(); }
};

// Source indices of batch `step` (1..batch_size of them). Called with step = first_step,
// first_step + 1, ... in order, one call at a time, from one of the loader threads. An empty
// vector ends the stream; an exception becomes the error of that batch.
using BatchPlan = std::function<std::vector<int64_t>(int64_t step)>;

// A plan that hands out a fixed list of batches (then ends).
BatchPlan fixed_plan(std::vector<std::vector<int64_t>> batches);
// Source indices first .. first + count - 1 in order, batch_size at a time (the last batch may
// be shorter), then the end: evaluation's and the teachers' passes over a fixed set of images.
BatchPlan range_plan(int64_t first, int64_t count, int64_t batch_size);

struct LoaderOptions {
  int batch_size = 0;          // the most indices one batch may have
  int num_threads = 4;         // decoding threads, >= 1
  int prefetch_batches = 2;    // batches decoded ahead of the caller, >= 1
  int64_t first_step = 0;      // the first step to plan (a resumed run starts where it stopped)
  // What the views of slot `slot` of batch `step` read of an image of the given full size; the
  // source then decodes only that (DataSource::load_view; data/image.h ViewNeed). Called on the
  // loader's threads, also for an unreadable image's replacement (same slot, its own size), so it
  // must be thread-safe and a function of its arguments. Unset: whole images.
  std::function<ViewNeed(int64_t step, size_t slot, int height, int width)> view_need;
  // Told about each unreadable image once; default: a line on stderr. Called on next()'s thread.
  std::function<void(const std::string& origin, const std::string& reason)> on_bad_image;
};

class Loader {
 public:
  Loader(SourcePtr source, BatchPlan plan, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch in step order; blocks until it is decoded. std::nullopt once the plan has
  // ended. Rethrows an error raised while planning or decoding this batch.
  std::optional<Batch> next();

  // Distinct unreadable images reported so far (by next(), so it is reproducible per step).
  int64_t bad_images() const { return bad_images_.load(); }
  // The same, by what was wrong (data/image.h decode_error_kind_name), the kinds seen so far.
  std::vector<std::pair<std::string, int64_t>> bad_images_by_kind() const;
  const DataSource& source() const { return *source_; }

 private:
  struct Pending;  // one planned batch being decoded
  void work();
  bool claim(Pending*& batch, size_t& slot);  // called with mu_ held
  void plan_next();                           // called with mu_ held
  Batch finish(Pending& pending);

  SourcePtr source_;
  BatchPlan plan_;
  LoaderOptions options_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // workers: a slot to decode or room to plan
  std::condition_variable ready_cv_;  // next(): the front batch is complete
  std::deque<std::unique_ptr<Pending>> window_;  // planned batches not yet handed out, in step order
  int64_t next_step_ = 0;             // the step plan() is asked for next
  bool plan_ended_ = false;
  bool stop_ = false;
  // Unreadable images seen by the workers: index -> (origin, reason); not decoded again.
  struct BadImage {
    std::string origin, reason;
    DecodeError::Kind kind;
  };
  std::unordered_map<int64_t, BadImage> known_bad_;
  std::array<int64_t, 6> bad_by_kind_{};  // indexed by DecodeError::Kind; guarded by mu_

  std::unordered_set<int64_t> reported_;  // guarded by mu_ too
  std::atomic<int64_t> bad_images_{0};
  std::vector<std::thread> threads_;
};

}  // namespace kd
