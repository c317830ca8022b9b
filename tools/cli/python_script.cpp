#include "tools/cli/python_script.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "kernels/check.h"

namespace kd::cli {

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string find_python() {
  if (const char* p = std::getenv("KD_PYTHON"); p && *p) return p;
  if (std::filesystem::exists("/usr/bin/python3")) return "/usr/bin/python3";
  return "python3";
}

int run_embedded_python(const char* script, const std::vector<std::string>& args, const std::string& what,
                        const std::string& needs) {
  std::string command = find_python() + " -";
  for (const std::string& a : args) command += " " + shell_quote(a);
  std::fflush(stdout);
  FILE* python = ::popen(command.c_str(), "w");
  KD_CHECK(python != nullptr, what, ": cannot start ", find_python(), " (set KD_PYTHON to a python3 with ", needs, ")");
  std::fputs(script, python);
  const int status = ::pclose(python);
  KD_CHECK(status != -1 && WIFEXITED(status), find_python(), " did not finish ", what);
  const int code = WEXITSTATUS(status);
  KD_CHECK(code != 127, "no python3 found for ", what, " (install python3 and ", needs, ", or set KD_PYTHON)");
  return code;
}

}  // namespace kd::cli
