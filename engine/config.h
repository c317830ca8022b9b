// Run configuration: TOML files plus `section.key=value` command-line overrides, checked against
// a schema that the training code declares once. Each option binds a dotted key to a variable
// that already holds its default, so after loading the variables simply hold the resolved values.
//
//   double lr = 1e-3;  std::string opt = "adam";
//   ConfigSchema s;
//   s.bind("optim.lr", &lr, "peak learning rate");
//   s.bind("optim.name", &opt, "optimizer", {"sgd", "adam", "shampoo"});
//   s.load_file("configs/flowers.toml");      // [optim] lr = 3e-4
//   s.apply_override("optim.name=shampoo");
//
// Every error (kd::Error) names the key and where the value came from ("file.toml:12:3" or
// "command line"): unknown keys (with a "did you mean" suggestion), wrong types, values outside
// the choices, TOML syntax errors. A load that fails changes no variable.
#pragma once
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace kd {

class ConfigSchema {
 public:
  // Keys are dotted bare TOML keys ("optim.lr", "data.train.path"); all but the last part name
  // the table. A key may not be bound twice, nor be a table of another key.
  void bind(const std::string& key, double* v, std::string doc);
  void bind(const std::string& key, int64_t* v, std::string doc);
  void bind(const std::string& key, bool* v, std::string doc);
  // `choices`, when not empty, lists the only values accepted.
  void bind(const std::string& key, std::string* v, std::string doc, std::vector<std::string> choices = {});
  void bind(const std::string& key, std::vector<std::string>* v, std::string doc);
  void bind(const std::string& key, std::vector<int64_t>* v, std::string doc);
  void bind(const std::string& key, std::vector<double>* v, std::string doc);

  // TOML; nested tables (and dotted keys) map to dotted option keys. Integers are accepted for
  // floats; a float for an integer is an error.
  void load_file(const std::string& path);
  void load_string(const std::string& toml, const std::string& origin);
  // "optim.lr=3e-4": the value is read as a TOML value; text that is not one is a string, so
  // `data.path=/x/y` needs no quotes. For string options any text is taken as written
  // (`run.name=2024`), and for string lists unquoted text is split at commas (`a,b`).
  // "teacher.1.resolution=384" sets entry 1 of the list option teacher.resolution (the entry
  // after the last appends): one member of an ensemble.
  void apply_override(const std::string& assignment);

  // Adds the options of `other` whose keys this schema lacks, bound to other's variables: one
  // schema for the keys of two option sets (kd eval reads train and distill configs alike).
  void add_missing(const ConfigSchema& other);

  bool contains(const std::string& key) const;
  // The resolved configuration as TOML, sections as tables, docs as comments; loads back to
  // the same values.
  std::string to_toml() const;
  // One line per option: key, type, current value (and the default when it differs), doc.
  std::string help() const;

  using Target = std::variant<double*, int64_t*, bool*, std::string*, std::vector<std::string>*,
                              std::vector<int64_t>*, std::vector<double>*>;
  // A parsed value, with the same alternative index as the Target it is meant for.
  using Value = std::variant<double, int64_t, bool, std::string, std::vector<std::string>,
                             std::vector<int64_t>, std::vector<double>>;

 private:
  struct Option {
    std::string key;
    Target target;
    std::string doc;
    std::vector<std::string> choices;
    std::string default_toml;  // the default, formatted as TOML when bound
  };
  struct Staged {
    const Option* option;
    Value value;
  };

  void add(const std::string& key, Target target, std::string doc, std::vector<std::string> choices);
  const Option* find(const std::string& key) const;
  bool apply_indexed_override(const std::string& key, const std::string& text);
  bool is_section(const std::string& prefix) const;
  [[noreturn]] void fail_unknown(const std::string& key, bool section, const std::string& where) const;
  void commit(const std::vector<Staged>& staged);

  std::vector<Option> options_;  // in the order bound; to_toml and help keep it
};

}  // namespace kd
