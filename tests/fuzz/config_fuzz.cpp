// Run configuration (engine/config.h): a TOML document, then `key=value` overrides, against a
// schema with an option of every kind. The input is the document, then a NUL byte before each
// override. What loads must also survive the round trip that resume relies on: to_toml() loads
// back into a fresh schema and prints the same.
#include <cstring>

#include "engine/config.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

struct Options {
  double lr = 1e-3;
  int64_t steps = 100;
  bool amp = false;
  std::string optimizer = "adam", path = "/data";
  std::vector<std::string> teachers = {"resnet50"};
  std::vector<int64_t> resolutions = {224};
  std::vector<double> weights = {1.0};

  void bind(kd::ConfigSchema& s) {
    s.bind("optim.lr", &lr, "peak learning rate");
    s.bind("optim.name", &optimizer, "optimizer", {"sgd", "adam", "shampoo"});
    s.bind("train.steps", &steps, "steps");
    s.bind("train.amp", &amp, "mixed precision");
    s.bind("data.train.path", &path, "training data");
    s.bind("teacher.name", &teachers, "teachers");
    s.bind("teacher.resolution", &resolutions, "input size per teacher");
    s.bind("teacher.weight", &weights, "loss weight per teacher");
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* text = reinterpret_cast<const char*>(data);
  const char* end = text + size;
  const char* nul = static_cast<const char*>(std::memchr(text, 0, size));
  const char* document_end = nul ? nul : end;
  Options options;
  kd::ConfigSchema schema;
  options.bind(schema);
  bool loaded = false;
  kd::fuzz::expect_only_kd_errors([&] {
    schema.load_string(std::string(text, document_end), "fuzz.toml");
    for (const char* p = document_end; p < end;) {
      const char* next = static_cast<const char*>(std::memchr(p + 1, 0, size_t(end - p - 1)));
      schema.apply_override(std::string(p + 1, next ? next : end));
      p = next ? next : end;
    }
    loaded = true;
  });
  schema.help();
  if (!loaded) return 0;
  const std::string resolved = schema.to_toml();
  Options reloaded;
  kd::ConfigSchema again;
  reloaded.bind(again);
  again.load_string(resolved, "resolved.toml");  // a kd::Error here is a finding: it escapes
  if (again.to_toml() != resolved) __builtin_trap();
  return 0;
}
