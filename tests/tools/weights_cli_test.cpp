// BiT .npz weights on the command line: kd convert writes timm-named safetensors that load with
// bitwise the same logits as the .npz itself, kd inspect lists tensors and totals, and .npz files
// load wherever weights do (kd forward, teachers of kd distill), with errors naming the file.
#include <gtest/gtest.h>

#include <cstring>

#include "engine/safetensors.h"
#include "models/model.h"
#include "models/weights.h"
#include "tests/support/npz_writer.h"
#include "tests/support/testing.h"
#include "tests/tools/tool_fixtures.h"
#include "train/pipeline.h"

namespace kd {
namespace {

using test::concat;
using test::run_kd;

const char* kArch = "resnetv2(depths=1-1, width=8, stem=conv3)";

void expect_mentions(const std::string& text, std::initializer_list<std::string> parts) {
  for (const std::string& p : parts) EXPECT_NE(text.find(p), std::string::npos) << "missing '" << p << "' in: " << text;
}

// A random kd model written as BiT's .npz, and images to run it on.
struct BitFiles {
  test::TempDir dir;
  std::string npz = dir.file("bit.npz"), images = dir.file("x.safetensors");
  std::unique_ptr<Context> ctx = Context::cpu();
  std::unique_ptr<Model> model;
  explicit BitFiles(bool deflate = false, int64_t classes = 5) {
    ModelSpec spec;
    spec.arch = kArch;
    spec.num_classes = classes;
    model = create_model(spec, *ctx, 11);
    test::BitNpzOptions o;
    o.deflate = deflate;
    test::write_bit_npz(model->params(), *ctx, npz, o);
    Tensor x = Tensor::zeros_cpu({3, 20, 20, 3}, DType::f32);
    const auto v = test::random_vector<float>(size_t(x.numel()), 12);
    std::copy(v.begin(), v.end(), x.data<float>());
    SafetensorsWriter w;
    w.add("images", x);
    w.write(images);
  }
  Tensor logits_of(Model& m) const {
    const Tensor x = SafetensorsFile::open(images).tensor_f32("images", {3, 20, 20, 3});
    return m.forward(*ctx, x, Mode::eval).clone_cpu();
  }
};

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(Convert, NpzToSafetensorsLoadsWithBitwiseTheSameLogits) {
  for (bool deflate : {false, true}) {
    BitFiles f(deflate);
    const std::string out = f.dir.file("converted.safetensors");
    const auto r = run_kd({"convert", f.npz, out, "--arch", kArch});
    ASSERT_EQ(r.code, 0) << r.err;
    expect_mentions(r.out, {f.npz, out});

    // timm's names and OIHW shapes, the class count from the npz's head, the model's own values.
    const SafetensorsFile st = SafetensorsFile::open(out);
    EXPECT_EQ(st.metadata().at("arch"), kArch);
    EXPECT_EQ(st.metadata().at("num_classes"), "5");
    EXPECT_EQ(st.names().size(), f.model->params().params().size());
    for (const Param& p : f.model->params().params()) {
      ASSERT_TRUE(st.contains(p.name)) << p.name;
      EXPECT_EQ(st.entry(p.name).shape, p.file_shape) << p.name;
      EXPECT_EQ(st.entry(p.name).dtype, DType::f32) << p.name;
    }

    // The .npz through open_weights, the converted file as a kd checkpoint (its metadata names
    // the arch): bitwise the same logits, and the same as the model the npz was written from.
    auto from_npz = build_model(*f.ctx, kArch, 5, false, f.npz, 0, /*frozen=*/true);
    auto from_converted = load_checkpoint_model(*f.ctx, out, /*frozen=*/true);
    const Tensor a = f.logits_of(*from_npz), b = f.logits_of(*from_converted), c = f.logits_of(*f.model);
    EXPECT_TRUE(bitwise_equal(a, b)) << "deflate " << deflate;
    EXPECT_TRUE(bitwise_equal(a, c)) << "deflate " << deflate;

    // kd forward on either file writes the same bytes.
    const std::string y_npz = f.dir.file("y_npz.safetensors"), y_st = f.dir.file("y_st.safetensors");
    for (const auto& [weights, y] : {std::make_pair(f.npz, y_npz), std::make_pair(out, y_st)}) {
      const auto fr = run_kd({"forward", "--arch", kArch, "--num-classes", "5", "--weights", weights, "--input",
                              f.images, "--output", y, "--device", "cpu"});
      ASSERT_EQ(fr.code, 0) << fr.err;
    }
    EXPECT_TRUE(
        bitwise_equal(SafetensorsFile::open(y_npz).tensor("logits"), SafetensorsFile::open(y_st).tensor("logits")));
    EXPECT_TRUE(bitwise_equal(SafetensorsFile::open(y_npz).tensor("logits"), a));
  }
}

TEST(Convert, ErrorsNameTheFileAndTheTensor) {
  BitFiles f;
  const std::string out = f.dir.file("out.safetensors");
  auto r = run_kd({"convert", f.npz, out, "--arch", kArch, "--num-classes", "7"});
  EXPECT_EQ(r.code, 1);
  expect_mentions(r.err, {f.npz, "head.fc", "expected [7, 64, 1, 1]"});
  r = run_kd({"convert", f.npz, out, "--arch", "resnetv2(depths=1-2, width=8, stem=conv3)"});
  EXPECT_EQ(r.code, 1);
  expect_mentions(r.err, {f.npz, "missing", "stages.1.blocks.1."});
  r = run_kd({"convert", f.npz, out});
  EXPECT_NE(r.code, 0);
  expect_mentions(r.err, {"--arch"});
  EXPECT_FALSE(std::filesystem::exists(out)) << "nothing written on failure";
}

TEST(Inspect, ListsTensorsAndTotals) {
  BitFiles f;
  const int64_t n = f.model->params().numel();
  const size_t count = f.model->params().params().size();
  const std::string totals = "total: " + std::to_string(count) + " tensors, " + std::to_string(n) + " parameters";
  auto r = run_kd({"inspect", f.npz});
  ASSERT_EQ(r.code, 0) << r.err;
  expect_mentions(r.out, {totals, std::to_string(4 * n) + " bytes", "resnet/root_block/standardized_conv2d/kernel",
                          "[3, 3, 3, 8]", "resnet/head/conv2d/bias", ".npz archive"});
  size_t lines = 0;
  for (char c : r.out) lines += c == '\n';
  EXPECT_EQ(lines, count + 2) << "a heading, one line per tensor, the totals:\n" << r.out;

  const std::string st = f.dir.file("c.safetensors");
  ASSERT_EQ(run_kd({"convert", f.npz, st, "--arch", kArch}).code, 0);
  r = run_kd({"inspect", st});
  ASSERT_EQ(r.code, 0) << r.err;
  expect_mentions(r.out, {totals, std::to_string(4 * n) + " bytes", "stem.conv.weight", "[8, 3, 3, 3]",
                          "metadata arch = " + std::string(kArch), "metadata num_classes = 5"});

  r = run_kd({"inspect"});
  EXPECT_EQ(r.code, 1);
  expect_mentions(r.err, {"give either FILE or --arch"});
  r = run_kd({"inspect", f.dir.file("missing.npz")});
  EXPECT_NE(r.code, 0);
  expect_mentions(r.err, {"missing.npz"});
}

TEST(NpzWeights, TruncatedOrArchlessTeacherErrorsNameTheFile) {
  test::TempDir dir;
  test::write_stripes_dataset(dir, 4, 4);
  BitFiles f;
  std::vector<uint8_t> bytes;
  {
    std::ifstream in(f.npz, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string cut = dir.file("cut_teacher.npz");
  test::write_file_bytes(cut, std::vector<uint8_t>(bytes.begin(), bytes.begin() + std::ptrdiff_t(bytes.size() / 2)));
  const std::string arch = "teacher.arch=[\"" + std::string(kArch) + "\"]";
  const auto student = "student.arch=" + std::string(kArch);
  auto r =
      run_kd(concat({"distill"}, concat(test::tiny_run(dir, "cut", 2), {student, "teacher.weights=" + cut, arch})));
  EXPECT_EQ(r.code, 1);
  expect_mentions(r.err, {"cut_teacher.npz", "truncated"});
  // Without teacher.arch an .npz cannot say what it is.
  r = run_kd(concat({"distill"}, concat(test::tiny_run(dir, "archless", 2), {student, "teacher.weights=" + f.npz})));
  EXPECT_EQ(r.code, 1);
  expect_mentions(r.err, {"bit.npz", "teacher.arch"});
  // kd forward on the truncated file.
  r = run_kd({"forward", "--arch", kArch, "--num-classes", "5", "--weights", cut, "--input", f.images, "--output",
              f.dir.file("y.safetensors")});
  EXPECT_EQ(r.code, 1);
  expect_mentions(r.err, {"cut_teacher.npz", "truncated"});
}

TEST(NpzWeights, DistillsFromAnNpzTeacher) {
  test::TempDir dir;
  test::write_stripes_dataset(dir, 4, 4);
  BitFiles teacher(false, 4);  // the stripes' 4 classes
  const auto r =
      run_kd(concat({"distill"}, concat(test::tiny_run(dir, "npz_teacher", 2),
                                        {"student.arch=" + std::string(kArch), "teacher.weights=" + teacher.npz,
                                         "teacher.arch=[\"" + std::string(kArch) + "\"]"})));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(dir.str() + "/runs/npz_teacher/summary.json"));
}

}  // namespace
}  // namespace kd
