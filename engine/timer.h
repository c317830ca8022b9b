// Per-phase timing of a training step: CUDA events on a GPU (no synchronisation until the
// totals are read), a steady clock on the CPU.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/context.h"

namespace kd {

class PhaseTimer {
 public:
  explicit PhaseTimer(Context& ctx);
  ~PhaseTimer();
  // Ends the running phase (if any) and starts `phase`.
  void mark(const std::string& phase);
  // Ends the running phase.
  void stop();
  // Milliseconds per phase, summed over everything since the last reset, in first-seen order.
  // Synchronises the device.
  std::vector<std::pair<std::string, double>> totals_ms();
  void reset();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kd
