// Test hook: faults injected on request, so tests can prove that kd survives them. Always
// compiled in; the environment variable KD_FAULT is read once, and without it every call below
// is a load and a branch. Nothing here is for production use.
//
// KD_FAULT is a comma-separated list of faults:
//   <point>:<n>                     _exit(137) (as SIGKILL would) the n-th time <point> is reached
//   <point>:<n>=stop                raise SIGSTOP there instead: the test signals the stopped
//                                   process and continues it, so a signal lands at a known place
//   enospc:<file>:<n>[+][@<byte>]   the n-th write (n+: and every later one) to a file whose path
//   eio:<file>:<n>[+][@<byte>]      contains <file> fails with ENOSPC / EIO once <byte> bytes
//                                   of it are written (default 0)
//   nan.<site>:step=<s>             the value at <site> becomes NaN (inf.<site>: +Inf) at
//   inf.<site>:step=<s>             training step s (0-based, as error messages number steps)
// Points: file.after_write, file.after_fsync, file.after_rename (every atomic file write),
// checkpoint.before_latest, checkpoint.before_prune, loop.step, evaluate.batch.
// Sites: teacher_logits, student_grads, loss. A "write" is one whole file (atomic writers) or
// one appended record (metrics.jsonl).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace kd::fault {

// Marks a named point; exits the process when KD_FAULT asks for a kill here.
void point(const char* name);

// How a write that KD_FAULT makes fail should fail: after `at_byte` bytes, with errno `error`.
struct WriteFault {
  size_t at_byte = 0;
  int error = 0;
};
// Called once per write of `path`; counts the write and says whether it is to fail.
std::optional<WriteFault> next_write(const std::string& path);

// The non-finite value KD_FAULT asks for at `site` on `step` (NaN or +Inf), if any.
std::optional<float> nonfinite(const char* site, int64_t step);
// Whether KD_FAULT asks for any non-finite value (a captured step would not repeat the host's
// check for one, so it runs uncaptured).
bool nonfinite_planned();

}  // namespace kd::fault
