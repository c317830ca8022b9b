// The one-pass GroupNorm forward's launch plan (host code, tested on the CPU).
#include "kernels/groupnorm_one_pass.h"

namespace kd {

GroupNormOnePassPlan groupnorm_one_pass_plan(const GroupNormShape& s, bool aligned16, int64_t max_smem_bytes) {
  validate(s);
  GroupNormOnePassPlan p;
  const int64_t cpg = s.channels_per_group();
  p.vec = aligned16 && cpg % 8 == 0 ? 8 : 1;
  p.chunks = s.hw * cpg / p.vec;
  // Rounded up to 16 bytes: the copy is written and read as 16-byte vectors.
  p.smem_bytes = (s.group_size() * int64_t(sizeof(bf16)) + 15) / 16 * 16;
  // 512 threads where a group has enough chunks to give each of them a few; 256 otherwise.
  p.threads = p.chunks >= 4096 ? 512 : 256;
  if (p.smem_bytes > max_smem_bytes) {
    p.why_not = "a group of " + std::to_string(s.group_size()) + " values needs " + std::to_string(p.smem_bytes) +
                " bytes of shared memory, the device allows " + std::to_string(max_smem_bytes) + " per block";
    return p;
  }
  if (s.n * s.groups >= (int64_t(1) << 31)) {
    p.why_not = std::to_string(s.n * s.groups) + " (image, group) blocks do not fit one grid";
    return p;
  }
  p.fits = true;
  return p;
}

}  // namespace kd
