// Parameterised arch strings, e.g. "resnetv2(depths=1-1-1, width=32, stem=conv3)" or
// "resnet(depths=1-1, width=8, block=basic)": a family name and key=value arguments (whitespace
// ignored). The families parse their own keys from what this returns.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kd {

// The arguments of `arch` if it is a call of `family` ("family(...)"), else std::nullopt. A call
// with a key outside known_keys, a repeated key or text that is not key=value pairs is an error
// naming arch and, for the format, `example`.
std::optional<std::map<std::string, std::string>> parse_arch_call(const std::string& arch, const std::string& family,
                                                                  const std::vector<std::string>& known_keys,
                                                                  const std::string& example);
// A positive integer argument ("32"); an error naming arch and key otherwise.
int64_t arch_positive_int(const std::string& arch, const std::string& key, const std::string& value);
// Blocks per stage, "1-2-3": every stage at least one block.
std::vector<int64_t> arch_depths(const std::string& arch, const std::string& value);

}  // namespace kd
