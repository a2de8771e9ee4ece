// mman_exp: the command-line entry point. Parses arguments and dispatches to src/cli/cmd_*.cpp.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <exception>

#include "mman/error.h"
#include "src/cli/commands.h"

int main(int argc, char** argv) {
  using namespace mman::cli;
  CLI::App app{"mman_exp: multimodal speech emotion recognition (cLSTM, cLSTM-MMA, MMAN)"};
  app.require_subcommand(1);

  SynthArgs synth;
  CLI::App* synth_cmd = app.add_subcommand("synth", "write a synthetic IEMOCAP-shaped dataset (mman-dataset/1)");
  synth_cmd->add_option("--preset", synth.preset, "dataset preset")->check(CLI::IsMember({"iemocap"}));
  synth_cmd->add_option("--seed", synth.seed, "generator seed (same seed, same file contents)");
  synth_cmd->add_option("--out", synth.out, "output HDF5 file")->required();

  InspectArgs inspect;
  CLI::App* inspect_cmd = app.add_subcommand("inspect", "validate a dataset file and summarise it");
  inspect_cmd->add_option("file", inspect.file, "mman-dataset/1 HDF5 file")->required();
  inspect_cmd->add_option("--protocol", inspect.protocol, "also count classes under a label protocol (iemocap4, iemocap6, binary4, raw)");

  CLI::App* info_cmd = app.add_subcommand("info", "version, build, BLAS, threads and CUDA state");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (*synth_cmd) return cmd_synth(synth);
    if (*inspect_cmd) return cmd_inspect(inspect);
    if (*info_cmd) return cmd_info();
  } catch (const mman::Error& e) {
    std::fflush(stdout);
    fmt::print(stderr, "mman_exp: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "mman_exp: internal error: {}\n", e.what());
    return 3;
  }
  return 2;
}
