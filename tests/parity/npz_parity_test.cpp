// BiT .npz weights against timm (tests/reference/make_npz_fixtures.py): archives in BiT's format
// that timm's own _load_weights reads back exactly, one stored (np.savez) and one deflated
// (np.savez_compressed, units up to unit12). kd reads them through open_weights and must compute
// timm's logits (timm in float64 from the same float32 weights): within 1e-6 relative L2 in f64
// (the fixture's inputs are f32, so only summation order differs) and 1e-5 in f32. kd convert
// must write exactly timm's state dict: the same names, shapes and bits.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "engine/ops.h"
#include "engine/safetensors.h"
#include "models/model.h"
#include "models/weights.h"
#include "tests/support/testing.h"
#include "tools/cli/cli.h"

namespace kd {
namespace {

struct Fixture {
  SafetensorsFile file;
  std::string npz, arch;
  int64_t classes = 0;
  explicit Fixture(const std::string& name)
      : file(SafetensorsFile::open(std::string(KD_PARITY_DIR) + "/" + name + ".safetensors")),
        npz(std::string(KD_PARITY_DIR) + "/" + file.metadata().at("npz")),
        arch(file.metadata().at("arch")),
        classes(std::stoll(file.metadata().at("num_classes"))) {}
};

std::unique_ptr<Model> model_from(Context& ctx, const std::string& arch, int64_t classes, const TensorSource& weights) {
  ModelSpec spec;
  spec.arch = arch;
  spec.num_classes = classes;
  auto model = create_model(spec);
  model->params().allocate(ctx, /*trainable=*/false);
  model->params().load(weights, ctx);  // strict
  return model;
}

// kd's logits on the fixture's input, as a host tensor in the context's dtype.
Tensor kd_logits(Context& ctx, Model& model, const Fixture& f) {
  const Tensor x = f.file.tensor_as("input", f.file.entry("input").shape, ctx.param_dtype());
  return model.forward(ctx, ops::to_activation(ctx, x), Mode::eval).to(Device::cpu, &ctx);
}

template <typename T>
double logits_error(const Tensor& got, const Fixture& f) {
  const Tensor timm = f.file.tensor_as("logits", f.file.entry("logits").shape, DType::f64);
  EXPECT_EQ(got.shape(), timm.shape());
  return test::rel_l2(got.data<T>(), timm.data<double>(), size_t(timm.numel()));
}

int run_cli(std::vector<std::string> args) {
  args.insert(args.begin(), "kd");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return cli::run(int(argv.size()), argv.data());
}

class NpzParity : public ::testing::TestWithParam<std::string> {};

TEST_P(NpzParity, DoublePrecisionMatchesTimm) {
  const Fixture f(GetParam());
  auto ctx = Context::cpu(DType::f64);
  auto model = model_from(*ctx, f.arch, f.classes, *open_weights(f.npz, f.arch));
  const double err = logits_error<double>(kd_logits(*ctx, *model, f), f);
  std::printf("[ parity ] %s.npz in f64: logits %.1e relative L2 vs timm\n", GetParam().c_str(), err);
  EXPECT_LE(err, 1e-6);
}

TEST_P(NpzParity, SinglePrecisionMatchesTimm) {
  const Fixture f(GetParam());
  auto ctx = Context::cpu(DType::f32);
  auto model = model_from(*ctx, f.arch, f.classes, *open_weights(f.npz, f.arch));
  const double err = logits_error<float>(kd_logits(*ctx, *model, f), f);
  std::printf("[ parity ] %s.npz in f32: logits %.1e relative L2 vs timm\n", GetParam().c_str(), err);
  EXPECT_LE(err, 1e-5);
}

TEST_P(NpzParity, ConvertWritesTimmsStateDictBitForBit) {
  const Fixture f(GetParam());
  const std::string out = std::string(KD_PARITY_DIR) + "/" + GetParam() + ".converted.safetensors";
  ASSERT_EQ(run_cli({"convert", f.npz, out, "--arch", f.arch}), 0);
  const SafetensorsFile converted = SafetensorsFile::open(out);
  EXPECT_EQ(converted.metadata().at("arch"), f.arch);
  EXPECT_EQ(converted.metadata().at("num_classes"), std::to_string(f.classes));
  std::vector<std::string> timm_names;
  for (const std::string& name : f.file.names())
    if (name.rfind("param.", 0) == 0) timm_names.push_back(name.substr(6));
  EXPECT_EQ(converted.names(), timm_names) << "timm's load_state_dict(strict=True) needs exactly these names";
  for (const std::string& name : timm_names) {
    const Tensor want = f.file.tensor("param." + name), got = converted.tensor(name);
    ASSERT_EQ(got.shape(), want.shape()) << name;
    ASSERT_EQ(got.dtype(), want.dtype()) << name;
    EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.nbytes()), 0) << name << " differs from timm's";
  }
  // The converted file and the npz give bitwise the same logits.
  auto ctx = Context::cpu();
  auto from_npz = model_from(*ctx, f.arch, f.classes, *open_weights(f.npz, f.arch));
  auto from_converted = model_from(*ctx, f.arch, f.classes, converted);
  const Tensor a = kd_logits(*ctx, *from_npz, f), b = kd_logits(*ctx, *from_converted, f);
  ASSERT_EQ(a.nbytes(), b.nbytes());
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0);
  std::filesystem::remove(out);
}

TEST_P(NpzParity, KdForwardOnTheNpzMatchesTimm) {
  const Fixture f(GetParam());
  const std::string images = std::string(KD_PARITY_DIR) + "/" + GetParam() + ".images.safetensors";
  const std::string out = std::string(KD_PARITY_DIR) + "/" + GetParam() + ".kd_logits.safetensors";
  SafetensorsWriter w;
  w.add("images", f.file.tensor_f32("input", f.file.entry("input").shape));
  w.write(images);
  ASSERT_EQ(run_cli({"forward", "--arch", f.arch, "--num-classes", std::to_string(f.classes), "--weights", f.npz,
                     "--input", images, "--output", out, "--device", "cpu"}),
            0);
  const Tensor got = SafetensorsFile::open(out).tensor_f32("logits", f.file.entry("logits").shape);
  const double err = logits_error<float>(got, f);
  std::printf("[ parity ] kd forward --weights %s.npz: logits %.1e relative L2 vs timm\n", GetParam().c_str(), err);
  EXPECT_LE(err, 1e-5);
  std::filesystem::remove(images);
  std::filesystem::remove(out);
}

INSTANTIATE_TEST_SUITE_P(Bit, NpzParity, ::testing::Values("bit_npz_small", "bit_npz_deep"));

}  // namespace
}  // namespace kd
