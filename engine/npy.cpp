#include "engine/npy.h"

#include <cstring>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, ".npy headers and '<' dtypes are little-endian");

namespace kd {

namespace {

// A reader of the header's Python dict literal: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class DictReader {
 public:
  DictReader(const std::string& text, std::string where) : s_(text), where_(std::move(where)) {}
  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
  }
  bool accept(char c) {
    skip_space();
    if (i_ < s_.size() && s_[i_] == c) return ++i_, true;
    return false;
  }
  void expect(char c) {
    if (!accept(c)) fail(std::string("expected '") + c + "'");
  }
  std::string string() {
    skip_space();
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) fail("expected a quoted string");
    const char quote = s_[i_++];
    const size_t close = s_.find(quote, i_);
    if (close == std::string::npos) fail("unterminated string");
    std::string out = s_.substr(i_, close - i_);
    i_ = close + 1;
    return out;
  }
  bool boolean() {
    skip_space();
    for (const char* word : {"True", "False"})
      if (s_.compare(i_, std::strlen(word), word) == 0) {
        i_ += std::strlen(word);
        return word[0] == 'T';
      }
    fail("expected True or False");
  }
  Shape tuple() {  // (), (3,), (3, 4); Python 2 wrote longs as 3L
    expect('(');
    Shape out;
    while (!accept(')')) {
      skip_space();
      const size_t start = i_;
      uint64_t v = 0;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
        if (__builtin_mul_overflow(v, 10u, &v) || __builtin_add_overflow(v, uint64_t(s_[i_] - '0'), &v) ||
            v > uint64_t(INT64_MAX))
          fail("shape dimension overflows");
        ++i_;
      }
      if (i_ == start) fail("expected a non-negative integer in the shape");
      if (i_ < s_.size() && s_[i_] == 'L') ++i_;
      out.push_back(int64_t(v));
      if (!accept(',')) {
        expect(')');
        break;
      }
    }
    return out;
  }
  bool at_end() {
    skip_space();
    return i_ == s_.size();
  }
  [[noreturn]] void fail(const std::string& what) const {
    KD_FAIL(where_, ": malformed .npy header (", what, " at character ", i_, "): ", s_);
  }

 private:
  const std::string& s_;
  std::string where_;
  size_t i_ = 0;
};

constexpr uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

}  // namespace

uint64_t npy_header_size(const uint8_t* p, uint64_t n, const std::string& where) {
  KD_CHECK(n >= 10 && std::memcmp(p, kMagic, 6) == 0, where, ": not a .npy array (no \\x93NUMPY magic at its start)");
  const uint8_t major = p[6];
  KD_CHECK(major >= 1 && major <= 3, where, ": .npy format version ", int(major), ".", int(p[7]),
           " is not one kd reads (1.0, 2.0, 3.0)");
  if (major == 1) {
    uint16_t length;
    std::memcpy(&length, p + 8, 2);
    return 10 + uint64_t(length);
  }
  KD_CHECK(n >= 12, where, ": .npy header is cut short");
  uint32_t length;
  std::memcpy(&length, p + 8, 4);
  return 12 + uint64_t(length);
}

NpyHeader parse_npy_header(const uint8_t* p, uint64_t n, const std::string& where) {
  NpyHeader h;
  h.bytes = npy_header_size(p, n, where);
  KD_CHECK(n >= h.bytes, where, ": .npy header is cut short");
  const uint64_t text_at = p[6] == 1 ? 10 : 12;
  const std::string text(reinterpret_cast<const char*>(p + text_at), size_t(h.bytes - text_at));
  DictReader r(text, where);
  bool have_descr = false, have_order = false, have_shape = false;
  r.expect('{');
  while (!r.accept('}')) {
    const std::string key = r.string();
    r.expect(':');
    if (key == "descr") {
      if (r.accept('[')) r.fail("structured dtype (a list descr) is not supported");
      h.descr = r.string();
      have_descr = true;
    } else if (key == "fortran_order") {
      h.fortran_order = r.boolean();
      have_order = true;
    } else if (key == "shape") {
      h.shape = r.tuple();
      have_shape = true;
    } else {
      r.fail("unknown key '" + key + "'");
    }
    if (!r.accept(',')) {
      r.expect('}');
      break;
    }
  }
  if (!r.at_end()) r.fail("text after the dict");
  KD_CHECK(have_descr && have_order && have_shape, where, ": .npy header lacks ",
           !have_descr   ? "'descr'"
           : !have_order ? "'fortran_order'"
                         : "'shape'",
           ": ", text);
  h.dtype = parse_npy_descr(h.descr, where);
  h.data_bytes = dtype_size(h.dtype);
  for (int64_t d : h.shape)
    KD_CHECK(!__builtin_mul_overflow(h.data_bytes, uint64_t(d), &h.data_bytes), where, ": shape ", shape_str(h.shape),
             " overflows");
  return h;
}

DType parse_npy_descr(const std::string& descr, const std::string& where) {
  static const std::pair<const char*, DType> kKnown[] = {{"<f4", DType::f32}, {"<f8", DType::f64}, {"<f2", DType::f16},
                                                         {"|u1", DType::u8},  {"<u1", DType::u8},  {"<i4", DType::i32},
                                                         {"<i8", DType::i64}};
  for (const auto& [name, dtype] : kKnown)
    if (descr == name) return dtype;
  KD_CHECK(descr.empty() || descr[0] != '>', where, ": dtype '", descr,
           "' is big-endian; kd reads little-endian arrays (re-save with arr.astype(arr.dtype.newbyteorder('<')))");
  KD_FAIL(where, ": unsupported dtype '", descr, "' (kd reads <f2, <f4, <f8, |u1, <i4, <i8)");
}

}  // namespace kd
