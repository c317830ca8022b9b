// Running a Python script that kd carries in its binary (kd plot, kd forecast): the script is
// piped to python3's stdin, so kd needs no install location. Python is $KD_PYTHON, else Debian's
// /usr/bin/python3 (where tools/install_deps.sh puts matplotlib and numpy), else the PATH's.
#pragma once
#include <string>
#include <vector>

namespace kd::cli {

std::string find_python();
std::string shell_quote(const std::string& s);
// Runs `script` with the given arguments (quoted here); returns its exit code. `what` names the
// command in errors ("kd plot"); `needs` says what to install when python3 is missing.
int run_embedded_python(const char* script, const std::vector<std::string>& args, const std::string& what,
                        const std::string& needs);

}  // namespace kd::cli
