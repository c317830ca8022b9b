// kd convert: BiT's original .npz weights -> timm-named safetensors (OIHW), loadable by kd and
// by timm's load_state_dict(strict=True). kd inspect: the tensors of a safetensors or .npz file.
#pragma once
#include <CLI/CLI.hpp>

namespace kd::cli {
void add_convert_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
}  // namespace kd::cli
