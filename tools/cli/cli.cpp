#include "tools/cli/cli.h"

#include <cstdio>
#include <exception>

#include "tools/cli/forward.h"

namespace kd::cli {

std::unique_ptr<Context> make_context(const std::string& device) {
  if (device == "cpu") return Context::cpu();
  if (device == "auto") return cuda_available() ? Context::cuda(0) : Context::cpu();
  if (device == "cuda") return Context::cuda(0);
  if (device.rfind("cuda:", 0) == 0) {
    int index = -1;
    try {
      index = std::stoi(device.substr(5));
    } catch (const std::exception&) {
    }
    KD_CHECK(index >= 0, "device '", device, "': expected cuda:N with N >= 0");
    return Context::cuda(index);
  }
  KD_FAIL("unknown device '", device, "' (use cpu, cuda, cuda:N or auto)");
}

int run(int argc, char** argv) {
  CLI::App app{"kd: knowledge distillation of image classifiers by function matching"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kd 0.1");
  add_forward_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kd: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace kd::cli
