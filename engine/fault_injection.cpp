#include "engine/fault_injection.h"

#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <sstream>
#include <vector>

#include "kernels/check.h"

namespace kd::fault {

namespace {

struct Kill {
  std::string point;
  int64_t at_hit = 0;
  bool stop = false;  // SIGSTOP instead of _exit
};
struct FailWrite {
  std::string file;  // a part of the path
  int error = 0;
  int64_t at_write = 0;
  bool and_later = false;
  size_t at_byte = 0;
};
struct Poison {
  std::string site;
  int64_t step = 0;
  float value = 0;
};

struct Plan {
  std::vector<Kill> kills;
  std::vector<FailWrite> writes;
  std::vector<Poison> poisons;
  std::vector<int64_t> hits, writes_seen;  // per kill / per write fault
  std::mutex mutex;
};

int64_t parse_count(const std::string& text, const std::string& spec) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  KD_CHECK(!text.empty() && *end == '\0' && v >= 0, "KD_FAULT: '", spec, "': '", text, "' is not a count");
  return v;
}

void parse_spec(const std::string& spec, Plan& plan) {
  const size_t colon = spec.find(':');
  KD_CHECK(colon != std::string::npos, "KD_FAULT: '", spec, "' is not <point>:<n>, enospc:<file>:<n>, eio:..., ",
           "nan.<site>:step=<s> or inf.<site>:step=<s>");
  const std::string head = spec.substr(0, colon), rest = spec.substr(colon + 1);
  if (head == "enospc" || head == "eio") {
    FailWrite w;
    w.error = head == "enospc" ? ENOSPC : EIO;
    const size_t second = rest.rfind(':');
    KD_CHECK(second != std::string::npos && second > 0, "KD_FAULT: '", spec, "' is not ", head,
             ":<file>:<n>[+][@<byte>]");
    w.file = rest.substr(0, second);
    std::string count = rest.substr(second + 1);
    const size_t at = count.find('@');
    if (at != std::string::npos) {
      w.at_byte = size_t(parse_count(count.substr(at + 1), spec));
      count.resize(at);
    }
    if (!count.empty() && count.back() == '+') w.and_later = true, count.pop_back();
    w.at_write = parse_count(count, spec);
    plan.writes.push_back(w);
  } else if (head.rfind("nan.", 0) == 0 || head.rfind("inf.", 0) == 0) {
    KD_CHECK(rest.rfind("step=", 0) == 0, "KD_FAULT: '", spec, "' is not ", head, ":step=<s>");
    const float value = head[0] == 'n' ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
    plan.poisons.push_back({head.substr(4), parse_count(rest.substr(5), spec), value});
  } else {
    const bool stop = rest.size() > 5 && rest.compare(rest.size() - 5, 5, "=stop") == 0;
    plan.kills.push_back({head, parse_count(stop ? rest.substr(0, rest.size() - 5) : rest, spec), stop});
  }
}

Plan& plan() {
  static Plan* p = [] {
    auto* made = new Plan();  // lives until exit: points may be reached from static destructors
    const char* env = std::getenv("KD_FAULT");
    std::stringstream all(env ? env : "");
    std::string spec;
    while (std::getline(all, spec, ','))
      if (!spec.empty()) parse_spec(spec, *made);
    made->hits.assign(made->kills.size(), 0);
    made->writes_seen.assign(made->writes.size(), 0);
    return made;
  }();
  return *p;
}

}  // namespace

void point(const char* name) {
  Plan& p = plan();
  if (p.kills.empty()) return;
  std::lock_guard<std::mutex> lock(p.mutex);
  for (size_t i = 0; i < p.kills.size(); ++i)
    if (p.kills[i].point == name && ++p.hits[i] == p.kills[i].at_hit) {
      if (p.kills[i].stop) {
        std::raise(SIGSTOP);
        continue;
      }
      std::fprintf(stderr, "KD_FAULT: killed at %s (hit %lld)\n", name, (long long)p.hits[i]);
      std::fflush(stderr);
      ::_exit(137);
    }
}

std::optional<WriteFault> next_write(const std::string& path) {
  Plan& p = plan();
  if (p.writes.empty()) return std::nullopt;
  std::lock_guard<std::mutex> lock(p.mutex);
  std::optional<WriteFault> out;
  for (size_t i = 0; i < p.writes.size(); ++i) {
    const FailWrite& w = p.writes[i];
    if (path.find(w.file) == std::string::npos) continue;
    const int64_t n = ++p.writes_seen[i];
    if (n == w.at_write || (w.and_later && n > w.at_write)) out = WriteFault{w.at_byte, w.error};
  }
  return out;
}

std::optional<float> nonfinite(const char* site, int64_t step) {
  Plan& p = plan();
  for (const Poison& x : p.poisons)
    if (x.site == site && x.step == step) return x.value;
  return std::nullopt;
}

bool nonfinite_planned() { return !plan().poisons.empty(); }

}  // namespace kd::fault
