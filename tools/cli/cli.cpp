#include "tools/cli/cli.h"

#include <cstdio>
#include <exception>

#include "engine/comm_mpi.h"
#include "engine/version.h"
#include "tools/cli/bench.h"
#include "tools/cli/bench_decode.h"
#include "tools/cli/forecast.h"
#include "tools/cli/forward.h"
#include "tools/cli/info.h"
#include "tools/cli/pack.h"
#include "tools/cli/plot.h"
#include "tools/cli/train.h"
#include "tools/cli/weights.h"

namespace kd::cli {

int run(int argc, char** argv) {
  CLI::App app{"kd: knowledge distillation of image classifiers by function matching"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("kd ") + kVersion);
  add_forward_command(app);
  int exit_code = 0;
  add_train_commands(app, &exit_code);
  add_eval_command(app, &exit_code);
  add_bench_command(app);
  add_bench_decode_command(app);
  add_bench_shards_command(app);
  add_pack_command(app);
  add_info_command(app);
  add_plot_command(app, &exit_code);
  add_forecast_command(app, &exit_code);
  add_convert_command(app);
  add_inspect_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kd: error: %s\n", e.what());
    std::fflush(stderr);
    abort_peers_after_error(1);  // other ranks of an MPI job end now, not at their timeout
    return 1;
  }
  return exit_code;
}

}  // namespace kd::cli
