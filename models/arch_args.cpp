#include "models/arch_args.h"

#include <cctype>
#include <regex>

#include "kernels/check.h"

namespace kd {

std::optional<std::map<std::string, std::string>> parse_arch_call(const std::string& arch, const std::string& family,
                                                                  const std::vector<std::string>& known_keys,
                                                                  const std::string& example) {
  std::string compact;
  for (char ch : arch)
    if (!std::isspace(static_cast<unsigned char>(ch))) compact += ch;
  const std::string open = family + "(";
  if (compact.size() < open.size() + 1 || compact.compare(0, open.size(), open) != 0 || compact.back() != ')')
    return std::nullopt;
  const std::string args = compact.substr(open.size(), compact.size() - open.size() - 1);
  std::string known;
  for (const std::string& k : known_keys) known += (known.empty() ? "" : ", ") + k;
  std::map<std::string, std::string> out;
  static const std::regex item(R"(([a-z_]+)=([^,=]+))");
  size_t pos = 0;
  while (pos < args.size()) {
    const size_t comma = args.find(',', pos);
    const std::string part = args.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    std::smatch m;
    KD_CHECK(std::regex_match(part, m, item), "arch '", arch, "': cannot parse '", part, "' (expected e.g. ",
             example, ")");
    const std::string key = m[1];
    bool is_known = false;
    for (const std::string& k : known_keys) is_known = is_known || k == key;
    KD_CHECK(is_known, "arch '", arch, "': unknown argument '", key, "' (known: ", known, ")");
    KD_CHECK(out.emplace(key, m[2]).second, "arch '", arch, "': argument '", key, "' given twice");
    if (comma == std::string::npos) break;
    pos = comma + 1;
    KD_CHECK(pos < args.size(), "arch '", arch, "': trailing comma (expected e.g. ", example, ")");
  }
  return out;
}

int64_t arch_positive_int(const std::string& arch, const std::string& key, const std::string& value) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::logic_error&) {
    used = 0;
  }
  KD_CHECK(used == value.size() && used > 0, "arch '", arch, "': '", value, "' is not a valid value for ", key,
           " (an integer)");
  KD_CHECK(v > 0, "arch '", arch, "': ", key, " must be positive, got ", v);
  return v;
}

std::vector<int64_t> arch_depths(const std::string& arch, const std::string& value) {
  std::vector<int64_t> depths;
  size_t pos = 0;
  while (true) {
    const size_t dash = value.find('-', pos);
    const std::string part = value.substr(pos, dash == std::string::npos ? std::string::npos : dash - pos);
    KD_CHECK(!part.empty(), "arch '", arch, "': depths '", value, "' has an empty stage (expected e.g. 1-1-1)");
    depths.push_back(arch_positive_int(arch, "depths (every stage needs at least one block)", part));
    if (dash == std::string::npos) break;
    pos = dash + 1;
  }
  return depths;
}

}  // namespace kd
