// mman_exp: the command-line entry point. Parses arguments and dispatches to src/cli/cmd_*.cpp.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <string>

#include "mman/error.h"
#include "mman/threads.h"
#include "src/cli/commands.h"

int main(int argc, char** argv) {
  mman::prefer_passive_openmp_waits(argv);  // may re-execute the program (include/mman/threads.h)
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

  RunArgs run;
  CLI::App* run_cmd = app.add_subcommand("run", "run an experiment (YAML) and write its run directory");
  run_cmd->add_option("config", run.config, "experiment YAML file (optional with --resume DIR)");
  run_cmd->add_option("--set", run.sets, "override a config value: key.path=value (repeatable)")->take_all();
  run_cmd->add_option("--out", run.out, "run directory (default: output.dir of the config)");
  run_cmd->add_option("--backend", run.backend, "auto, cpu or cuda (default: the config's)");
  run_cmd->add_option("--threads", run.threads, "CPU threads, 0 = all cores (default: the config's)")->check(CLI::Range(0, 1024));
  CLI::Option* resume_opt = run_cmd->add_option("--resume", run.resume_dir, "continue an interrupted run (its directory, default: the config's)")
                                ->expected(0, 1);

  ParamsArgs params;
  CLI::App* params_cmd = app.add_subcommand("params", "parameter counts of every model of an experiment");
  params_cmd->add_option("config", params.config, "experiment YAML file")->required();
  params_cmd->add_option("--set", params.sets, "override a config value: key.path=value (repeatable)")->take_all();
  params_cmd->add_flag("--verbose,-v", params.verbose, "list every tensor");

  EvalArgs eval;
  CLI::App* eval_cmd = app.add_subcommand("eval", "evaluate a checkpoint on a dataset split");
  eval_cmd->add_option("checkpoint", eval.checkpoint, "mman-checkpoint/1 file")->required();
  eval_cmd->add_option("--data", eval.data, "mman-dataset/1 file")->required();
  eval_cmd->add_option("--split", eval.split, "split to score: test (default), valid, train or all");
  eval_cmd->add_option("--protocol", eval.protocol, "label protocol (default: the checkpoint's)");
  eval_cmd->add_flag("--json", eval.json, "print the metrics as JSON");

  EvalArgs predict;
  predict.split = "all";
  CLI::App* predict_cmd = app.add_subcommand("predict", "per-utterance predictions (and attention weights) as CSV");
  predict_cmd->add_option("checkpoint", predict.checkpoint, "mman-checkpoint/1 file")->required();
  predict_cmd->add_option("--data", predict.data, "mman-dataset/1 file")->required();
  predict_cmd->add_option("--out", predict.out, "CSV file to write")->required();
  predict_cmd->add_option("--split", predict.split, "conversations to predict: all (default), train, valid or test");
  predict_cmd->add_option("--protocol", predict.protocol, "label protocol (default: the checkpoint's)");

  // A first word that is no command (a typo like `mman_exp rn`) would otherwise be reported by
  // CLI11 as a missing subcommand.
  if (argc > 1 && argv[1][0] != '-') {
    std::string names;
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
      names += (names.empty() ? "" : ", ") + sub->get_name();
      known = known || sub->get_name() == argv[1];
    }
    if (!known) {
      std::fprintf(stderr, "mman_exp: error: unknown command '%s' (expected one of %s); see mman_exp --help\n",
                   argv[1], names.c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (*synth_cmd) return cmd_synth(synth);
    if (*inspect_cmd) return cmd_inspect(inspect);
    if (*info_cmd) return cmd_info();
    if (*run_cmd) {
      run.resume = resume_opt->count() > 0;
      return cmd_run(run);
    }
    if (*params_cmd) return cmd_params(params);
    if (*eval_cmd) return cmd_eval(eval);
    if (*predict_cmd) return cmd_predict(predict);
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
