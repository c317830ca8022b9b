#include "tools/cli/cli.h"

int main(int argc, char** argv) { return kd::cli::run(argc, argv); }
