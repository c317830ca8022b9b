#include "tools/cli/plot.h"

#include <filesystem>
#include <vector>

#include "kernels/check.h"
#include "tools/cli/plot_script.h"
#include "tools/cli/python_script.h"

namespace kd::cli {

// Drawing is matplotlib's (Debian's python3-matplotlib): a PNG writer, fonts and axis layout in
// C++ would be a new dependency or much code for a figure. kd keeps the script in its binary
// (tools/plot_curves.py, embedded at build time; tools/cli/python_script.h), so kd plot works
// wherever kd is copied; what kd checks first is what it can say better than a traceback.

namespace {

struct PlotArgs {
  std::vector<std::string> runs, labels;
  std::string out = "curves.png";
};

int run_plot(const PlotArgs& a) {
  namespace fs = std::filesystem;
  KD_CHECK(a.labels.empty() || a.labels.size() == a.runs.size(), a.labels.size(), " --label(s) for ", a.runs.size(),
           " run(s); give one per run, in order, or none");
  std::vector<std::string> args = {"-o", a.out};
  for (size_t i = 0; i < a.runs.size(); ++i) {
    const fs::path dir = fs::path(a.runs[i]).lexically_normal();
    KD_CHECK(fs::is_regular_file(dir / "metrics.jsonl"), a.runs[i],
             " has no metrics.jsonl (kd plot takes run folders, e.g. runs/demo/student_fm)");
    std::string label = a.labels.empty() ? dir.filename().string() : a.labels[i];
    if (label.empty() || label == ".") label = fs::absolute(dir).lexically_normal().parent_path().filename().string();
    args.insert(args.end(), {"--run", label, dir.string()});
  }
  const fs::path out_dir = fs::path(a.out).parent_path();
  if (!out_dir.empty()) fs::create_directories(out_dir);
  return run_embedded_python(kPlotCurvesScript, args, "kd plot", "python3-matplotlib");
}

}  // namespace

void add_plot_command(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<PlotArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plot", "Training loss, eval top-1 and agreement against steps for run folders, overlaid (PNG + CSV)");
  cmd->add_option("runs", args->runs, "run folders (each with metrics.jsonl)")->required();
  cmd->add_option("-o,--out", args->out, "the PNG to write; the CSV of the plotted points goes beside it")
      ->capture_default_str();
  cmd->add_option("--label", args->labels, "legend label per run, in order (default: the run folder's name)")
      ->allow_extra_args(false);
  cmd->footer("Example: kd plot runs/demo/student_fm runs/demo/student_labels -o runs/demo/curves.png");
  cmd->callback([args, exit_code] { *exit_code = run_plot(*args); });
}

}  // namespace kd::cli
