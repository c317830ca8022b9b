// kd forecast: what longer training would likely buy, from finished runs of one setup at
// different schedule lengths (tools/forecast.py: a saturating power law in the epochs, with a
// bootstrap interval, at 2x and 4x the longest run).
#pragma once
#include <CLI/CLI.hpp>

namespace kd::cli {
void add_forecast_command(CLI::App& app, int* exit_code);
}
