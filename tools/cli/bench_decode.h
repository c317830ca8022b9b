// kd bench-decode: how fast the loader's decoders turn a folder of JPEGs into pixels (issue 17's
// "measure first"): stb_image, libjpeg-turbo at full size, and libjpeg-turbo DCT-scaled to the
// smallest size that still covers a random-resized crop at the view's resolution.
#pragma once
#include <CLI/CLI.hpp>

namespace kd::cli {
void add_bench_decode_command(CLI::App& app);
}
