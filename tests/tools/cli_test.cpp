// The kd command line: kd forward on timm-named weights and its errors for bad input, and kd
// bench on the CPU path.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/safetensors.h"
#include "models/model.h"
#include "tests/support/testing.h"
#include "tests/tools/tool_fixtures.h"

namespace kd {
namespace {

using test::run_kd;

const char* kArch = "resnetv2(depths=1-1, width=8, stem=conv3)";

// Random timm-named weights and random images in files.
struct ForwardFiles {
  test::TempDir dir;
  std::string weights = dir.file("w.safetensors"), images = dir.file("x.safetensors"), out = dir.file("y.safetensors");
  ForwardFiles(int64_t n = 3, int64_t hw = 20) {
    auto ctx = Context::cpu();
    ModelSpec spec;
    spec.arch = kArch;
    spec.num_classes = 5;
    auto model = create_model(spec, *ctx, 9);
    SafetensorsWriter w;
    model->params().save(w, *ctx);
    w.write(weights);
    Tensor x = Tensor::zeros_cpu({n, hw, hw, 3}, DType::f32);
    const auto v = test::random_vector<float>(size_t(x.numel()), 4);
    std::copy(v.begin(), v.end(), x.data<float>());
    SafetensorsWriter xi;
    xi.add("images", x);
    xi.write(images);
  }
};

TEST(Forward, WritesTheLogitsOfTheModelOnTheImages) {
  ForwardFiles f;
  const auto r = run_kd({"forward", "--arch", kArch, "--num-classes", "5", "--weights", f.weights, "--input", f.images,
                         "--output", f.out, "--device", "cpu", "--batch-size", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  // The same logits as the model computes in-process from the same weights.
  auto ctx = Context::cpu();
  ModelSpec spec;
  spec.arch = kArch;
  spec.num_classes = 5;
  auto model = create_model(spec);
  model->params().allocate(*ctx);
  model->params().load(SafetensorsFile::open(f.weights), *ctx);
  const Tensor x = SafetensorsFile::open(f.images).tensor_f32("images", {3, 20, 20, 3});
  const Tensor expected = model->forward(*ctx, x, Mode::eval);
  const Tensor got = SafetensorsFile::open(f.out).tensor_f32("logits", {3, 5});
  EXPECT_LT(test::rel_l2(got.data<float>(), expected.data<float>(), 15), 1e-6);
}

TEST(Forward, BadInputGetsAClearErrorAndNoCrash) {
  ForwardFiles f;
  auto r = run_kd({"forward", "--arch", "resnet_unknown", "--num-classes", "5", "--weights", f.weights, "--input",
                   f.images, "--output", f.out});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("unknown arch 'resnet_unknown'"), std::string::npos) << r.err;
  r = run_kd({"forward", "--arch", kArch, "--num-classes", "7", "--weights", f.weights, "--input", f.images,
              "--output", f.out});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("head.fc"), std::string::npos) << "names the tensor whose shape differs: " << r.err;
  EXPECT_NE(r.err.find("[5, 64, 1, 1]"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[7, 64, 1, 1]"), std::string::npos) << r.err;
  // weights given as images, images missing the tensor
  r = run_kd({"forward", "--arch", kArch, "--num-classes", "5", "--weights", f.weights, "--input", f.weights,
              "--output", f.out});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("'images'"), std::string::npos) << r.err;
  // a truncated weights file
  test::write_bytes(f.dir.file("cut.safetensors"), {1, 2, 3});
  r = run_kd({"forward", "--arch", kArch, "--num-classes", "5", "--weights", f.dir.file("cut.safetensors"), "--input",
              f.images, "--output", f.out});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("cut.safetensors"), std::string::npos) << r.err;
  // images that are not NHWC with 3 channels
  Tensor bad = Tensor::zeros_cpu({2, 8, 8, 1}, DType::f32);
  SafetensorsWriter w;
  w.add("images", bad);
  w.write(f.dir.file("gray.safetensors"));
  r = run_kd({"forward", "--arch", kArch, "--num-classes", "5", "--weights", f.weights, "--input",
              f.dir.file("gray.safetensors"), "--output", f.out});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("[2, 8, 8, 1]"), std::string::npos) << r.err;
}

TEST(Bench, CpuStepPrintsThroughputAndPhases) {
  const auto r = run_kd({"bench", "--device", "cpu", "--teacher", "resnetv2(depths=1-1, width=16, stem=conv3)",
                         "--student", kArch, "--teacher-res", "24", "--student-res", "16", "--batch", "4", "--steps",
                         "2", "--warmup", "1", "--classes", "10", "--source-px", "30"});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* phase : {"augment", "teacher_forward", "student_forward", "loss", "backward", "optimizer"})
    EXPECT_NE(r.out.find(phase), std::string::npos) << phase << " missing in:\n" << r.out;
  EXPECT_NE(r.out.find("RESULT {\"tool\": \"kd\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("images/s"), std::string::npos);
}

// kd bench --teacher-precision fp8: the teacher calibrated on the synthetic batch, then the check
// every FP8 run makes, on that batch (emulated FP8 on the CPU).
TEST(Bench, AnFp8TeacherIsCheckedAgainstItsFullPrecisionSelf) {
  const auto r = run_kd({"bench",
                         "--device",
                         "cpu",
                         "--teacher",
                         "resnetv2(depths=1-1, width=16, stem=conv3)",
                         "--student",
                         kArch,
                         "--teacher-res",
                         "24",
                         "--student-res",
                         "16",
                         "--batch",
                         "4",
                         "--steps",
                         "1",
                         "--warmup",
                         "1",
                         "--classes",
                         "10",
                         "--source-px",
                         "30",
                         "--teacher-precision",
                         "fp8"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string check = "fp8 check on the synthetic batch: top-1 agreement with full precision ";
  const size_t at = r.err.find(check);
  ASSERT_NE(at, std::string::npos) << r.err;
  const double agreement = std::stod(r.err.substr(at + check.size()));
  EXPECT_TRUE(agreement >= 0 && agreement <= 100) << r.err.substr(at, 160);
  EXPECT_NE(r.err.find("on 4 calibration images", at), std::string::npos) << r.err.substr(at, 160);
  EXPECT_NE(r.err.find("emulated on the CPU"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kd

namespace kd {
namespace {

TEST(Configs, EveryShippedConfigLoads) {
  int checked = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(KD_SOURCE_DIR) + "/configs")) {
    if (e.path().extension() != ".toml") continue;
    std::ifstream in(e.path());
    std::stringstream text;
    text << in.rdbuf();
    const std::string mode = text.str().find("[model]") != std::string::npos ? "train" : "distill";
    const auto r = test::run_kd({mode, "-c", e.path().string(), "--print-config"});
    EXPECT_EQ(r.code, 0) << e.path() << ": " << r.err;
    EXPECT_NE(r.out.find("[run]"), std::string::npos);
    ++checked;
  }
  EXPECT_GE(checked, 3);
}

TEST(Configs, ListKeysNamesTheDataParallelKeys) {
  const auto keys = test::run_kd({"distill", "--list-keys"});
  for (const char* key : {"optim.accumulate", "comm.backend", "comm.timeout_s", "comm.bucket_mb", "comm.overlap"})
    EXPECT_NE(keys.out.find(key), std::string::npos) << key;
}

// kd inspect --arch: parameters and multiply-adds as timm publishes them for its models
// (resnet50: 25.56 M, 4.1 GMACs at 224; resnetv2_50x1_bit: 25.55 M).
TEST(Inspect, AnArchitecturesSizeAndCost) {
  auto r = test::run_kd({"inspect", "--arch", "resnet50"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("resnet50: 25.56 M parameters in 161 tensors, 53173 buffer elements, 4.089 GMACs"),
            std::string::npos)
      << r.out;
  r = test::run_kd({"inspect", "--arch", "resnetv2_50x1_bit", "--resolution", "160", "--num-classes", "10"});
  EXPECT_NE(r.out.find("resnetv2_50x1_bit: 23.52 M parameters"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("at 160x160, 10 classes"), std::string::npos) << r.out;
  r = test::run_kd({"inspect", "--arch", "resnet7"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("unknown arch 'resnet7'"), std::string::npos) << r.err;
  r = test::run_kd({"inspect"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("either FILE or --arch"), std::string::npos) << r.err;
}

// kd bench-loader on a folder of JPEGs: every decoder's row for every thread count with its
// phase shares, one RESULT line each; the old name still works; a folder without JPEGs is an
// error naming it.
TEST(BenchDecode, MeasuresEveryDecoderOnAFolderOfJpegs) {
  test::TempDir dir;
  std::vector<uint8_t> px(size_t(120) * 90 * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t((i * 7 + i / 360) % 251);
  for (int k = 0; k < 3; ++k) test::write_jpg(dir.file("sub/" + std::to_string(k) + ".jpg"), 120, 90, 3, px);
  const auto r = run_kd({"bench-loader", dir.str(), "--threads", "1,2", "--views", "32,24"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("3 JPEGs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| read | decode | resize | pack |"), std::string::npos) << r.out;
  const std::vector<std::string> decoders =
      KD_HAVE_JPEG ? std::vector<std::string>{"stb_image", "libjpeg-turbo", "libjpeg-turbo, scaled",
                                              "libjpeg-turbo, views only"}
                   : std::vector<std::string>{"stb_image"};
  for (const std::string& d : decoders)
    for (const char* t : {"1", "2"}) {
      EXPECT_NE(r.out.find("| " + d + " | " + t + " |"), std::string::npos) << d << " x" << t << ":\n" << r.out;
      EXPECT_NE(r.err.find("\"decoder\": \"" + d + "\", \"threads\": " + t), std::string::npos) << r.err;
    }
  if (KD_HAVE_JPEG) {
    EXPECT_NE(r.out.find("DCT scales for 32-px views"), std::string::npos) << r.out;
  }
  test::TempDir empty;
  const auto bad = run_kd({"bench-decode", empty.str()});  // the alias
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("no .jpg/.jpeg files below " + empty.str()), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace kd
