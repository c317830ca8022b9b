// kd plot on a trained teacher and a student distilled from it: the PNG is written, and the CSV
// beside it holds exactly metrics.jsonl's training losses, eval top-1s and agreements, labelled.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "tests/tools/tool_fixtures.h"

namespace kd::test {
namespace {

// (run, series, step) -> (epoch, value)
using Curves = std::map<std::tuple<std::string, std::string, int64_t>, std::pair<double, double>>;

Curves curves_of_metrics(const std::string& run_dir, const std::string& label) {
  Curves c;
  std::ifstream in(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto r = nlohmann::json::parse(line);
    const int64_t step = r["step"].get<int64_t>();
    const double epoch = r["epoch"].get<double>();
    if (!r.contains("eval")) {
      c[{label, "loss", step}] = {epoch, r["loss"].get<double>()};
      continue;
    }
    c[{label, "top1", step}] = {epoch, r["eval"]["student_top1"].get<double>()};
    if (r["eval"].contains("agreement")) c[{label, "agreement", step}] = {epoch, r["eval"]["agreement"].get<double>()};
  }
  return c;
}

Curves curves_of_csv(const std::string& path) {
  Curves c;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "run,series,step,epoch,value");
  while (std::getline(in, line)) {
    std::stringstream fields(line);
    std::string run, series, step, epoch, value;
    std::getline(fields, run, ','), std::getline(fields, series, ','), std::getline(fields, step, ',');
    std::getline(fields, epoch, ','), std::getline(fields, value, ',');
    const auto key = std::make_tuple(run, series, std::stoll(step));
    EXPECT_EQ(c.count(key), 0u) << line << " twice";
    c[key] = {std::stod(epoch), std::stod(value)};
  }
  return c;
}

TEST(Plot, TheCsvBesideThePngHoldsExactlyTheRunsCurves) {
  if (run_command(std::string(KD_PYTHON) + " -c 'import matplotlib'").code != 0)
    GTEST_SKIP() << KD_PYTHON << " cannot import matplotlib (tools/install_deps.sh --test installs it)";
  TempDir dir;
  write_stripes_dataset(dir);
  const std::vector<std::string> every = {"run.log_every=3", "eval.every=4"};
  const auto teacher = run_kd(concat(
      {"train"}, concat(tiny_run(dir, "teacher", 8), concat(every, {"model.arch=resnetv2(depths=1, width=8)"}))));
  ASSERT_EQ(teacher.code, 0) << teacher.err;
  const auto student = run_kd(
      concat({"distill"}, concat(tiny_run(dir, "student", 8),
                                 concat(every, {"student.arch=resnetv2(depths=1, width=4)",
                                                "teacher.weights=" + dir.str() + "/runs/teacher/model.safetensors"}))));
  ASSERT_EQ(student.code, 0) << student.err;

  const std::string png = dir.str() + "/plots/curves.png";
  const auto plot = run_kd({"plot", dir.str() + "/runs/teacher", dir.str() + "/runs/student/", "-o", png, "--label",
                            "labels", "--label", "distilled"});
  ASSERT_EQ(plot.code, 0) << plot.out << plot.err;
  EXPECT_GT(std::filesystem::file_size(png), 1000u);
  Curves expected = curves_of_metrics(dir.str() + "/runs/teacher", "labels");
  const Curves distilled = curves_of_metrics(dir.str() + "/runs/student", "distilled");
  expected.insert(distilled.begin(), distilled.end());
  EXPECT_EQ(curves_of_csv(dir.str() + "/plots/curves.csv"), expected);
  EXPECT_TRUE(expected.count({"distilled", "agreement", 8})) << "the distilled run has an agreement curve";

  // Without --label, the legend is the run folder's name.
  const auto unlabelled = run_kd({"plot", dir.str() + "/runs/student/", "-o", dir.str() + "/one.png"});
  ASSERT_EQ(unlabelled.code, 0) << unlabelled.err;
  EXPECT_EQ(curves_of_csv(dir.str() + "/one.csv"), curves_of_metrics(dir.str() + "/runs/student", "student"));
}

TEST(Plot, AFolderWithoutMetricsOrAMissingLabelIsNamed) {
  TempDir dir;
  const auto r = run_kd({"plot", dir.str(), "-o", dir.str() + "/c.png"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(dir.str() + " has no metrics.jsonl"), std::string::npos) << r.err;
  std::ofstream(dir.file("metrics.jsonl")) << "";
  const auto labels = run_kd({"plot", dir.str(), dir.str(), "--label", "one"});
  EXPECT_NE(labels.err.find("1 --label(s) for 2 run(s)"), std::string::npos) << labels.err;
}

}  // namespace
}  // namespace kd::test
