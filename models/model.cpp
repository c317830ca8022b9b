#include "models/model.h"

#include <cstdio>

#include "engine/context.h"
#include "models/registry.h"

namespace kd {

void Model::set_input_gradient(bool needed) {
  if (Conv2d* c = input_conv()) c->set_input_gradient(needed);
}

std::string Model::summary() const {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s: %.2f M parameters in %zu tensors, %lld classes", spec_.arch.c_str(),
                double(params_.numel()) / 1e6, params_.params().size(), (long long)spec_.num_classes);
  return buf;
}

void Model::freeze_for_inference(Context& ctx) {
  set_frozen(true);
  prepare_inference(ctx);
  params_.release_for_inference(ctx);
}

namespace {
std::vector<ArchFamily>& families() {
  static std::vector<ArchFamily> list = {resnetv2_family(), resnet_family(), mobilenetv3_family()};
  return list;
}
}  // namespace

void register_arch_family(ArchFamily family) {
  KD_CHECK(family.build != nullptr, "arch family '", family.name, "' has no builder");
  for (const ArchFamily& f : families()) KD_CHECK(f.name != family.name, "arch family '", family.name, "' twice");
  families().push_back(std::move(family));
}

const std::vector<ArchFamily>& arch_families() { return families(); }

std::vector<std::string> known_archs() {
  std::vector<std::string> out;
  for (const ArchFamily& f : families())
    for (const std::string& e : f.examples) out.push_back(e);
  return out;
}

std::unique_ptr<Model> create_model(const ModelSpec& spec) {
  KD_CHECK(spec.num_classes > 0, "model '", spec.arch, "': num_classes must be positive, got ", spec.num_classes);
  KD_CHECK(spec.in_channels > 0, "model '", spec.arch, "': in_channels must be positive");
  for (const ArchFamily& f : families())
    if (std::unique_ptr<Model> m = f.build(spec)) return m;
  std::string known;
  for (const std::string& a : known_archs()) known += "\n  " + a;
  KD_FAIL("unknown arch '", spec.arch, "'; known:", known);
}

std::unique_ptr<Model> create_model(const ModelSpec& spec, Context& ctx, uint64_t seed) {
  std::unique_ptr<Model> model = create_model(spec);
  model->params().allocate(ctx);
  model->params().init(seed, ctx);
  return model;
}

}  // namespace kd
