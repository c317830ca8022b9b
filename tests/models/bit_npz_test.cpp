// BiT's .npz release read under timm's names (models/bit_npz.h, models/weights.h): the name
// mapping of timm's _load_weights, HWIO -> OIHW kernels, [1, 1, 1, C] norms, and a strict
// ParamStore::load that names what is missing or left over. The archives are written from kd
// models by tests/support/npz_writer.h, whose naming is independent of the code under test.
#include "models/bit_npz.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "engine/safetensors.h"
#include "models/model.h"
#include "models/weights.h"
#include "tests/support/npz_writer.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::error_of;

const char* kArch = "resnetv2(depths=1-11, width=8, stem=fixed, groups=4)";

void expect_mentions(const std::string& error, std::initializer_list<std::string> parts) {
  for (const std::string& p : parts)
    EXPECT_NE(error.find(p), std::string::npos) << "missing '" << p << "' in: " << error;
}

std::unique_ptr<Model> random_model(Context& ctx, uint64_t seed, int64_t classes = 6) {
  ModelSpec spec;
  spec.arch = kArch;
  spec.num_classes = classes;
  return create_model(spec, ctx, seed);
}

std::unique_ptr<Model> empty_model(Context& ctx, int64_t classes = 6) {
  ModelSpec spec;
  spec.arch = kArch;
  spec.num_classes = classes;
  auto m = create_model(spec);
  m->params().allocate(ctx);
  return m;
}

std::vector<float> values_of(const ParamStore& store, Context& ctx) {
  const Tensor v = store.values().to(Device::cpu, &ctx);
  return std::vector<float>(v.data<float>(), v.data<float>() + v.numel());
}

TEST(BitNpzNames, AsTimmsLoadWeightsReadsThem) {
  const std::string P = "resnet/";
  EXPECT_EQ(bit_npz_to_timm_name(P + "root_block/standardized_conv2d/kernel", P), "stem.conv.weight");
  EXPECT_EQ(bit_npz_to_timm_name(P + "group_norm/gamma", P), "norm.weight");
  EXPECT_EQ(bit_npz_to_timm_name(P + "group_norm/beta", P), "norm.bias");
  EXPECT_EQ(bit_npz_to_timm_name(P + "head/conv2d/kernel", P), "head.fc.weight");
  EXPECT_EQ(bit_npz_to_timm_name(P + "head/conv2d/bias", P), "head.fc.bias");
  EXPECT_EQ(bit_npz_to_timm_name(P + "block1/unit01/a/standardized_conv2d/kernel", P),
            "stages.0.blocks.0.conv1.weight");
  EXPECT_EQ(bit_npz_to_timm_name(P + "block3/unit12/b/standardized_conv2d/kernel", P),
            "stages.2.blocks.11.conv2.weight");
  EXPECT_EQ(bit_npz_to_timm_name(P + "block4/unit03/c/group_norm/gamma", P), "stages.3.blocks.2.norm3.weight");
  EXPECT_EQ(bit_npz_to_timm_name(P + "block2/unit36/a/group_norm/beta", P), "stages.1.blocks.35.norm1.bias");
  EXPECT_EQ(bit_npz_to_timm_name(P + "block2/unit01/a/proj/standardized_conv2d/kernel", P),
            "stages.1.blocks.0.downsample.conv.weight");
  EXPECT_EQ(bit_npz_to_timm_name("root_block/standardized_conv2d/kernel", ""), "stem.conv.weight");
  // Spellings timm would not look up stay unmapped.
  for (const std::string& other :
       {P + "block1/unit1/a/standardized_conv2d/kernel", P + "block01/unit01/a/standardized_conv2d/kernel",
        P + "block0/unit01/a/standardized_conv2d/kernel", P + "block1/unit00/a/group_norm/gamma",
        P + "block1/unit01/b/proj/standardized_conv2d/kernel", P + "block1/unit01/d/group_norm/gamma",
        P + "block1/unit01/a/group_norm/moving_mean", std::string("other/root_block/standardized_conv2d/kernel"),
        P + "global_step"})
    EXPECT_EQ(bit_npz_to_timm_name(other, P), "") << other;
}

class BitNpz : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("kd_bit_npz_" + std::to_string(::getpid()) + "_" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::filesystem::path dir_;
  std::unique_ptr<Context> ctx_ = Context::cpu();
};

TEST_F(BitNpz, LoadsEveryParameterExactly) {
  for (bool deflate : {false, true})
    for (bool gamma_4d : {false, true}) {
      auto original = random_model(*ctx_, 3);
      test::BitNpzOptions o;
      o.deflate = deflate;
      o.gamma_4d = gamma_4d;
      const std::string file = path("bit.npz");
      test::write_bit_npz(original->params(), *ctx_, file, o);
      const std::unique_ptr<TensorSource> source = open_weights(file, kArch);
      auto loaded = empty_model(*ctx_);
      loaded->params().load(*source, *ctx_);  // strict
      EXPECT_EQ(values_of(loaded->params(), *ctx_), values_of(original->params(), *ctx_))
          << "deflate " << deflate << ", gamma_4d " << gamma_4d;
      // Shapes as timm's: OIHW kernels, [C] norms.
      EXPECT_EQ(source->shape_of("stem.conv.weight"), (Shape{8, 3, 7, 7}));
      EXPECT_EQ(source->shape_of("stages.1.blocks.10.conv2.weight"), (Shape{16, 16, 3, 3}));
      EXPECT_EQ(source->shape_of("stages.1.blocks.10.norm2.weight"), (Shape{16}));
      EXPECT_EQ(source->shape_of("head.fc.weight"), (Shape{6, 64, 1, 1}));
      EXPECT_EQ(source->names().size(), original->params().params().size());
    }
}

TEST_F(BitNpz, StrictLoadNamesMissingUnexpectedAndMisshapenArrays) {
  auto original = random_model(*ctx_, 4);
  // An array timm's loader does not read: reported like an unexpected safetensors tensor.
  test::BitNpzOptions o;
  o.extra.push_back({"resnet/global_step.npy", test::npy<int64_t>("<i8", {}, {1000})});
  std::string file = path("extra.npz");
  test::write_bit_npz(original->params(), *ctx_, file, o);
  auto model = empty_model(*ctx_);
  const auto source = open_weights(file, kArch);
  EXPECT_TRUE(source->contains("resnet/global_step"));
  expect_mentions(error_of([&] { model->params().load(*source, *ctx_); }),
                  {file, "1 tensor(s) the model does not have", "resnet/global_step"});
  model->params().load(*source, *ctx_, /*strict=*/false);  // the rest loads

  // A missing unit: named by its timm name.
  o = {};
  o.drop = "stages.1.blocks.10.norm3.bias";
  file = path("missing.npz");
  test::write_bit_npz(original->params(), *ctx_, file, o);
  expect_mentions(error_of([&] { model->params().load(*open_weights(file, kArch), *ctx_); }),
                  {file, "missing", "stages.1.blocks.10.norm3.bias"});

  // Another head: the timm name, the npz array and both shapes.
  file = path("head.npz");
  test::write_bit_npz(original->params(), *ctx_, file);
  auto ten_classes = empty_model(*ctx_, 10);
  expect_mentions(error_of([&] { ten_classes->params().load(*open_weights(file, kArch), *ctx_); }),
                  {file, "'head.fc.weight'", "resnet/head/conv2d/kernel", "[1, 1, 64, 6] HWIO", "[6, 64, 1, 1]",
                   "expected [10, 64, 1, 1]"});
  const auto bit = BitNpzSource::open(file);
  EXPECT_EQ(bit->prefix(), "resnet/");
  EXPECT_EQ(bit->array_of("stages.0.blocks.0.downsample.conv.weight"),
            "resnet/block1/unit01/a/proj/standardized_conv2d/kernel");
  expect_mentions(error_of([&] { bit->shape_of("stages.9.blocks.0.conv1.weight"); }),
                  {file, "no array for 'stages.9.blocks.0.conv1.weight'"});
}

TEST_F(BitNpz, OpenWeightsPicksTheReaderAndRefusesWhatItCannotName) {
  auto original = random_model(*ctx_, 5);
  const std::string npz = path("w.npz"), upper = path("W.NPZ"), st = path("w.safetensors");
  test::write_bit_npz(original->params(), *ctx_, npz);
  test::write_bit_npz(original->params(), *ctx_, upper);
  SafetensorsWriter w;
  original->params().save(w, *ctx_);
  w.write(st);
  EXPECT_TRUE(is_npz_path(upper));
  EXPECT_FALSE(is_npz_path(st));
  for (const std::string& file : {npz, upper, st}) {
    auto model = empty_model(*ctx_);
    model->params().load(*open_weights(file, kArch), *ctx_);
    EXPECT_EQ(values_of(model->params(), *ctx_), values_of(original->params(), *ctx_)) << file;
  }
  expect_mentions(error_of([&] { open_weights(npz, ""); }), {npz, "holds no architecture"});
  expect_mentions(error_of([&] { open_weights(npz, "vit_base"); }), {npz, "'vit_base' is not a ResNetV2"});
  // An archive of something else.
  const std::string other = path("other.npz");
  test::write_file_bytes(other, test::build_zip({{"kernel.npy", test::npy<float>("<f4", {1}, {1})}}).bytes);
  expect_mentions(error_of([&] { open_weights(other, kArch); }),
                  {other, "root_block/standardized_conv2d/kernel", "not a BiT ResNetV2", "kernel"});
}

}  // namespace
}  // namespace kd
