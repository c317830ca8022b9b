// The model registry: architecture families by name. A family recognises the arch strings it
// builds (create_model asks each in turn) and lists examples for error messages and `kd inspect`.
// A new family is one file with its builder plus one line in builtin_families() (model.cpp);
// register_arch_family adds one at run time (tests, extensions).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"

namespace kd {

struct ArchFamily {
  std::string name;                   // "resnetv2", "resnet", ...
  std::vector<std::string> examples;  // arch strings it builds, for messages
  // The model for spec.arch, or nullptr when the arch is not this family's (throws when it is,
  // but malformed).
  std::function<std::unique_ptr<Model>(const ModelSpec&)> build;
};

void register_arch_family(ArchFamily family);
const std::vector<ArchFamily>& arch_families();

// The families kd ships (one function per family file).
ArchFamily resnetv2_family();
ArchFamily resnet_family();
ArchFamily mobilenetv3_family();

}  // namespace kd
