// UTF-8 decoding for checks on text from outside (config files, command-line overrides).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace kd {

// Decodes the code point at s[i] into `code` and returns its length in bytes, or 0 when the bytes
// there are not well-formed UTF-8 (overlong forms, surrogates, past U+10FFFF, cut short).
size_t decode_utf8(const std::string& s, size_t i, uint32_t& code);
bool valid_utf8(const std::string& s);

}  // namespace kd
