// The one-pass GroupNorm kernels' launch plan (host code, tested on the CPU).
#include "kernels/groupnorm_one_pass.h"

#include "kernels/check.h"

namespace kd {

namespace {

constexpr int64_t kWholeSectorChannels = 16;  // 32 bytes of bf16: one DRAM sector of each pixel row

bool power_of_two(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

// Dynamic shared memory of a block: the span's values (x; the backward also dy), then for the
// backward each warp's per-channel float pair sums and the span's double pair totals.
int64_t smem_bytes_for(const GroupNormShape& s, int64_t span, bool backward, int threads) {
  const int64_t values = s.hw * span * int64_t(sizeof(bf16));
  const int64_t copies = (values + 15) / 16 * 16 * (backward ? 2 : 1);
  if (!backward) return copies;
  return copies + int64_t(threads / 32) * span * 8 + span * 16;
}

int default_threads_for(int64_t chunks) { return chunks >= 4096 ? 512 : 256; }

}  // namespace

GroupNormOnePassPlan groupnorm_one_pass_plan(const GroupNormShape& s, bool aligned16, int64_t max_smem_bytes,
                                             bool backward, int threads) {
  validate(s);
  KD_CHECK(threads == 0 || threads == 256 || threads == 512,
           "groupnorm one pass: blocks of 256 or 512 threads (0: the plan's choice), got ", threads);
  auto threads_for = [threads](int64_t chunks) { return threads ? threads : default_threads_for(chunks); };
  GroupNormOnePassPlan p;
  p.backward = backward;
  const int64_t cpg = s.channels_per_group();
  // 16-byte chunks where pointers allow and a thread's chunks can all hold the same channels:
  // K = span / 8 chunks per pixel, a power of two (it divides the thread count; the backward's
  // per-channel sums are reduced across lanes K apart).
  auto vec_for = [&](int64_t span) { return aligned16 && span % 8 == 0 && power_of_two(span / 8) && span / 8 <= 32 ? 8 : 1; };
  auto fits_smem = [&](int64_t span) {
    const int vec = vec_for(span);
    return smem_bytes_for(s, span, backward, threads_for(s.hw * span / vec)) <= max_smem_bytes;
  };
  // G: double the span while it covers less than a sector of each pixel row, the groups divide
  // evenly and the span still fits on chip; only spans of 16-byte chunks take several groups.
  int64_t groups_per_block = 1;
  if (aligned16 && power_of_two(cpg))
    while (groups_per_block < kGroupNormMaxGroupsPerBlock && groups_per_block * cpg < kWholeSectorChannels &&
           s.groups % (2 * groups_per_block) == 0 &&
           fits_smem(2 * groups_per_block * cpg))
      groups_per_block *= 2;
  if (vec_for(groups_per_block * cpg) != 8) groups_per_block = 1;
  p.groups_per_block = int(groups_per_block);
  p.span = groups_per_block * cpg;
  p.vec = vec_for(p.span);
  p.chunks = s.hw * p.span / p.vec;
  p.threads = threads_for(p.chunks);
  p.blocks = s.n * (s.groups / groups_per_block);
  p.smem_bytes = smem_bytes_for(s, p.span, backward, p.threads);
  if (backward && p.vec != 8) {
    p.why_not = "the one-pass backward needs 16-byte aligned activations and spans of 8 x 2^k channels (<= 256) "
                "made of whole groups (" + std::to_string(cpg) + " channels a group here)";
    return p;
  }
  if (p.smem_bytes > max_smem_bytes) {
    p.why_not = "a group of " + std::to_string(s.group_size()) + " values needs " + std::to_string(p.smem_bytes) +
                " bytes of shared memory, the device allows " + std::to_string(max_smem_bytes) + " per block";
    return p;
  }
  if (p.blocks >= (int64_t(1) << 31)) {
    p.why_not = std::to_string(p.blocks) + " blocks do not fit one grid";
    return p;
  }
  p.fits = true;
  return p;
}

}  // namespace kd
