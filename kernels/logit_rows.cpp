// logit_rows_plan: the launch shape of the row kernels over logits (kernels/logit_rows.h).
#include "kernels/logit_rows.h"

#include "kernels/check.h"

namespace kd {

LogitRowsPlan logit_rows_plan(int64_t classes, int64_t row_count, int64_t header_bytes, int64_t max_shared_bytes) {
  KD_CHECK(classes >= 1 && row_count >= 1 && header_bytes >= 0 && header_bytes % 16 == 0,
           "logit_rows_plan: need classes >= 1, row_count >= 1 and a header of a multiple of 16 bytes, got ", classes,
           ", ", row_count, ", ", header_bytes);
  LogitRowsPlan p;
  p.threads = classes <= 1024 ? 128 : classes <= 4096 ? 256 : classes <= 8192 ? 512 : 1024;
  p.row_stride = (classes + 3 + 3) / 4 * 4;  // room for the copy's shift of up to 3 floats, whole quads
  const int64_t staged = header_bytes + row_count * p.row_stride * int64_t(sizeof(float));
  p.cache_rows = staged <= max_shared_bytes;
  p.shared_bytes = p.cache_rows ? staged : header_bytes;
  return p;
}

}  // namespace kd
