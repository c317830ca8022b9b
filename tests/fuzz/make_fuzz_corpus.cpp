// Writes the seed corpora of the fuzz targets: small valid files of each format, made with kd's own
// writers and the tests' fixture writers, so every seed is something a parser accepts and the
// fuzzer starts from deep inside each format. Deterministic: rerunning it rewrites the same bytes.
//   make_fuzz_corpus tests/fuzz/corpus
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "tests/data/data_fixtures.h"
#include "tests/support/npz_writer.h"

namespace {

using namespace kd;
using test::fs::path;

std::vector<uint8_t> file_bytes(const path& p) {
  const std::string text = test::read_text(p.string());
  return {text.begin(), text.end()};
}

Tensor counting(const Shape& shape, DType dtype) {
  Tensor t = Tensor::zeros_cpu(shape, dtype);
  auto* bytes = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) bytes[i] = uint8_t(i * 37 + 11);
  return t;
}

void safetensors_seeds(const path& dir) {
  SafetensorsWriter every_dtype;
  const DType dtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16, DType::u8, DType::i32, DType::i64};
  for (DType d : dtypes) every_dtype.add(std::string("t_") + dtype_name(d), counting({2, 3}, d));
  every_dtype.set_metadata("format", "pt");
  every_dtype.write((dir / "every_dtype.safetensors").string());
  SafetensorsWriter shapes;
  shapes.add("scalar", counting({}, DType::f32));
  shapes.add("empty", counting({0, 4}, DType::f32));
  shapes.add("conv.weight", counting({4, 1, 3, 3}, DType::bf16));
  shapes.write((dir / "shapes.safetensors").string());
  SafetensorsWriter().write((dir / "no_tensors.safetensors").string());
}

void npz_seeds(const path& dir) {
  const std::vector<float> f32 = {1.5f, -2.f, 3.25f, 0.f, 5.f, -6.5f};
  const std::vector<int64_t> i64 = {1, -2, 3};
  const std::vector<uint8_t> u8 = {0, 1, 254, 255};
  const std::vector<test::ZipEntry> members = {
      {"w.npy", test::npy("<f4", {2, 3}, f32)},
      {"fortran.npy", test::npy("<f4", {3, 2}, f32, true)},
      {"ids.npy", test::npy("<i8", {3}, i64), true},
      {"scalar.npy", test::npy("|u1", {}, std::vector<uint8_t>{7})},
      {"v2.npy", test::npy("|u1", {2, 2}, u8, false, 2), true},
  };
  test::write_file_bytes((dir / "stored_and_deflated.npz").string(), test::build_zip(members).bytes);
  test::write_file_bytes((dir / "zip64.npz").string(), test::build_zip({members[0], members[2]}, {true, ""}).bytes);
  test::write_file_bytes((dir / "comment.npz").string(), test::build_zip({members[1]}, {false, "np"}).bytes);
}

// The idx target's input: the images file's length (4 bytes, little-endian), it, the labels file.
std::vector<uint8_t> idx_pair(const std::vector<uint8_t>& images, const std::vector<uint8_t>& labels) {
  std::vector<uint8_t> out;
  test::put32(out, uint32_t(images.size()));
  out.insert(out.end(), images.begin(), images.end());
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

std::vector<uint8_t> gzipped(const std::vector<uint8_t>& bytes, const path& scratch) {
  test::write_gzip(scratch.string(), bytes);
  std::vector<uint8_t> out = file_bytes(scratch);
  test::fs::remove(scratch);
  return out;
}

void idx_seeds(const path& dir) {
  const auto images = test::idx_bytes({3, 4, 4}, test::random_bytes(48, 1));
  const auto labels = test::idx_bytes({3}, {0, 2, 1});
  test::write_file_bytes((dir / "raw.idx").string(), idx_pair(images, labels));
  test::write_file_bytes((dir / "gzip.idx").string(),
                         idx_pair(gzipped(images, dir / "scratch.gz"), gzipped(labels, dir / "scratch.gz")));
  test::write_file_bytes((dir / "rgb.idx").string(),
                         idx_pair(test::idx_bytes({2, 2, 3, 3}, test::random_bytes(36, 2)), test::idx_bytes({2}, {1, 0})));
}

void image_seeds(const path& dir) {
  for (int c : {1, 3, 4}) {
    const std::string stem = (dir / ("c" + std::to_string(c))).string();
    test::write_png(stem + ".png", 5, 4, c, test::gradient(5, 4, c));
    test::write_bmp(stem + ".bmp", 5, 4, c, test::gradient(5, 4, c));
  }
  for (int c : {1, 3}) test::write_jpg((dir / ("c" + std::to_string(c) + ".jpg")).string(), 17, 9, c, test::gradient(17, 9, c));
}

void text_seed(const path& file, const std::string& text) { test::write_text(file.string(), text); }

void list_file_seeds(const path& dir) {
  text_seed(dir / "plain.txt", "a/1.jpg 0\nb/2.png 3\n");
  text_seed(dir / "comments.txt", "# header\n\nwith space/x y.jpg\t2  # note\nc#d.jpg 1\r\n/abs/p.bmp 0\n");
}

void config_seeds(const path& dir) {
  text_seed(dir / "tables.toml",
            "[optim]\nlr = 3e-4\nname = \"sgd\"\n\n[train]\nsteps = 5\namp = true\n\n[data.train]\npath = \"/x\"\n");
  text_seed(dir / "lists.toml",
            "teacher.name = [\"a\", \"b\"]\nteacher.resolution = [224, 384]\nteacher.weight = [0.5, 1]\n");
  const char overrides[] = "optim.lr = 1\0optim.name=shampoo\0teacher.1.resolution=288\0teacher.name=a,b\0"
                           "teacher.2.weight=0.25\0data.train.path=/y z";
  text_seed(dir / "overrides.toml", std::string(overrides, sizeof overrides - 1));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_corpus CORPUS_DIR (tests/fuzz/corpus)\n");
    return 2;
  }
  const path root = argv[1];
  const std::pair<const char*, void (*)(const path&)> targets[] = {
      {"safetensors", safetensors_seeds}, {"npz", npz_seeds},           {"idx", idx_seeds},
      {"image", image_seeds},             {"list_file", list_file_seeds}, {"config", config_seeds}};
  for (const auto& [name, write_seeds] : targets) {
    test::fs::create_directories(root / name);
    write_seeds(root / name);
  }
  return 0;
}
