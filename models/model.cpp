#include "models/model.h"

#include <cstdio>

#include "engine/context.h"
#include "models/resnet_v2.h"

namespace kd {

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

std::vector<std::string> known_archs() {
  return {"resnetv2_{26,50,101,152}x{1,2,3,4}_bit (e.g. resnetv2_50x1_bit, resnetv2_152x2_bit)",
          "resnetv2(depths=D1-D2-..., width=W, stem=fixed|conv3[, groups=G])"};
}

std::unique_ptr<Model> create_model(const ModelSpec& spec) {
  KD_CHECK(spec.num_classes > 0, "model '", spec.arch, "': num_classes must be positive, got ", spec.num_classes);
  KD_CHECK(spec.in_channels > 0, "model '", spec.arch, "': in_channels must be positive");
  ResNetV2Config resnet;
  if (parse_resnetv2_arch(spec.arch, &resnet)) return std::make_unique<ResNetV2>(spec, resnet);
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
