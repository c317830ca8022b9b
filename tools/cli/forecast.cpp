#include "tools/cli/forecast.h"

#include <filesystem>
#include <vector>

#include "kernels/check.h"
#include "tools/cli/forecast_script.h"
#include "tools/cli/python_script.h"

namespace kd::cli {

namespace {

struct ForecastArgs {
  std::vector<std::string> runs;
  double noise = 0.15;
  bool json = false;
};

int run_forecast(const ForecastArgs& a) {
  for (const std::string& run : a.runs)
    KD_CHECK(std::filesystem::is_regular_file(std::filesystem::path(run) / "summary.json"), run,
             " has no summary.json (kd forecast takes finished run folders, e.g. runs/demo/student_fm)");
  std::vector<std::string> args = a.runs;
  args.insert(args.end(), {"--noise", std::to_string(a.noise)});
  if (a.json) args.push_back("--json");
  return run_embedded_python(kForecastScript, args, "kd forecast", "python3-numpy");
}

}  // namespace

void add_forecast_command(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<ForecastArgs>();
  CLI::App* cmd = app.add_subcommand(
      "forecast", "What 2x and 4x the epochs would likely give: a fit over finished runs of one setup at different "
                  "schedule lengths");
  cmd->add_option("runs", args->runs, "finished run folders (summary.json) of one setup")->required();
  cmd->add_option("--noise", args->noise, "noise floor of a final value, points")->capture_default_str();
  cmd->add_flag("--json", args->json, "print the fit and the forecasts as JSON");
  cmd->footer("Example: kd forecast runs/fm_150 runs/fm_300 runs/fm_600 (one run alone: provisional, from its own "
              "evaluation curve)");
  cmd->callback([args, exit_code] { *exit_code = run_forecast(*args); });
}

}  // namespace kd::cli
