// The `kd` command line: one binary, subcommands forward, train, distill, eval, bench, pack, info,
// plot, convert, inspect.
#pragma once
#include <memory>
#include <string>

#include "engine/context.h"

namespace kd::cli {

// Runs kd with its arguments; returns the process exit code. Errors are printed, not thrown.
int run(int argc, char** argv);

}  // namespace kd::cli
