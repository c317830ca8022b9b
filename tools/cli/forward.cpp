#include "tools/cli/forward.h"

#include <algorithm>
#include <cstdio>

#include "engine/ops.h"
#include "engine/safetensors.h"
#include "models/model.h"
#include "models/weights.h"
#include "tools/cli/cli.h"

namespace kd::cli {

namespace {
struct ForwardArgs {
  std::string arch, weights, input, output, device = "auto";
  int64_t num_classes = 0, batch_size = 32;
  uint64_t random_init_seed = 0;
  bool random_init = false;
};

void run_forward(const ForwardArgs& a) {
  auto ctx = make_context(a.device);
  ModelSpec spec;
  spec.arch = a.arch;
  spec.num_classes = a.num_classes;
  std::unique_ptr<Model> model = create_model(spec);
  model->params().allocate(*ctx);
  if (a.random_init) {
    model->params().init(a.random_init_seed, *ctx);
  } else {
    KD_CHECK(!a.weights.empty(), "kd forward: give --weights FILE (or --random-init SEED)");
    model->params().load(*open_weights(a.weights, a.arch), *ctx);
  }
  model->set_frozen(true);

  SafetensorsFile in = SafetensorsFile::open(a.input);
  KD_CHECK(in.contains("images"), a.input, ": no tensor 'images' (float32 NHWC images expected)");
  const Shape shape = in.entry("images").shape;
  KD_CHECK(shape.size() == 4 && shape[3] == spec.in_channels, a.input, ": 'images' has shape ", shape_str(shape),
           ", expected [n, h, w, ", spec.in_channels, "] (NHWC)");
  const Tensor images = in.tensor_f32("images", shape);
  const int64_t n = shape[0];
  Tensor logits = Tensor::zeros_cpu({n, spec.num_classes}, DType::f32);
  std::fprintf(stderr, "kd forward: %s on %s, %lld images of %lldx%lld\n", model->summary().c_str(),
               ctx->describe().c_str(), (long long)n, (long long)shape[1], (long long)shape[2]);
  for (int64_t b = 0; b < n; b += a.batch_size) {
    const int64_t e = std::min(n, b + a.batch_size);
    Tensor x = ops::to_activation(*ctx, images.slice_rows(b, e).clone_cpu());
    Tensor y = ops::to_host_f32(*ctx, model->forward(*ctx, x, Mode::eval));
    std::copy(y.data<float>(), y.data<float>() + y.numel(), logits.data<float>() + b * spec.num_classes);
  }
  SafetensorsWriter out;
  out.add("logits", logits);
  out.set_metadata("arch", a.arch);
  out.write(a.output);
  std::fprintf(stderr, "kd forward: wrote logits [%lld, %lld] to %s\n", (long long)n, (long long)spec.num_classes,
               a.output.c_str());
}
}  // namespace

void add_forward_command(CLI::App& app) {
  auto args = std::make_shared<ForwardArgs>();
  CLI::App* cmd = app.add_subcommand("forward", "Logits of a model on float32 NHWC images (tensor 'images')");
  cmd->add_option("--arch", args->arch, "Architecture, e.g. resnetv2_50x1_bit")->required();
  cmd->add_option("--num-classes", args->num_classes, "Classes of the head")->required()->check(CLI::PositiveNumber);
  cmd->add_option("--weights", args->weights, "timm-named safetensors, or BiT's original .npz")->check(CLI::ExistingFile);
  cmd->add_option("--random-init", args->random_init_seed, "Initialise randomly from this seed instead of --weights");
  cmd->add_option("--input", args->input, "safetensors file with 'images' [n, h, w, 3] float32")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--output", args->output, "safetensors file to write 'logits' [n, classes] float32")->required();
  cmd->add_option("--device", args->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->add_option("--batch-size", args->batch_size, "Images per forward pass")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->callback([args, cmd] {
    args->random_init = cmd->count("--random-init") > 0;
    run_forward(*args);
  });
}

}  // namespace kd::cli
