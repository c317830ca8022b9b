// ResNet (BatchNorm) arch strings: the parameterised form resnet(depths=..., width=..., block=...)
// builds exactly timm's named models when given their numbers (same tensors, same shapes, same
// MACs), scales channels with width, and malformed strings are errors naming the argument.
#include <gtest/gtest.h>

#include "models/model.h"
#include "models/resnet.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

std::unique_ptr<Model> build(const std::string& arch) {
  ModelSpec spec;
  spec.arch = arch, spec.num_classes = 10;
  return create_model(spec);
}

// name -> shape, over parameters and buffers.
std::map<std::string, Shape> tensors(Model& m) {
  std::map<std::string, Shape> out;
  for (const Param& p : m.params().params()) out[p.name] = p.shape;
  for (const Param& p : m.params().buffers()) out[p.name] = p.shape;
  return out;
}

TEST(ResNetArch, TheParameterisedFormBuildsTimmsModels) {
  for (const auto& [named, call] : std::vector<std::pair<std::string, std::string>>{
           {"resnet18", "resnet(depths=2-2-2-2, width=64, block=basic)"},
           {"resnet50", "resnet( depths = 3-4-6-3 )"}}) {
    auto a = build(named), b = build(call);
    EXPECT_EQ(tensors(*a), tensors(*b)) << named << " vs " << call;
    EXPECT_EQ(a->forward_macs(224, 224), b->forward_macs(224, 224)) << named;
  }
}

TEST(ResNetArch, WidthScalesEveryStage) {
  auto m = build("resnet(depths=1-1, width=8, block=basic)");
  const std::map<std::string, Shape> t = tensors(*m);
  EXPECT_EQ(t.at("conv1.weight")[0], 8);
  EXPECT_EQ(t.at("layer1.0.conv2.weight")[0], 8);
  EXPECT_EQ(t.at("layer2.0.conv1.weight")[0], 16);
  EXPECT_EQ(t.at("layer2.0.downsample.0.weight")[0], 16);
  EXPECT_EQ(t.at("layer2.0.bn2.running_var"), Shape({16}));
  EXPECT_EQ(t.at("fc.weight"), Shape({10, 16}));
  EXPECT_EQ(t.count("layer3.0.conv1.weight"), 0u);
  auto bottleneck = build("resnet(depths=1-1, width=8)");
  EXPECT_EQ(tensors(*bottleneck).at("fc.weight"), Shape({10, 64})) << "bottleneck: 4 x 16 features";
  // Stem 7x7/2 to 8x8, pool to 4x4, then 3x3 convs: 16x16x3 input.
  const int64_t stem = 8 * 8 * 49 * 3 * 8, stage1 = 2 * 4 * 4 * 9 * 8 * 8;
  const int64_t stage2 = 2 * 2 * 9 * 8 * 16 + 2 * 2 * 9 * 16 * 16 + 2 * 2 * 8 * 16, head = 16 * 10;
  EXPECT_EQ(m->forward_macs(16, 16), stem + stage1 + stage2 + head);
}

TEST(ResNetArch, MalformedStringsNameTheProblem) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"resnet(width=8)", "depths is required"},
      {"resnet(depths=1-1, width=8, blocks=basic)", "unknown argument 'blocks' (known: depths, width, block)"},
      {"resnet(depths=1-1, block=wide)", "block 'wide' is not one of basic, bottleneck"},
      {"resnet(depths=1-0)", "must be positive"},
      {"resnet(depths=1--1)", "empty stage"},
      {"resnet(depths=1-1, width=8x)", "'8x' is not a valid value for width"},
      {"resnet(depths=1-1,)", "trailing comma"},
      {"resnet(depths=1, depths=2)", "given twice"},
      {"resnet(depths)", "cannot parse 'depths'"},
      {"resnetv2(depths=1-1)", "depths and width are required"},
      {"resnetv2(depths=1-1, width=8, stem=deep)", "stem 'deep' is not one of fixed, conv3"},
  };
  for (const auto& [arch, expected] : cases) {
    const std::string msg = test::error_of([&] { build(arch); });
    EXPECT_NE(msg.find(expected), std::string::npos) << arch << ": " << msg;
    EXPECT_NE(msg.find(arch), std::string::npos) << arch << ": " << msg;
  }
  ResNetConfig c;
  EXPECT_FALSE(parse_resnet_arch("resnet26", &c));
  EXPECT_FALSE(parse_resnet_arch("resnetv2(depths=1, width=8)", &c));
}

}  // namespace
}  // namespace kd
