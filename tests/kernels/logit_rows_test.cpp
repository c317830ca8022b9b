// The row kernels' index arithmetic (kernels/logit_rows.h), run here where CI runs: every
// element of a row at any 16-byte phase is visited exactly once, quads are aligned, and the
// launch plan stages rows exactly when they fit.
#include "kernels/logit_rows.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "kernels/check.h"

namespace kd {
namespace {

// Visits a row of n floats that starts `misalign` floats into a 16-byte block with `threads`
// threads and returns how often each element was visited; fails on an unaligned quad.
template <int THREADS>
std::vector<int> visits(int32_t n, int32_t misalign) {
  std::vector<int> count(size_t(n), 0);
  const RowQuads q = row_quads(n, misalign);
  for (int32_t tid = 0; tid < THREADS; ++tid)
    visit_row<THREADS>(
        q, tid, [&](int32_t c) { ++count.at(size_t(c)); },
        [&](int32_t c) {
          EXPECT_EQ((misalign + c) % 4, 0) << "quad at " << c << " of a row at phase " << misalign;
          for (int32_t j = 0; j < 4; ++j) ++count.at(size_t(c + j));
        });
  return count;
}

TEST(LogitRows, EveryElementIsVisitedOnceAtEveryPhase) {
  for (int32_t misalign = 0; misalign < 4; ++misalign)
    for (int32_t n : {1, 2, 3, 4, 5, 7, 8, 9, 10, 1000, 1531, 5003, 21843}) {
      const RowQuads q = row_quads(n, misalign);
      EXPECT_EQ(q.head + 4 * q.quads + q.tail, n);
      EXPECT_LE(q.head, 3);
      EXPECT_LE(q.tail, 3);
      EXPECT_EQ(q.head, std::min(n, (4 - misalign) % 4)) << n << " at phase " << misalign;
      for (int c : visits<4>(n, misalign)) ASSERT_EQ(c, 1) << n << " floats at phase " << misalign << ", 4 threads";
      for (int c : visits<128>(n, misalign)) ASSERT_EQ(c, 1) << n << " floats at phase " << misalign << ", 128 threads";
    }
}

TEST(LogitRows, MisalignmentIsTheFloatPositionInItsSixteenBytes) {
  alignas(16) float row[8] = {};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(float_misalignment(row + i), i % 4);
}

TEST(LogitRows, PlanStagesRowsExactlyWhenTheyFitAndKeepsRoomForTheShift) {
  const int64_t hopper = 227 * 1024;
  for (int64_t classes : {1, 3, 10, 1000, 1024, 1025, 4097, 8192, 8193, 21843})
    for (int64_t rows : {1, 2, 4})
      for (int64_t budget : {LogitRowsPlan::kDefaultSharedBytes, hopper}) {
        const LogitRowsPlan p = logit_rows_plan(classes, rows, 32 * (rows - 1), budget);
        EXPECT_EQ(p.row_stride % 4, 0);
        EXPECT_GE(p.row_stride, classes + 3) << "a staged row shifted by up to 3 floats stays in its region";
        const int64_t staged = 32 * (rows - 1) + rows * p.row_stride * 4;
        EXPECT_EQ(p.cache_rows, staged <= budget);
        EXPECT_EQ(p.shared_bytes, p.cache_rows ? staged : 32 * (rows - 1));
        EXPECT_LE(p.shared_bytes, budget);
        EXPECT_EQ(p.threads, classes <= 1024 ? 128 : classes <= 4096 ? 256 : classes <= 8192 ? 512 : 1024);
      }
  // ImageNet-21k: the student and one teacher row fit Hopper's opt-in limit, not the default.
  EXPECT_TRUE(logit_rows_plan(21843, 2, 32, hopper).cache_rows);
  EXPECT_FALSE(logit_rows_plan(21843, 2, 32, LogitRowsPlan::kDefaultSharedBytes).cache_rows);
  EXPECT_FALSE(logit_rows_plan(21843, 3, 64, hopper).cache_rows) << "two teachers re-read L2";
  EXPECT_THROW(logit_rows_plan(0, 1, 0, hopper), Error);
  EXPECT_THROW(logit_rows_plan(10, 1, 8, hopper), Error) << "the header keeps the rows 16-byte aligned";
}

}  // namespace
}  // namespace kd
