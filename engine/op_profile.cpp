#include "engine/op_profile.h"

#include <algorithm>

namespace kd {

namespace {
thread_local OpProfile* g_active = nullptr;
}

OpProfile::OpProfile(Context& ctx) : timer_(ctx), previous_(g_active) { g_active = this; }

OpProfile::~OpProfile() { g_active = previous_; }

OpProfile* OpProfile::active() { return g_active; }

void OpProfile::detail(const std::string& shape, double flops, double bytes) {
  detail_ = shape, detail_flops_ = flops, detail_bytes_ = bytes;
}

void OpProfile::begin(const char* op) {
  const std::string label = detail_.empty() ? std::string(op) : std::string(op) + " " + detail_;
  ++calls_[label];
  flops_[label] += detail_flops_;
  bytes_[label] += detail_bytes_;
  detail_.clear(), detail_flops_ = detail_bytes_ = 0;
  timer_.mark(label);
}

void OpProfile::end() { timer_.stop(); }

std::vector<OpProfile::Row> OpProfile::rows() {
  std::vector<Row> out;
  for (const auto& [label, ms] : timer_.totals_ms())
    out.push_back({label, calls_[label], ms, flops_[label], bytes_[label]});
  std::stable_sort(out.begin(), out.end(), [](const Row& a, const Row& b) { return a.ms > b.ms; });
  return out;
}

}  // namespace kd
