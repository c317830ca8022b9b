// kd forecast on run folders as kd writes them (summary.json, config.toml): the table and the
// plain sentence for three schedule lengths, JSON on request, and a clear error for a folder
// that is not a finished run. The fitting itself is tested in forecast_test.py.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "tests/support/testing.h"
#include "tests/tools/tool_fixtures.h"

namespace kd {
namespace {

void write_run(const test::TempDir& dir, const std::string& name, double epochs, double top1, double agreement) {
  std::ofstream(dir.file(name + "/summary.json")) << "{\n  \"mode\": \"distill\",\n  \"epochs\": " << epochs
                                                   << ",\n  \"student_top1\": " << top1
                                                   << ",\n  \"agreement\": " << agreement << "\n}\n";
  std::ofstream(dir.file(name + "/config.toml")) << "[run]\nepochs = " << epochs << "\n[optim]\nlr = 0.01\n";
}

TEST(Forecast, ForecastsFromRunsOfOneSetupAtThreeLengths) {
  test::TempDir dir;
  for (double e : {150.0, 300.0, 600.0})
    write_run(dir, "fm" + std::to_string(int(e)), e, (86 - 30 / std::sqrt(e)) / 100, (95 - 20 / std::sqrt(e)) / 100);
  const auto r = test::run_kd({"forecast", dir.str() + "/fm150", dir.str() + "/fm300", dir.str() + "/fm600"});
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("schedule lengths (epochs): 150, 300, 600"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("4x the epochs (2400) would likely give +"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("Provisional"), std::string::npos) << r.out;
  const auto json = test::run_kd({"forecast", dir.str() + "/fm150", dir.str() + "/fm300", dir.str() + "/fm600", "--json"});
  ASSERT_EQ(json.code, 0) << json.err;
  EXPECT_NE(json.out.find("\"student_top1\""), std::string::npos) << json.out;
  EXPECT_NE(json.out.find("\"agreement\""), std::string::npos) << json.out;
  const auto bad = test::run_kd({"forecast", dir.str()});
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find(dir.str() + " has no summary.json"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace kd
