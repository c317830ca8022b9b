#include "kernels/check.h"

#include <cstring>

namespace kd::detail {

[[noreturn]] void throw_error(const char* file, int line, const std::string& message) {
  // Keep only the path below the repository root: "engine/tensor.cpp:42".
  const char* short_file = file;
  for (const char* root : {"/kernels/", "/engine/", "/models/", "/data/", "/tools/", "/tests/"}) {
    if (const char* at = std::strstr(file, root)) {
      short_file = at + 1;
      break;
    }
  }
  throw Error(message + " [" + short_file + ":" + std::to_string(line) + "]");
}

}  // namespace kd::detail
