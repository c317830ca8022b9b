// kd info: versions of kd's libraries (compiled against and loaded at run time) and the devices.
#pragma once
#include <CLI/CLI.hpp>

namespace kd::cli {
void add_info_command(CLI::App& app);
}
