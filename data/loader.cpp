// The loader's threads. One mutex guards the window of planned batches; workers hold it only to
// claim a slot or to store a result, never while decoding. A batch is "complete" when every slot
// has come back (decoded, unreadable, or given up after an error), and only a complete batch is
// handed out and freed, so a worker's pointer to its batch stays valid while it decodes.
#include "data/loader.h"

#include <algorithm>
#include <cstdio>

namespace kd {

struct Loader::Pending {
  int64_t step = 0;
  std::vector<int64_t> indices;                    // what the plan asked for, per slot
  std::vector<int64_t> used;                       // what filled the slot (differs where replaced)
  std::vector<Image> images;
  std::vector<std::vector<int64_t>> skipped;       // per slot: the unreadable indices passed over
  size_t claimed = 0;                              // slots handed to workers, in slot order
  size_t done = 0;                                 // slots that came back
  std::exception_ptr error;                        // planning failed or a non-decode error
  bool complete() const { return done == indices.size(); }
};

BatchPlan fixed_plan(std::vector<std::vector<int64_t>> batches) {
  auto list = std::make_shared<const std::vector<std::vector<int64_t>>>(std::move(batches));
  return [list](int64_t step) {
    if (step < 0 || step >= int64_t(list->size())) return std::vector<int64_t>();
    return (*list)[size_t(step)];
  };
}

BatchPlan range_plan(int64_t first, int64_t count, int64_t batch_size) {
  KD_CHECK(first >= 0 && count >= 0 && batch_size >= 1,
           "range_plan: need first >= 0, count >= 0, batch_size >= 1, got ", first, ", ", count, ", ", batch_size);
  return [first, count, batch_size](int64_t step) {
    std::vector<int64_t> batch;
    for (int64_t i = step * batch_size; step >= 0 && i < std::min(count, (step + 1) * batch_size); ++i)
      batch.push_back(first + i);
    return batch;
  };
}

Loader::Loader(SourcePtr source, BatchPlan plan, LoaderOptions options)
    : source_(std::move(source)), plan_(std::move(plan)), options_(std::move(options)) {
  KD_CHECK(source_ != nullptr, "loader: no data source");
  KD_CHECK(source_->size() > 0, "loader: empty data source ", source_->describe());
  KD_CHECK(plan_ != nullptr, "loader: no batch plan");
  KD_CHECK(options_.batch_size >= 1, "loader: batch size ", options_.batch_size);
  KD_CHECK(options_.num_threads >= 1, "loader: ", options_.num_threads, " threads (need at least 1)");
  KD_CHECK(options_.prefetch_batches >= 1, "loader: prefetch of ", options_.prefetch_batches, " batches");
  KD_CHECK(options_.first_step >= 0, "loader: first step ", options_.first_step);
  if (!options_.on_bad_image) {
    options_.on_bad_image = [](const std::string& origin, const std::string& reason) {
      std::fprintf(stderr, "kd: skipping unreadable image %s: %s\n", origin.c_str(), reason.c_str());
    };
  }
  next_step_ = options_.first_step;
  try {
    for (int t = 0; t < options_.num_threads; ++t) threads_.emplace_back([this] { work(); });
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (std::thread& t : threads_) t.join();
    throw;
  }
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  ready_cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

// Asks the plan for the next step and appends it to the window. A plan that throws, or hands out
// a bad batch, ends the stream; the error is delivered in that step's place.
void Loader::plan_next() {
  auto pending = std::make_unique<Pending>();
  pending->step = next_step_++;
  try {
    pending->indices = plan_(pending->step);
    const int64_t n = int64_t(pending->indices.size());
    KD_CHECK(n <= options_.batch_size, "loader: the plan gave batch ", pending->step, " ", n,
             " images, more than the batch size ", options_.batch_size);
    for (int64_t index : pending->indices)
      KD_CHECK(index >= 0 && index < source_->size(), "loader: batch ", pending->step, " asks for image ", index,
               " of ", source_->describe());
  } catch (...) {
    pending->error = std::current_exception();
    pending->indices.clear();
    plan_ended_ = true;
  }
  if (!pending->error && pending->indices.empty()) {
    plan_ended_ = true;  // the end of the stream
    ready_cv_.notify_all();
    return;
  }
  const size_t n = pending->indices.size();
  pending->images.resize(n);
  pending->used = pending->indices;
  pending->skipped.resize(n);
  window_.push_back(std::move(pending));
  if (window_.back()->complete()) ready_cv_.notify_all();
}

// Finds the first unclaimed slot, earliest batch first, planning a new batch when all are
// claimed and the window has room. False when there is nothing to do.
bool Loader::claim(Pending*& batch, size_t& slot) {
  for (;;) {
    for (const auto& pending : window_) {
      if (pending->claimed < pending->indices.size()) {
        batch = pending.get();
        slot = pending->claimed++;
        return true;
      }
    }
    if (plan_ended_ || int(window_.size()) >= options_.prefetch_batches) return false;
    plan_next();
  }
}

void Loader::work() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    Pending* batch = nullptr;
    size_t slot = 0;
    while (!stop_ && !claim(batch, slot)) work_cv_.wait(lock);
    if (stop_) return;

    // The slot's image, or the next readable one of the dataset (index + 1, + 2, ... cyclically).
    // The replacement depends on the index alone, never on the batch, so every rank of a
    // data-parallel run and every micro-batch split fills a slot the same way.
    const int64_t size = source_->size(), limit = std::min<int64_t>(size, kMaxUnreadableInARow);
    int64_t index = batch->indices[slot];
    std::exception_ptr error;
    for (int64_t tries = 0;; ++tries, index = (index + 1) % size) {
      if (tries == limit) {
        error = std::make_exception_ptr(Error(
            "loader: " + std::to_string(limit) + " images in a row are unreadable from " +
            source_->where(batch->indices[slot]) + " on (batch " + std::to_string(batch->step) + "; the first: " +
            known_bad_.at(batch->indices[slot]).origin + ": " + known_bad_.at(batch->indices[slot]).reason + ")"));
        break;
      }
      if (known_bad_.count(index)) {  // seen before: don't decode (nor report) it again
        batch->skipped[slot].push_back(index);
        continue;
      }
      lock.unlock();
      Image image;
      BadImage why;
      bool unreadable = false;
      try {
        if (options_.view_need) {
          const int64_t step = batch->step;
          image = source_->load_view(index, [this, step, slot](int height, int width) {
            return options_.view_need(step, slot, height, width);
          });
        } else {
          image = source_->load(index);
        }
      } catch (const DecodeError& e) {
        unreadable = true;
        why = {e.origin(), e.reason(), e.kind()};
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      if (error) break;
      if (unreadable) {
        known_bad_.emplace(index, std::move(why));
        batch->skipped[slot].push_back(index);
        continue;
      }
      batch->images[slot] = std::move(image);
      batch->used[slot] = index;
      break;
    }
    if (error) {
      // Anything but a bad image is fatal for this batch: keep the first error and give up the
      // slots nobody has started, so the batch completes as soon as the running ones return.
      if (!batch->error) batch->error = error;
      batch->done += batch->indices.size() - batch->claimed;
      batch->claimed = batch->indices.size();
    }
    ++batch->done;
    if (batch->complete()) ready_cv_.notify_all();
  }
}

std::vector<std::pair<std::string, int64_t>> Loader::bad_images_by_kind() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, int64_t>> out;
  for (size_t k = 0; k < bad_by_kind_.size(); ++k)
    if (bad_by_kind_[k] > 0) out.emplace_back(decode_error_kind_name(DecodeError::Kind(k)), bad_by_kind_[k]);
  return out;
}

std::optional<Batch> Loader::next() {
  std::unique_ptr<Pending> front;
  {
    std::unique_lock<std::mutex> lock(mu_);
    ready_cv_.wait(lock, [this] {
      return stop_ || (window_.empty() ? plan_ended_ : window_.front()->complete());
    });
    KD_CHECK(!stop_, "loader: next() called while the loader is being destroyed");
    if (window_.empty()) return std::nullopt;
    front = std::move(window_.front());
    window_.pop_front();
  }
  work_cv_.notify_all();  // room in the window: workers may plan another batch
  if (front->error) std::rethrow_exception(front->error);
  return finish(*front);
}

// Reports the unreadable images passed over (once each, in slot order). Runs on the caller's
// thread, so reports come in step order.
Batch Loader::finish(Pending& pending) {
  const size_t n = pending.indices.size();
  Batch batch;
  batch.step = pending.step;
  batch.images.resize(n);
  batch.labels.resize(n);
  batch.indices = pending.used;
  for (size_t j = 0; j < n; ++j) {
    std::vector<BadImage> reports;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int64_t bad : pending.skipped[j])
        if (reported_.insert(bad).second) {
          reports.push_back(known_bad_.at(bad));
          ++bad_by_kind_[size_t(reports.back().kind)];
        }
    }
    for (const BadImage& r : reports) {
      bad_images_.fetch_add(1);
      options_.on_bad_image(r.origin, r.reason);
    }
    if (!pending.skipped[j].empty()) ++batch.replaced;
    batch.images[j] = std::move(pending.images[j]);
    batch.labels[j] = source_->label(batch.indices[j]);
    batch.images[j].label = batch.labels[j];
  }
  return batch;
}

}  // namespace kd
