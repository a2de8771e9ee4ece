// `mman_exp run` and `mman_exp params`.
#include <fmt/format.h>

#include "mman/error.h"
#include "mman/exp/config.h"
#include "mman/exp/pipeline.h"
#include "mman/train/trainer.h"
#include "src/cli/commands.h"

namespace mman::cli {

int cmd_run(const RunArgs& args) {
  RunOptions o;
  o.config_file = args.config;
  o.overrides = args.sets;
  o.out_dir = args.out;
  o.backend = args.backend;
  o.threads = args.threads;
  o.resume = args.resume;
  o.resume_dir = args.resume_dir;
  return run_experiment(o);
}

int cmd_params(const ParamsArgs& args) {
  const ExperimentConfig cfg = load_experiment(args.config, args.sets);
  const ExperimentData data = load_experiment_data(cfg.data);
  const DataShape shape = data_shape_of(data.dataset, data.protocol);
  fmt::print("{} on {} (dims", cfg.name, data.description);
  for (size_t m = 0; m < shape.modalities.size(); ++m) fmt::print(" {} {}", shape.modalities[m], shape.dims[m]);
  fmt::print(", {} outputs)\n\n", shape.num_outputs);
  fmt::print("{:<16} {:<13} {:>12} {:>8} {:>16}\n", "model", "type", "parameters", "(M)", "trained in stage 2");
  for (const ModelEntry& entry : cfg.models) {
    std::unique_ptr<Model> model;
    try {
      model = make_model(entry.model, shape);
    } catch (const Error& e) {
      fail("{}: models.{}: {}", cfg.file, entry.name, e.what());
    }
    const ParamStore& p = model->params();
    int64_t fusion = 0;
    for (const ParamInfo& info : p.infos())
      if (info.name.compare(0, 8, "subnets.") != 0) fusion += static_cast<int64_t>(info.size);
    fmt::print("{:<16} {:<13} {:>12} {:>8.2f} {:>16}\n", entry.name, entry.model.type, p.num_parameters(),
               static_cast<double>(p.num_parameters()) / 1e6, entry.composite() ? std::to_string(fusion) : "-");
    if (args.verbose)
      for (const ParamInfo& info : p.infos())
        fmt::print("    {:<44} [{}] {}\n", info.name, fmt::join(info.shape, " x "), info.size);
  }
  return 0;
}

}  // namespace mman::cli
