// The subcommands of mman_exp; each returns the process exit code.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

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

struct RunArgs {
  std::string config;
  std::vector<std::string> sets;  // --set key.path=value
  std::string out;
  std::string backend;
  int threads = -1;
  bool resume = false;
  std::string resume_dir;
};
int cmd_run(const RunArgs& args);

struct ParamsArgs {
  std::string config;
  std::vector<std::string> sets;
  bool verbose = false;  // every tensor
};
int cmd_params(const ParamsArgs& args);

struct EvalArgs {
  std::string checkpoint;
  std::string data;
  std::string split = "test";  // a split name, or "all"
  std::string protocol;        // empty: the checkpoint's
  std::string out;             // predict: the CSV file
  bool json = false;           // eval: print the metrics as JSON
};
int cmd_eval(const EvalArgs& args);
int cmd_predict(const EvalArgs& args);

}  // namespace mman::cli
