// kd's version: printed by `kd --version` and `kd info`, and compared across the ranks of a job.
#pragma once

namespace kd {
constexpr const char* kVersion = "0.2.0";
}  // namespace kd
