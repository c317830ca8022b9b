// kd forward: logits of a model on images from a safetensors file.
#pragma once
#include <CLI/CLI.hpp>

namespace kd::cli {
void add_forward_command(CLI::App& app);
}
