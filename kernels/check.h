// Errors for all of kd: one exception type that carries file:line, and checks that build its
// message with operator<< so they can name the op, the tensor and both shapes.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace kd {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
[[noreturn]] void throw_error(const char* file, int line, const std::string& message);

// Streams any number of arguments into one string: KD_FAIL("bad shape ", s, " for ", name).
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}
}  // namespace detail

}  // namespace kd

#define KD_FAIL(...) ::kd::detail::throw_error(__FILE__, __LINE__, ::kd::detail::concat(__VA_ARGS__))
#define KD_CHECK(cond, ...)                      \
  do {                                           \
    if (!(cond)) KD_FAIL(__VA_ARGS__);           \
  } while (0)
