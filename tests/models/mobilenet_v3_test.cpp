// MobileNetV3 on the CPU, without fixtures: timm's channel rounding and arch_def, its "goog"
// initialisation, the running statistics of a training forward, and the frozen-teacher path.
// Exactness against timm itself is tests/parity/models_parity_test.cpp's job.
#include "models/mobilenet_v3.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "models/model.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

TEST(MobileNetV3, MakeDivisibleRoundsAsTimm) {
  // timm.layers.make_divisible: nearest multiple of 8, at least 8, bumped up when that loses 10%.
  EXPECT_EQ(make_divisible(72), 72);
  EXPECT_EQ(make_divisible(24 * 3.67), 88);  // small, blocks.1.1 expansion
  EXPECT_EQ(make_divisible(4), 8);           // small, blocks.0.0 squeeze-excite: 16 * 0.25
  EXPECT_EQ(make_divisible(18), 24);         // 16 < 0.9 * 18: one step up
  EXPECT_EQ(make_divisible(30), 32);
  EXPECT_EQ(make_divisible(20), 24);
  EXPECT_EQ(make_divisible(36.0), 40);
}

TEST(MobileNetV3, LayoutFollowsTimmsArchDef) {
  MobileNetV3Config large;
  ASSERT_TRUE(parse_mobilenetv3_arch("mobilenetv3_large_100", &large));
  const MobileNetV3Layout l = mobilenetv3_layout(large);
  ASSERT_EQ(l.stages.size(), 7u);
  const std::vector<size_t> per_stage{1, 2, 3, 4, 2, 3, 1};
  for (size_t i = 0; i < per_stage.size(); ++i) EXPECT_EQ(l.stages[i].size(), per_stage[i]) << "stage " << i;
  const MobileBlockSpec& ds = l.stages[0][0];
  EXPECT_TRUE(ds.kind == MobileBlockSpec::Kind::ds && ds.skip() && ds.act == Activation::relu);
  const MobileBlockSpec& se = l.stages[2][0];  // ir_r3_k5_s2_e3_c40_se0.25_nre
  EXPECT_EQ(se.in, 24);
  EXPECT_EQ(se.mid, 72);
  EXPECT_EQ(se.out, 40);
  EXPECT_EQ(se.kernel, 5);
  EXPECT_EQ(se.stride, 2);
  EXPECT_EQ(se.se_reduced, 24);
  EXPECT_FALSE(se.skip());
  EXPECT_EQ(l.stages[2][1].stride, 1) << "only a stage's first block strides";
  EXPECT_TRUE(l.stages[2][1].skip());
  EXPECT_EQ(l.stages[3][2].mid, 184);  // 80 * 2.3
  EXPECT_EQ(l.stages[3][2].act, Activation::hardswish);
  const MobileBlockSpec& cn = l.stages[6][0];
  EXPECT_TRUE(cn.kind == MobileBlockSpec::Kind::cn && !cn.skip() && cn.out == 960);
  EXPECT_EQ(l.head_features, 1280);

  MobileNetV3Config small;
  ASSERT_TRUE(parse_mobilenetv3_arch("mobilenetv3_small_050", &small));
  const MobileNetV3Layout s = mobilenetv3_layout(small);
  EXPECT_EQ(s.stem, 16) << "timm's fix_stem below a 0.75 multiplier";
  EXPECT_EQ(s.stages[0][0].stride, 2);
  EXPECT_EQ(s.stages[0][0].se_reduced, 8);
  EXPECT_EQ(s.stages[0][0].out, 8);   // make_divisible(16 * 0.5)
  EXPECT_EQ(s.stages[1][0].mid, 40);  // make_divisible(8 * 4.5)
  EXPECT_EQ(s.head_features, 1024) << "the head is not scaled";
  MobileNetV3Config none;
  EXPECT_FALSE(parse_mobilenetv3_arch("mobilenetv3_large_200", &none));
  EXPECT_FALSE(parse_mobilenetv3_arch("mobilenetv3_large_minimal_100", &none));
}

TEST(MobileNetV3, UnknownWidthIsRejectedNamingTheKnownArchs) {
  ModelSpec spec;
  spec.arch = "mobilenetv3_large_200";
  const std::string msg = test::error_of([&] { create_model(spec); });
  EXPECT_NE(msg.find("mobilenetv3_large_100"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mobilenetv3_small_050"), std::string::npos) << msg;
}

// timm's _init_weight_goog: convolutions N(0, 2 / fan_out) with fan_out = k * k * c_out / groups
// (a depthwise 5x5 conv: 2 / 25), their biases zero, BatchNorm 1 / 0.
TEST(MobileNetV3, InitialisationFollowsTimmsGoogInit) {
  auto ctx = Context::cpu(DType::f32);
  ModelSpec spec;
  spec.arch = "mobilenetv3_large_100";
  const std::unique_ptr<Model> model = create_model(spec, *ctx, 11);
  auto stddev = [&](const std::string& name) {
    const Param& p = model->params().get(name);
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < p.numel(); ++i)
      sum += p.value.data<float>()[i], sq += double(p.value.data<float>()[i]) * p.value.data<float>()[i];
    const double mean = sum / double(p.numel());
    return std::sqrt(sq / double(p.numel()) - mean * mean);
  };
  EXPECT_NEAR(stddev("blocks.5.1.conv_dw.weight"), std::sqrt(2.0 / 25), 0.03 * std::sqrt(2.0 / 25));  // 24000 values
  EXPECT_NEAR(stddev("blocks.5.1.conv_pw.weight"), std::sqrt(2.0 / 960), 0.03 * std::sqrt(2.0 / 960));
  EXPECT_NEAR(stddev("conv_head.weight"), std::sqrt(2.0 / 1280), 0.03 * std::sqrt(2.0 / 1280));
  for (const char* zero : {"blocks.5.1.se.conv_reduce.bias", "conv_head.bias", "blocks.5.1.bn2.bias"}) {
    const Param& p = model->params().get(zero);
    for (int64_t i = 0; i < p.numel(); ++i) ASSERT_EQ(p.value.data<float>()[i], 0.0f) << zero;
  }
  const Param& gamma = model->params().get("blocks.5.1.bn2.weight");
  for (int64_t i = 0; i < gamma.numel(); ++i) ASSERT_EQ(gamma.value.data<float>()[i], 1.0f);
  EXPECT_FALSE(model->params().get("conv_head.bias").decay);
  EXPECT_TRUE(model->params().get("conv_head.weight").decay);
  // model.reset_head skips exactly the classifier (conv_head keeps its pretrained weights).
  const std::vector<std::string> head = model->head_params();
  ASSERT_EQ(head, (std::vector<std::string>{"classifier.weight", "classifier.bias"}));
  for (const std::string& name : head) EXPECT_EQ(model->params().get(name).shape[0], spec.num_classes);
}

// A training forward updates every BatchNorm's running statistics and counter; a frozen teacher
// with the same values (parameters it does not read released) computes what an eval-mode
// forward of the trained model computes.
TEST(MobileNetV3, TrainingUpdatesRunningStatsAndFrozenEvalMatchesEval) {
  auto ctx = Context::cpu(DType::f32);
  ModelSpec spec;
  spec.arch = "mobilenetv3_small_100";
  spec.num_classes = 7;
  const std::unique_ptr<Model> model = create_model(spec, *ctx, 12);
  for (Param& p : model->params().params())  // non-trivial head and biases
    if (p.init == ParamInit::zeros || p.name.rfind("classifier.", 0) == 0) {
      const std::vector<float> v = test::random_vector<float>(size_t(p.numel()), uint64_t(p.index) + 100, -0.2, 0.2);
      std::copy(v.begin(), v.end(), p.value.data<float>());
    }
  Tensor images = Tensor::zeros_cpu({3, 48, 48, 3}, DType::f32);
  const std::vector<float> pixels = test::random_vector<float>(size_t(images.numel()), 13);
  std::copy(pixels.begin(), pixels.end(), images.data<float>());

  model->forward(*ctx, images, Mode::train);
  const Param& counter = model->params().get("blocks.4.2.bn3.num_batches_tracked");
  EXPECT_EQ(counter.value.data<float>()[0], 1.0f);
  const Param& var = model->params().get("blocks.4.2.bn3.running_var");
  bool moved = false;
  for (int64_t i = 0; i < var.numel(); ++i) moved |= var.value.data<float>()[i] != 1.0f;
  EXPECT_TRUE(moved) << "running variance left at its initial 1";

  const Tensor eval = model->forward(*ctx, images, Mode::eval);
  EXPECT_EQ(counter.value.data<float>()[0], 1.0f) << "an eval forward leaves the counter alone";
  const std::vector<float> want(eval.data<float>(), eval.data<float>() + eval.numel());
  // The teacher: allocated untrainable, the trained model's values and statistics copied in.
  const std::unique_ptr<Model> teacher = create_model(spec);
  teacher->params().allocate(*ctx, /*trainable=*/false);
  for (const auto* list : {&model->params().params(), &model->params().buffers()})
    for (const Param& p : *list) teacher->params().get(p.name).value.copy_from(p.value);
  teacher->freeze_for_inference(*ctx);
  const Tensor frozen = teacher->forward(*ctx, images, Mode::eval);
  const std::vector<float> got(frozen.data<float>(), frozen.data<float>() + frozen.numel());
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace kd
