// A device-to-host copy that the host does not wait for (issue 16 item 3): start() queues the
// copy of `bytes` of device memory into page-locked host memory on the context's stream and
// records an event; ready() asks whether it arrived (no wait), wait() waits for it and returns
// the bytes. The training loop reads each log window's statistics this way: the device never
// idles for the read. On a CPU context the copy happens in start() and is ready at once.
#pragma once
#include <cstddef>
#include <memory>

#include "engine/context.h"

namespace kd {

class AsyncReadback {
 public:
  explicit AsyncReadback(Context& ctx);
  ~AsyncReadback();  // waits for a copy in flight before freeing its memory
  AsyncReadback(const AsyncReadback&) = delete;
  AsyncReadback& operator=(const AsyncReadback&) = delete;

  // Queues the copy (after the work queued so far on the context's stream). The previous copy
  // must have been waited for (or be ready): its bytes are overwritten.
  void start(const void* device_src, size_t bytes);
  bool in_flight() const { return in_flight_; }
  bool ready() const;  // the copy arrived (true when none is in flight)
  const void* wait();  // waits for the copy; the bytes until the next start()
  size_t bytes() const { return bytes_; }

 private:
  Context& ctx_;
  void* host_ = nullptr;  // page-locked on a CUDA context
  size_t capacity_ = 0, bytes_ = 0;
  void* event_ = nullptr;  // cudaEvent_t
  bool in_flight_ = false;
};

}  // namespace kd
