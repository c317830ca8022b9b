// Per-op times of whatever runs while an OpProfile is alive (kd bench --ops): every op that goes
// through ops' dispatch is timed (CUDA events on a GPU, no synchronisation until rows() reads
// them; a steady clock on the CPU) under its name, and convolutions under their shape too, with
// the call count and, where the op states them, the FLOPs or minimal bytes, so a report can put
// each next to its floor (the GEMM rate, copy bandwidth). One profile at a time per thread; ops on other threads are
// not timed.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/timer.h"

namespace kd {

class OpProfile {
 public:
  explicit OpProfile(Context& ctx);
  ~OpProfile();
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  struct Row {
    std::string label;  // "conv2d_backward_filter conv 3x3/1 pad 1 g1 [128,40,40,64]->[128,40,40,64]"
    int64_t calls = 0;
    double ms = 0;     // all calls together
    double flops = 0;  // all calls together; 0 where the op does not state it
    double bytes = 0;  // minimal bytes moved, all calls together; 0 where the op does not state it
  };
  // Largest total time first. Waits for the device.
  std::vector<Row> rows();

  // The profile ops report to on this thread (null: none).
  static OpProfile* active();
  // Called by the ops: detail() names the next op's shape and its FLOPs (convolutions) or
  // minimal bytes (normalisation), begin() and end() bracket one op.
  void detail(const std::string& shape, double flops, double bytes);
  void begin(const char* op);
  void end();

 private:
  PhaseTimer timer_;
  std::map<std::string, int64_t> calls_;
  std::map<std::string, double> flops_, bytes_;
  std::string detail_;
  double detail_flops_ = 0, detail_bytes_ = 0;
  OpProfile* previous_;
};

}  // namespace kd
