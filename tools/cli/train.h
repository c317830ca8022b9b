// kd train (supervised) and kd distill (teachers -> student by function matching), and kd eval.
#pragma once
#include <CLI/CLI.hpp>

namespace kd::cli {
// The commands store their process exit code in *exit_code (0 when they succeed).
void add_train_commands(CLI::App& app, int* exit_code);
void add_eval_command(CLI::App& app, int* exit_code);
}  // namespace kd::cli
