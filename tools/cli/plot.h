// kd plot: curves of one or several runs (training loss, eval top-1, agreement) as a PNG, and the
// plotted numbers as CSV beside it.
#pragma once
#include <CLI/CLI.hpp>

namespace kd::cli {
void add_plot_command(CLI::App& app, int* exit_code);
}
