#include "tools/cli/weights.h"

#include <cstdio>

#include "engine/context.h"
#include "engine/npz.h"
#include "engine/safetensors.h"
#include "engine/version.h"
#include "models/model.h"
#include "models/weights.h"

namespace kd::cli {

namespace {

struct ConvertArgs {
  std::string input, output, arch;
  int64_t num_classes = 0;  // 0: the head's in the file
};

// Builds the model, loads the file into it strictly (every parameter present, every shape right,
// nothing left over) and saves it: what comes out is exactly the model's state dict.
void run_convert(const ConvertArgs& a) {
  auto ctx = Context::cpu();
  std::unique_ptr<TensorSource> source = open_weights(a.input, a.arch);
  ModelSpec spec;
  spec.arch = a.arch;
  spec.num_classes = a.num_classes;
  if (spec.num_classes == 0) {
    KD_CHECK(source->contains("head.fc.bias"), a.input,
             ": no head.fc.bias to take the class count from; give --num-classes");
    const Shape head = source->shape_of("head.fc.bias");
    KD_CHECK(head.size() == 1, a.input, ": head.fc.bias has shape ", shape_str(head), ", not [classes]");
    spec.num_classes = head[0];
  }
  std::unique_ptr<Model> model = create_model(spec);
  model->params().allocate(*ctx, /*trainable=*/false);
  model->params().load(*source, *ctx);
  SafetensorsWriter out;
  model->params().save(out, *ctx);
  out.set_metadata("arch", spec.arch);
  out.set_metadata("num_classes", std::to_string(spec.num_classes));
  out.set_metadata("format", "pt");  // what timm and the safetensors library expect of a torch state dict
  out.set_metadata("converted_from", a.input);
  out.set_metadata("kd_version", kVersion);
  out.write(a.output);
  std::printf("kd convert: %s -> %s (%s)\n", a.input.c_str(), a.output.c_str(), model->summary().c_str());
}

struct Row {
  std::string name, dtype;
  Shape shape;
  size_t bytes = 0;
};

void print_rows(const std::vector<Row>& rows) {
  size_t name_width = 4, dtype_width = 5;
  for (const Row& r : rows)
    name_width = std::max(name_width, r.name.size()), dtype_width = std::max(dtype_width, r.dtype.size());
  int64_t elements = 0;
  size_t bytes = 0;
  for (const Row& r : rows) {
    const int64_t n = shape_numel(r.shape);
    std::printf("%-*s  %-*s  %-20s %lld\n", int(name_width), r.name.c_str(), int(dtype_width), r.dtype.c_str(),
                shape_str(r.shape).c_str(), (long long)n);
    elements += n;
    bytes += r.bytes;
  }
  std::printf("total: %zu tensors, %lld parameters (%.2f M), %zu bytes (%.1f MiB)\n", rows.size(), (long long)elements,
              double(elements) / 1e6, bytes, double(bytes) / double(1 << 20));
}

void run_inspect(const std::string& path) {
  KD_CHECK(!path.empty(), "kd inspect: give FILE (safetensors or .npz)");
  std::vector<Row> rows;
  if (is_npz_path(path)) {
    const NpzFile f = NpzFile::open(path);
    for (const std::string& name : f.names()) {
      const NpzMember& m = f.member(name);
      std::string dtype = std::string(dtype_name(m.dtype)) + (m.fortran_order ? " (fortran)" : "");
      rows.push_back({name, dtype, m.shape, size_t(m.data_bytes())});
    }
    std::printf("%s: .npz archive, %zu arrays\n", path.c_str(), rows.size());
    print_rows(rows);
    return;
  }
  const SafetensorsFile f = SafetensorsFile::open(path);
  for (const std::string& name : f.names()) {
    const SafetensorsEntry& e = f.entry(name);
    rows.push_back({name, dtype_name(e.dtype), e.shape, e.bytes});
  }
  std::printf("%s: safetensors, %zu tensors\n", path.c_str(), rows.size());
  print_rows(rows);
  for (const auto& [key, value] : f.metadata()) {
    // Long values (a run's whole config) are shown by their first line.
    const size_t cut = std::min(value.find('\n'), size_t(100));
    std::printf("metadata %s = %s%s\n", key.c_str(), value.substr(0, cut).c_str(), cut < value.size() ? " ..." : "");
  }
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto args = std::make_shared<ConvertArgs>();
  CLI::App* cmd = app.add_subcommand("convert", "BiT's original .npz weights -> timm-named safetensors (OIHW)");
  cmd->add_option("input", args->input, "weights to convert: BiT .npz (or safetensors)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("output", args->output, "safetensors file to write")->required();
  cmd->add_option("--arch", args->arch, "Architecture, e.g. resnetv2_152x2_bit")->required();
  cmd->add_option("--num-classes", args->num_classes, "Classes of the head (default: the file's)")
      ->check(CLI::PositiveNumber);
  cmd->callback([args] { run_convert(*args); });
}

// An architecture instead of a file: its parameters (and buffers) and the multiply-adds of one
// image's forward pass at a resolution, computed by kd from the model it builds.
void run_inspect_arch(const std::string& arch, int64_t resolution, int64_t classes) {
  ModelSpec spec;
  spec.arch = arch;
  spec.num_classes = classes;
  std::unique_ptr<Model> model = create_model(spec);
  int64_t buffers = 0;
  for (const Param& b : model->params().buffers()) buffers += b.numel();
  const double macs = double(model->forward_macs(resolution, resolution));
  std::printf("%s: %.2f M parameters in %zu tensors, %lld buffer elements, %.3f GMACs (%.3f GFLOPs) per image at "
              "%lldx%lld, %lld classes\n",
              arch.c_str(), double(model->params().numel()) / 1e6, model->params().params().size(),
              (long long)buffers, macs / 1e9, 2 * macs / 1e9, (long long)resolution, (long long)resolution,
              (long long)classes);
  std::printf("RESULT {\"arch\": \"%s\", \"params\": %lld, \"macs\": %.0f, \"resolution\": %lld}\n", arch.c_str(),
              (long long)model->params().numel(), macs, (long long)resolution);
}

void add_inspect_command(CLI::App& app) {
  auto file = std::make_shared<std::string>();
  auto arch = std::make_shared<std::string>();
  auto resolution = std::make_shared<int64_t>(224);
  auto classes = std::make_shared<int64_t>(1000);
  CLI::App* cmd = app.add_subcommand(
      "inspect", "Tensors of a weights file (safetensors or .npz), or the size and cost of an architecture (--arch)");
  cmd->add_option("file", *file, "safetensors or .npz file")->check(CLI::ExistingFile);
  cmd->add_option("--arch", *arch, "an architecture instead of a file: parameters and GMACs per image");
  cmd->add_option("--resolution", *resolution, "with --arch: input size, px")->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--num-classes", *classes, "with --arch: classes of the head")->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->callback([file, arch, resolution, classes] {
    KD_CHECK(file->empty() != arch->empty(), "kd inspect: give either FILE or --arch NAME");
    if (!arch->empty())
      run_inspect_arch(*arch, *resolution, *classes);
    else
      run_inspect(*file);
  });
}

}  // namespace kd::cli
