// The run log's metrics lines and console: every logged step records the share of time the step
// waited for the loader, and a share of 10% or more is said on the console with what to change.
#include "train/run_log.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tests/data/data_fixtures.h"

namespace kd {
namespace {

StepRecord record(int64_t step, double wait_share) {
  StepRecord r;
  r.step = step, r.total = 100, r.epoch = 0.5, r.loss = 0.25, r.lr = 1e-3, r.images_per_s = 500;
  r.data_wait_share = wait_share;
  return r;
}

TEST(RunLog, LoggedStepsRecordTheDataWaitAndSayWhenTheLoaderIsTheBottleneck) {
  test::TempDir dir;
  testing::internal::CaptureStderr();
  {
    RunLog log(dir.str(), RunLogStart{});
    log.logged(record(10, 0.02));
    log.logged(record(20, 0.37));
  }
  const std::string console = testing::internal::GetCapturedStderr();
  const std::string metrics = test::read_text(dir.str() + "/metrics.jsonl");
  EXPECT_NE(metrics.find("\"step\": 10, "), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\"data_wait_share\": 0.02"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\"data_wait_share\": 0.37"), std::string::npos) << metrics;
  EXPECT_NE(console.find("the step waited for data 37% of the time"), std::string::npos) << console;
  EXPECT_EQ(console.find("waited for data 2%"), std::string::npos) << "below 10% it stays quiet:\n" << console;
}

}  // namespace
}  // namespace kd
