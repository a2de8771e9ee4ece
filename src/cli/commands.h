// The subcommands of mman_exp; each returns the process exit code.
#pragma once
#include <cstdint>
#include <string>

namespace mman::cli {

struct SynthArgs {
  std::string preset = "iemocap";
  uint64_t seed = 0;
  std::string out;
};
int cmd_synth(const SynthArgs& args);

struct InspectArgs {
  std::string file;
  std::string protocol;  // empty: raw labels only
};
int cmd_inspect(const InspectArgs& args);

int cmd_info();

}  // namespace mman::cli
