// kd bench: throughput of one distillation step on synthetic data, with the per-phase breakdown.
#pragma once
#include <CLI/CLI.hpp>

namespace kd::cli {
void add_bench_command(CLI::App& app);
}
