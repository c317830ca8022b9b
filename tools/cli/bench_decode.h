// kd bench-loader (alias bench-decode): how fast the loader turns a folder of JPEGs into views
// (issue 17's "measure first"), per phase (read, decode, resize, pack), per thread and in total:
// stb_image, libjpeg-turbo at full size, libjpeg-turbo DCT-scaled to the smallest size that
// still covers the crop at the largest view, and libjpeg-turbo decoding only the crop's region
// at that scale (the loader's path with data.jpeg_views_only).
#pragma once
#include <CLI/CLI.hpp>

namespace kd::cli {
void add_bench_decode_command(CLI::App& app);
}
