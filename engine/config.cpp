#include "engine/config.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <toml++/toml.h>

#include "kernels/check.h"

namespace kd {

namespace {

// Alternative indices of ConfigSchema::Target / Value.
enum Kind : size_t { kFloat, kInt, kBool, kString, kStringList, kIntList, kFloatList };

const char* kind_name(size_t kind) {
  static const char* names[] = {"float", "int", "bool", "string", "string list", "int list", "float list"};
  return names[kind];
}

std::string format_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {  // the shortest text that reads back exactly
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s = buf;
  if (s.find_first_of(".e") == std::string::npos) s += ".0";  // keep it a TOML float
  return s;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

template <typename T, typename F>
std::string format_list(const std::vector<T>& v, F&& format_one) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + format_one(v[i]);
  return out + "]";
}

std::string format_target(const ConfigSchema::Target& target) {
  switch (target.index()) {
    case kFloat: return format_double(*std::get<kFloat>(target));
    case kInt: return std::to_string(*std::get<kInt>(target));
    case kBool: return *std::get<kBool>(target) ? "true" : "false";
    case kString: return quote(*std::get<kString>(target));
    case kStringList: return format_list(*std::get<kStringList>(target), quote);
    case kIntList: return format_list(*std::get<kIntList>(target), [](int64_t x) { return std::to_string(x); });
    default: return format_list(*std::get<kFloatList>(target), format_double);
  }
}

// "string \"fast\"", "float 0.5", "table": what the user wrote, for error messages.
std::string describe(const toml::node& n) {
  if (auto s = n.as_string()) return "string " + quote(s->get());
  if (auto i = n.as_integer()) return "int " + std::to_string(i->get());
  if (auto f = n.as_floating_point()) return "float " + format_double(f->get());
  if (auto b = n.as_boolean()) return std::string("bool ") + (b->get() ? "true" : "false");
  if (n.is_array()) return "an array";
  if (n.is_table()) return "a table";
  return "a date/time";
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string last_part(const std::string& key) { return key.substr(key.find_last_of('.') + 1); }

// The closest candidate by edit distance when close enough, else one with the same last part
// ("lr" -> "optim.lr"); empty when nothing is plausible.
std::string suggest(const std::string& key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = SIZE_MAX;
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(key, c);
    if (d < best_distance) best_distance = d, best = c;
  }
  if (!best.empty() && best_distance <= std::max<size_t>(2, key.size() / 4)) return best;
  for (const std::string& c : candidates)
    if (last_part(c) == last_part(key)) return c;
  return "";
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : ", ") + p;
  return out;
}

// The one-line doc, with the choices when there are some.
std::string annotate(const std::string& doc, const std::vector<std::string>& choices) {
  if (choices.empty()) return doc;
  return doc.empty() ? "one of: " + join(choices) : doc + " (one of: " + join(choices) + ")";
}

std::string position(const std::string& origin, const toml::source_region& where) {
  return origin + ":" + std::to_string(where.begin.line) + ":" + std::to_string(where.begin.column);
}

// Converts one TOML node for an option of the given kind; `where` prefixes every error.
ConfigSchema::Value convert(size_t kind, const std::string& key, const std::vector<std::string>& choices,
                            const toml::node& n, const std::string& where) {
  using Value = ConfigSchema::Value;
  auto mismatch = [&](const toml::node& got, const std::string& element) {
    return detail::concat(where, ": key '", key, "' expects ", kind_name(kind)[0] == 'i' ? "an " : "a ", kind_name(kind),
                          ", got ", element, describe(got));
  };
  auto as_float = [&](const toml::node& e, const std::string& element) -> double {
    if (auto f = e.as_floating_point()) return f->get();
    if (auto i = e.as_integer()) return double(i->get());
    KD_FAIL(mismatch(e, element));
  };
  auto as_int = [&](const toml::node& e, const std::string& element) -> int64_t {
    if (auto i = e.as_integer()) return i->get();
    KD_FAIL(mismatch(e, element));
  };
  auto as_string = [&](const toml::node& e, const std::string& element) -> std::string {
    if (auto s = e.as_string()) return s->get();
    KD_FAIL(mismatch(e, element));
  };
  auto list = [&](auto&& one) {
    const toml::array* a = n.as_array();
    if (!a) KD_FAIL(mismatch(n, ""));
    std::vector<decltype(one(n, std::string()))> out;
    for (size_t i = 0; i < a->size(); ++i) out.push_back(one(*a->get(i), "element " + std::to_string(i) + " = "));
    return out;
  };
  switch (kind) {
    case kFloat: return Value(std::in_place_index<kFloat>, as_float(n, ""));
    case kInt: return Value(std::in_place_index<kInt>, as_int(n, ""));
    case kBool:
      if (auto b = n.as_boolean()) return Value(std::in_place_index<kBool>, b->get());
      KD_FAIL(mismatch(n, ""));
    case kString: {
      std::string s = as_string(n, "");
      if (!choices.empty() && std::find(choices.begin(), choices.end(), s) == choices.end())
        KD_FAIL(where, ": key '", key, "' is ", quote(s), ", not one of: ", join(choices));
      return Value(std::in_place_index<kString>, std::move(s));
    }
    case kStringList: return Value(std::in_place_index<kStringList>, list(as_string));
    case kIntList: return Value(std::in_place_index<kIntList>, list(as_int));
    default: return Value(std::in_place_index<kFloatList>, list(as_float));
  }
}

bool valid_key(const std::string& key) {
  if (key.empty() || key.front() == '.' || key.back() == '.' || key.find("..") != std::string::npos) return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

}  // namespace

// ---- schema -------------------------------------------------------------------------------------

void ConfigSchema::add(const std::string& key, Target target, std::string doc, std::vector<std::string> choices) {
  KD_CHECK(valid_key(key), "config schema: '", key, "' is not a dotted key of letters, digits, '_' and '-'");
  std::visit([&](auto* p) { KD_CHECK(p != nullptr, "config schema: key '", key, "' is bound to a null pointer"); },
             target);
  for (const Option& o : options_) {
    KD_CHECK(o.key != key, "config schema: key '", key, "' is bound twice");
    KD_CHECK(o.key.rfind(key + ".", 0) != 0 && key.rfind(o.key + ".", 0) != 0, "config schema: key '", key,
             "' and key '", o.key, "' cannot both exist (one would be a table of the other)");
  }
  if (!choices.empty()) {
    const std::string& current = *std::get<kString>(target);
    KD_CHECK(std::find(choices.begin(), choices.end(), current) != choices.end(), "config schema: default ",
             quote(current), " of key '", key, "' is not among its choices");
  }
  std::replace(doc.begin(), doc.end(), '\n', ' ');
  Option o{key, target, std::move(doc), std::move(choices), format_target(target)};
  options_.push_back(std::move(o));
}

void ConfigSchema::bind(const std::string& key, double* v, std::string doc) { add(key, v, std::move(doc), {}); }
void ConfigSchema::bind(const std::string& key, int64_t* v, std::string doc) { add(key, v, std::move(doc), {}); }
void ConfigSchema::bind(const std::string& key, bool* v, std::string doc) { add(key, v, std::move(doc), {}); }
void ConfigSchema::bind(const std::string& key, std::string* v, std::string doc, std::vector<std::string> choices) {
  add(key, v, std::move(doc), std::move(choices));
}
void ConfigSchema::bind(const std::string& key, std::vector<std::string>* v, std::string doc) {
  add(key, v, std::move(doc), {});
}
void ConfigSchema::bind(const std::string& key, std::vector<int64_t>* v, std::string doc) {
  add(key, v, std::move(doc), {});
}
void ConfigSchema::bind(const std::string& key, std::vector<double>* v, std::string doc) {
  add(key, v, std::move(doc), {});
}

const ConfigSchema::Option* ConfigSchema::find(const std::string& key) const {
  for (const Option& o : options_)
    if (o.key == key) return &o;
  return nullptr;
}

void ConfigSchema::add_missing(const ConfigSchema& other) {
  for (const Option& o : other.options_)
    if (!contains(o.key)) add(o.key, o.target, o.doc, o.choices);
}

bool ConfigSchema::contains(const std::string& key) const { return find(key) != nullptr; }

bool ConfigSchema::is_section(const std::string& prefix) const {
  for (const Option& o : options_)
    if (o.key.rfind(prefix + ".", 0) == 0) return true;
  return false;
}

void ConfigSchema::fail_unknown(const std::string& key, bool section, const std::string& where) const {
  std::vector<std::string> candidates;
  for (const Option& o : options_) {
    if (!section) {
      candidates.push_back(o.key);
      continue;
    }
    for (size_t dot = o.key.find('.'); dot != std::string::npos; dot = o.key.find('.', dot + 1))
      candidates.push_back(o.key.substr(0, dot));
  }
  if (!section && is_section(key)) {
    const Option* first = nullptr;
    for (const Option& o : options_)
      if (!first && o.key.rfind(key + ".", 0) == 0) first = &o;
    KD_FAIL(where, ": '", key, "' is a section, not a key; set its keys, e.g. '", first->key, "'");
  }
  const std::string hint = suggest(key, candidates);
  KD_FAIL(where, ": unknown ", section ? "section '" : "key '", key, "'",
          hint.empty() ? "" : " (did you mean '" + hint + "'?)");
}

void ConfigSchema::commit(const std::vector<Staged>& staged) {
  for (const Staged& s : staged)
    std::visit([&](auto* target) { *target = std::get<std::decay_t<decltype(*target)>>(s.value); },
               s.option->target);
}

// ---- loading ------------------------------------------------------------------------------------

void ConfigSchema::load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KD_CHECK(in, "cannot read config file ", path, ": ", std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  KD_CHECK(!in.bad(), "cannot read config file ", path, ": ", std::strerror(errno));
  load_string(text.str(), path);
}

void ConfigSchema::load_string(const std::string& text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    KD_FAIL(position(origin, e.source()), ": TOML syntax error: ", e.description());
  }
  std::vector<Staged> staged;
  std::function<void(const toml::table&, const std::string&)> walk = [&](const toml::table& table,
                                                                         const std::string& prefix) {
    for (auto&& [k, node] : table) {
      const std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
      const std::string where = position(origin, node.source());
      if (const Option* o = find(key)) {
        staged.push_back({o, convert(o->target.index(), key, o->choices, node, where)});
      } else if (node.is_table() && is_section(key)) {
        walk(*node.as_table(), key);
      } else {
        fail_unknown(key, node.is_table(), where);
      }
    }
  };
  walk(root, "");
  commit(staged);
}

void ConfigSchema::apply_override(const std::string& assignment) {
  const std::string where = "command line";
  const size_t eq = assignment.find('=');
  KD_CHECK(eq != std::string::npos, where, ": override '", assignment, "' is not key=value");
  const std::string key = trim(assignment.substr(0, eq)), text = trim(assignment.substr(eq + 1));
  KD_CHECK(!key.empty(), where, ": override '", assignment, "' has no key before '='");
  const Option* o = find(key);
  if (!o && apply_indexed_override(key, text)) return;
  if (!o) fail_unknown(key, false, where);

  // Read the text as a TOML value; when it is not one, it is a bare string.
  std::optional<toml::table> parsed;
  if (text.find_first_of("\r\n") == std::string::npos) {
    try {
      parsed = toml::parse("value = " + text, where);
      if (parsed->size() != 1) parsed.reset();
    } catch (const toml::parse_error&) {
      parsed.reset();
    }
  }
  const toml::node* node = parsed ? parsed->get("value") : nullptr;
  const size_t kind = o->target.index();
  toml::table bare;
  if (kind == kString && (!node || !node->is_string())) {
    bare.insert("value", text);  // any text is a string for a string option
  } else if (kind == kStringList && !node) {
    toml::array parts;  // "a, b" -> ["a", "b"]; "" -> []
    for (size_t b = 0; !text.empty() && b <= text.size();) {
      const size_t e = std::min(text.find(',', b), text.size());
      parts.push_back(trim(text.substr(b, e - b)));
      b = e + 1;
    }
    bare.insert("value", std::move(parts));
  } else if (!node) {
    bare.insert("value", text);
  }
  if (bare.contains("value")) node = bare.get("value");
  commit({{o, convert(kind, key, o->choices, *node, where)}});
}

// "section.N.key=value" sets entry N of the list option "section.key" (N == its length appends):
// one member of an ensemble (teacher.1.resolution=384). False when the key has another form.
bool ConfigSchema::apply_indexed_override(const std::string& key, const std::string& text) {
  const size_t d1 = key.find('.'), d2 = key.find('.', d1 == std::string::npos ? d1 : d1 + 1);
  if (d1 == std::string::npos || d2 == std::string::npos || d2 == d1 + 1) return false;
  const std::string index_text = key.substr(d1 + 1, d2 - d1 - 1);
  if (index_text.size() > 6 || !std::all_of(index_text.begin(), index_text.end(), ::isdigit)) return false;
  const std::string list_key = key.substr(0, d1) + key.substr(d2);
  const Option* o = find(list_key);
  if (!o) return false;
  const size_t kind = o->target.index(), index = size_t(std::stoul(index_text));
  KD_CHECK(kind == kStringList || kind == kIntList || kind == kFloatList, "command line: '", key, "': ", list_key,
           " is not a list, so it has no entry ", index);
  auto set = [&](auto list, auto value) {
    KD_CHECK(index <= list.size(), "command line: '", key, "': ", list_key, " has ", list.size(),
             " entries, so entry ", index, " can neither replace one nor be appended");
    if (index == list.size())
      list.push_back(value);
    else
      list[index] = value;
    return list;
  };
  try {
    if (kind == kStringList) {
      commit({{o, Value(std::in_place_index<kStringList>, set(*std::get<kStringList>(o->target), text))}});
    } else if (kind == kIntList) {
      size_t used = 0;
      const int64_t v = std::stoll(text, &used);
      KD_CHECK(used == text.size(), "not an integer");
      commit({{o, Value(std::in_place_index<kIntList>, set(*std::get<kIntList>(o->target), v))}});
    } else {
      size_t used = 0;
      const double v = std::stod(text, &used);
      KD_CHECK(used == text.size(), "not a number");
      commit({{o, Value(std::in_place_index<kFloatList>, set(*std::get<kFloatList>(o->target), v))}});
    }
  } catch (const std::logic_error&) {
    KD_FAIL("command line: '", key, "=", text, "': '", text, "' is not a valid entry of ", list_key);
  }
  return true;
}

// ---- output -------------------------------------------------------------------------------------

std::string ConfigSchema::to_toml() const {
  std::vector<std::string> sections;  // in the order first bound; "" is the root
  auto section_of = [](const std::string& key) {
    const size_t dot = key.find_last_of('.');
    return dot == std::string::npos ? std::string() : key.substr(0, dot);
  };
  sections.push_back("");
  for (const Option& o : options_)
    if (std::find(sections.begin(), sections.end(), section_of(o.key)) == sections.end())
      sections.push_back(section_of(o.key));
  std::ostringstream out;
  out << "# kd configuration (resolved)\n";
  for (const std::string& section : sections) {
    if (!section.empty()) out << "\n[" << section << "]\n";
    for (const Option& o : options_) {
      if (section_of(o.key) != section) continue;
      const std::string comment = annotate(o.doc, o.choices);
      if (!comment.empty()) out << "# " << comment << "\n";
      out << last_part(o.key) << " = " << format_target(o.target) << "\n";
    }
  }
  return out.str();
}

std::string ConfigSchema::help() const {
  size_t key_width = 0, type_width = 0, value_width = 0;
  std::vector<std::string> values;
  for (const Option& o : options_) {
    std::string v = format_target(o.target);
    if (v != o.default_toml) v += " (default " + o.default_toml + ")";
    key_width = std::max(key_width, o.key.size());
    type_width = std::max(type_width, std::string(kind_name(o.target.index())).size());
    value_width = std::max(value_width, v.size());
    values.push_back(std::move(v));
  }
  std::ostringstream out;
  for (size_t i = 0; i < options_.size(); ++i) {
    const Option& o = options_[i];
    const std::string doc = annotate(o.doc, o.choices);
    std::string line = o.key + std::string(key_width - o.key.size() + 2, ' ');
    const std::string type = kind_name(o.target.index());
    line += type + std::string(type_width - type.size() + 2, ' ');
    line += values[i] + std::string(value_width - values[i].size() + 2, ' ') + doc;
    out << line.substr(0, line.find_last_not_of(' ') + 1) << "\n";
  }
  return out.str();
}

}  // namespace kd
