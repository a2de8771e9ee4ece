// run_experiment: stage 1 / stage 2 training per seed, evaluation, and the run directory.
#include "mman/exp/pipeline.h"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "mman/atomic_file.h"
#include "mman/cuda_info.h"
#include "mman/data/synth.h"
#include "mman/error.h"
#include "mman/exp/interrupt.h"
#include "mman/exp/progress.h"
#include "mman/exp/results.h"
#include "mman/exp/run_lock.h"
#include "mman/threads.h"
#include "mman/train/checkpoint.h"
#include "mman/train/trainer.h"

namespace mman {
namespace fs = std::filesystem;

namespace {

// A YAML single-quoted scalar, so an --out path is taken literally as a --set value.
std::string yaml_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The first line where two texts differ, for "config changed" messages.
std::string first_difference(const std::string& a, const std::string& b) {
  std::istringstream sa(a), sb(b);
  std::string la, lb;
  for (int line = 1;; ++line) {
    const bool ha = static_cast<bool>(std::getline(sa, la)), hb = static_cast<bool>(std::getline(sb, lb));
    if (!ha && !hb) return "";
    if (!ha) la = "(end)";
    if (!hb) lb = "(end)";
    if (la != lb) return fmt::format("line {}: was '{}', now '{}'", line, la, lb);
  }
}

// run.log plus the console: every line goes to the file; the console gets it through
// the current Progress (which clears a live line first).
class RunLog {
 public:
  explicit RunLog(const std::string& path) : file_(path, std::ios::app) {
    if (!file_) fail("{}: cannot open the run log for writing", path);
  }
  void line(const std::string& text, Progress* progress = nullptr) {
    file_ << fmt::format("[{}] {}\n", utc_now(), text);
    file_.flush();
    if (progress != nullptr) {
      progress->line(text);
    } else {
      fmt::print(stderr, "{}\n", text);
    }
  }
  void file_only(const std::string& text) {
    file_ << fmt::format("[{}] {}\n", utc_now(), text);
    file_.flush();
  }

 private:
  std::ofstream file_;
};

TrainConfig train_config_of(const TrainSettings& s, int64_t seed) {
  TrainConfig t;
  t.lr = s.lr;
  t.beta1 = s.beta1;
  t.beta2 = s.beta2;
  t.eps = s.eps;
  t.weight_decay = s.weight_decay;
  t.batch_size = s.batch_size;
  t.max_epochs = s.epochs;
  t.patience = s.patience;
  t.clip_norm = s.clip_norm;
  t.clip_value = s.clip_value;
  t.seed = static_cast<uint64_t>(seed);
  return t;
}

SplitSummary summarize(const Dataset& ds, const LabelProtocol& protocol, const std::vector<int>& convs) {
  SplitSummary s;
  s.conversations = static_cast<int>(convs.size());
  for (int c : convs)
    for (int64_t u = ds.conv_offsets[static_cast<size_t>(c)]; u < ds.conv_offsets[static_cast<size_t>(c) + 1]; ++u) {
      ++s.utterances;
      s.labelled += protocol.map(ds.labels[static_cast<size_t>(u)]) >= 0;
    }
  return s;
}

// tools/plot_run.py next to the sources this binary was built from, or next to the binary.
std::string find_plot_script() {
  const std::string built = std::string(MMAN_SOURCE_DIR) + "/tools/plot_run.py";
  if (fs::exists(built)) return built;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec)
    for (const fs::path& candidate : {exe.parent_path() / "tools/plot_run.py", exe.parent_path().parent_path() / "tools/plot_run.py"})
      if (fs::exists(candidate)) return candidate.string();
  return "";
}

void make_figures(const std::string& run_dir, RunLog& log) {
  const std::string script = find_plot_script();
  const std::string python = fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  if (script.empty()) {
    log.line("figures: tools/plot_run.py not found; skipped");
    return;
  }
  const std::string cmd = fmt::format("'{}' '{}' '{}' 2>&1", python, script, run_dir);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    log.line("figures: cannot start python3; skipped");
    return;
  }
  std::string output;
  char buf[1024];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) output.append(buf, n);
  const int status = pclose(pipe);
  log.file_only("plot_run.py: " + output);
  if (status == 0) {
    log.line(fmt::format("figures: {}/figures/", run_dir));
  } else {
    log.line(fmt::format("figures: not made (plot_run.py exited with status {}; see run.log)", WEXITSTATUS(status)));
  }
}

}  // namespace

std::string resolve_backend(const std::string& requested, std::string* note) {
  MMAN_CHECK(requested == "cpu" || requested == "cuda" || requested == "auto",
             "backend '{}': expected auto, cpu or cuda", requested);
  if (requested == "cpu") return "cpu";
  const CudaState cuda = query_cuda();
  if (requested == "cuda") {
    if (!cuda.compiled) fail("backend cuda: this build has no CUDA backend (configure with -DMMAN_CUDA=ON where nvcc is installed)");
    if (!cuda.usable()) fail("backend cuda: no usable CUDA device: {}", cuda.unusable_reason);
    return "cuda";
  }
  if (cuda.usable()) {
    if (note != nullptr) *note = fmt::format("backend auto: training on the GPU ({})", cuda.devices.front().name);
    return "cuda";
  }
  if (note != nullptr) {
    if (cuda.compiled)
      *note = fmt::format("backend auto: no usable CUDA device ({}); running on the CPU", cuda.unusable_reason);
    else
      *note = "backend auto: built without CUDA; running on the CPU";
  }
  return "cpu";
}

ExperimentData load_experiment_data(const DataSettings& data) {
  ExperimentData d;
  if (!data.file.empty()) {
    d.dataset = read_dataset(data.file);
    d.description = data.file;
    d.synthetic = !d.dataset.synthetic.empty();  // e.g. written by `mman_exp synth`
  } else {
    d.dataset = synth_dataset(data.synthetic, data.synthetic_seed);
    d.description = fmt::format("synthetic {} (seed {})", data.synthetic, data.synthetic_seed);
    d.synthetic = true;
  }
  try {
    d.protocol = make_protocol(data.protocol, d.dataset.label_names);
    d.splits = resolve_splits(d.dataset, data.valid_fraction, data.valid_seed);
  } catch (const Error& e) {
    fail("data: {}: {}", d.description, e.what());
  }
  if (data.normalize) {
    const Normalizer n = Normalizer::fit(d.dataset, d.splits.train);
    n.apply(d.dataset);
    d.normalization = InputNormalization{d.dataset.modalities, n.mean, n.stddev};
  }
  return d;
}

int run_experiment(const RunOptions& opt) {
  const auto wall_start = std::chrono::steady_clock::now();
  // ---- configuration ----
  std::string config_file = opt.config_file;
  std::vector<std::string> overrides = opt.overrides;
  std::string out_dir = opt.out_dir;
  if (opt.resume && !opt.resume_dir.empty()) {
    if (!out_dir.empty() && out_dir != opt.resume_dir) fail("--out {} and --resume {} name different run directories", out_dir, opt.resume_dir);
    out_dir = opt.resume_dir;
    if (config_file.empty()) {
      config_file = (fs::path(opt.resume_dir) / "config.yaml").string();
      if (!fs::exists(config_file)) fail("{}: not a run directory (no config.yaml)", opt.resume_dir);
    }
  }
  if (config_file.empty()) fail("run: a config file is required (mman_exp run CONFIG, or mman_exp run --resume DIR)");
  if (!out_dir.empty()) overrides.push_back("output.dir=" + yaml_quote(out_dir));
  if (!opt.backend.empty()) overrides.push_back("backend=" + yaml_quote(opt.backend));
  if (opt.threads >= 0) overrides.push_back("threads=" + std::to_string(opt.threads));
  const ExperimentConfig cfg = load_experiment(config_file, overrides);
  const std::string dir = cfg.output.dir;
  const std::string stored_config = (fs::path(dir) / "config.yaml").string();

  std::string backend_note;
  const std::string backend = resolve_backend(cfg.backend, &backend_note);

  // What may differ on a resume: where the run directory is (it was moved or copied), the
  // thread count (results do not depend on it: docs/reliability.md) and whether figures are
  // drawn (output.plots: nothing computed depends on it). config.yaml is then rewritten with
  // the current values and run.log says what changed.
  bool relocated = false;
  int threads_before = cfg.threads;
  bool plots_before = cfg.output.plots;
  if (opt.resume) {
    if (!fs::exists(stored_config)) fail("{}: nothing to resume (no config.yaml); run without --resume to start it", dir);
    std::string before = read_text(stored_config);
    if (before != cfg.resolved_yaml) {
      // The same run when its stored config, resolved for this directory, thread count and
      // plots setting, is this one.
      try {
        const ExperimentConfig here =
            parse_experiment(before, stored_config,
                             {"output.dir=" + yaml_quote(dir), "threads=" + std::to_string(cfg.threads),
                              std::string("output.plots=") + (cfg.output.plots ? "true" : "false")});
        if (here.resolved_yaml == cfg.resolved_yaml) {
          const ExperimentConfig stored = parse_experiment(before, stored_config);
          relocated = stored.output.dir != dir;
          threads_before = stored.threads;
          plots_before = stored.output.plots;
          before = here.resolved_yaml;
        }
      } catch (const Error&) {
        // not a config this version reads: reported as a difference below
      }
    }
    if (before != cfg.resolved_yaml)
      fail("{}: the configuration differs from the one this run started with ({}); resume with the same config and "
           "--set options, or start a new run with --out",
           stored_config, first_difference(before, cfg.resolved_yaml));
  } else if (fs::exists(stored_config)) {
    fail("{}: already holds a run; continue it with --resume or choose another directory with --out", dir);
  }

  // ---- data, and every model built once against it before anything is written ----
  ExperimentData data = load_experiment_data(cfg.data);
  const DataShape shape = data_shape_of(data.dataset, data.protocol);
  for (const ModelEntry& m : cfg.models) {
    try {
      make_model(m.model, shape);
    } catch (const Error& e) {
      fail("{}: models.{}: {}", cfg.file, m.name, e.what());
    }
  }

  ensure_writable_dir(dir);
  ensure_writable_dir((fs::path(dir) / "checkpoints").string());
  // One process per run directory (held until this function returns): a second one would
  // interleave its writes and, resuming, delete the first one's temporaries.
  const RunLock lock(dir);
  if (!opt.resume || relocated || threads_before != cfg.threads || plots_before != cfg.output.plots)
    write_file_atomic(stored_config, cfg.resolved_yaml);
  RunLog log((fs::path(dir) / "run.log").string());
  if (opt.resume)  // a run killed mid-write (SIGKILL, power loss) leaves its temporaries
    for (const std::string& stale : remove_stale_temporaries(dir))
      log.file_only(fmt::format("removed {}, a temporary file of the interrupted process", stale));
  set_num_threads(cfg.threads);
  install_interrupt_handlers();

  log.line(fmt::format("mman {} run '{}' -> {}{}", MMAN_VERSION, cfg.name, dir, opt.resume ? " (resumed)" : ""));
  if (relocated) log.line(fmt::format("the run directory was moved: {} now names it as output.dir", stored_config));
  if (threads_before != cfg.threads)
    log.line(fmt::format("resumed with threads: {} (started with {}); results do not depend on the thread count on "
                         "CPUs with AVX2 and FMA",
                         cfg.threads, threads_before));
  if (plots_before != cfg.output.plots)
    log.line(fmt::format("resumed with output.plots: {} (started with {})", cfg.output.plots, plots_before));
  if (!backend_note.empty()) log.line(backend_note);
  log.line(fmt::format("data: {}{}, protocol {}, train/valid/test {}/{}/{} conversations", data.description,
                       data.synthetic ? " [synthetic]" : "", data.protocol.name, data.splits.train.size(),
                       data.splits.valid.size(), data.splits.test.size()));

  RunResults results;
  results.experiment = cfg.name;
  results.config_file = config_file;
  results.run_dir = dir;
  results.data_source = data.description;
  results.synthetic = data.synthetic;
  results.protocol = data.protocol;
  results.train = summarize(data.dataset, data.protocol, data.splits.train);
  results.valid = summarize(data.dataset, data.protocol, data.splits.valid);
  results.test = summarize(data.dataset, data.protocol, data.splits.test);
  results.valid_from_file = data.splits.valid_from_file;
  results.backend = backend;
  results.threads = num_threads();
  results.seeds = cfg.seeds;
  results.report_models = cfg.report;
  results.versions_blas = blas_description();
  results.versions_cuda = describe_cuda(query_cuda());
  results.started_at = utc_now();

  auto write_outputs = [&] {
    results.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    write_file_atomic((fs::path(dir) / "metrics.csv").string(), metrics_csv(results));
    write_file_atomic((fs::path(dir) / "results.json").string(), results_json(results));
    write_file_atomic((fs::path(dir) / "report.md").string(), report_markdown(results));
  };

  std::unique_ptr<Progress> progress;
  std::string current_stage;
  int64_t current_seed = 0;
  TrainHooks hooks;
  hooks.resume = opt.resume;
  hooks.config_text = cfg.resolved_yaml;
  hooks.should_stop = [] { return interrupt_requested(); };
  hooks.state_path = [&](const std::string& model_name) {
    return (fs::path(dir) / "checkpoints" / fmt::format("seed{}", current_seed) / (model_name + ".state.h5")).string();
  };
  hooks.on_epoch = [&](const std::string& model_name, const EpochRecord& rec, int max_epochs) {
    results.epochs.push_back(EpochRow{current_seed, current_stage, model_name, rec});
    write_file_atomic((fs::path(dir) / "metrics.csv").string(), metrics_csv(results));
    const std::string status = fmt::format("loss {:.4f} train {:.1f}% valid {:.1f}% ({:.1f}s)", rec.train_loss,
                                           100 * rec.train_accuracy, 100 * rec.valid_accuracy, rec.seconds);
    if (progress && progress->is_terminal()) {
      progress->update(rec.epoch, status);
      log.file_only(fmt::format("seed {} {} {} epoch {}/{}: {}", current_seed, current_stage, model_name, rec.epoch,
                                max_epochs, status));
    } else {
      log.line(fmt::format("seed {} {} {} epoch {}/{}: {}", current_seed, current_stage, model_name, rec.epoch,
                           max_epochs, status));
    }
  };

  // A failure mid-run (a diverged loss, a full disk) is recorded in run.log too, so the
  // run directory says why it stopped; whatever was saved stays resumable.
  try {
  for (const int64_t seed : cfg.seeds) {
    current_seed = seed;
    ensure_writable_dir((fs::path(dir) / "checkpoints" / fmt::format("seed{}", seed)).string());
    SubnetCache cache;
    for (const StageSettings& stage : cfg.stages) {
      current_stage = stage.name;
      for (const std::string& name : stage.models) {
        const ModelEntry& entry = *cfg.find_model(name);
        const TrainConfig tc = train_config_of(entry.train, seed);
        std::shared_ptr<Model> model = make_model(entry.model, shape, backend);
        init_model(*model, static_cast<uint64_t>(seed));
        progress = std::make_unique<Progress>(fmt::format("seed {} {} {}", seed, stage.name, name), tc.max_epochs);

        TrainResult result;
        bool interrupted = false;
        if (entry.composite()) {
          const StagedResult staged = train_staged(*model, data.dataset, data.protocol, data.splits, tc, &cache, hooks);
          for (const auto& [sub_name, sub_result] : staged.subnets)
            if (cfg.find_model(sub_name) == nullptr || results.find(sub_name) == nullptr)
              results.set_history(seed, stage.name + " (sub-network of " + name + ")", sub_name, sub_result.history);
          result = staged.result;
          interrupted = staged.interrupted || result.interrupted;
        } else {
          result = train_model(*model, data.dataset, data.protocol, data.splits, tc, hooks);
          interrupted = result.interrupted;
          if (!interrupted) cache[name] = TrainedSubnet{model, result};
        }
        progress->finish();
        if (interrupted) {
          const int sig = interrupt_signal();
          write_outputs();
          log.line(fmt::format("interrupted by {} while training {} (seed {}); its state is saved in {}", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                               name, seed, hooks.state_path(name)));
          log.line(fmt::format("resume with: mman_exp run {} --resume {}", config_file, dir));
          return 128 + (sig != 0 ? sig : SIGINT);
        }
        results.set_history(seed, stage.name, name, result.history);

        ModelSeedResult msr;
        msr.seed = seed;
        msr.train = result;
        msr.test = evaluate(*model, data.dataset, data.protocol, data.splits.test, tc.batch_size).metrics;
        if (!data.splits.valid.empty())
          msr.valid = evaluate(*model, data.dataset, data.protocol, data.splits.valid, tc.batch_size).metrics;
        if (cfg.output.checkpoints) {
          msr.checkpoint = (fs::path("checkpoints") / fmt::format("seed{}", seed) / (name + ".h5")).string();
          CheckpointMeta meta;
          meta.model_type = entry.model.type;
          meta.model_name = name;
          meta.config = cfg.resolved_yaml;
          meta.protocol = data.protocol.name;
          meta.epoch = result.best_epoch;
          meta.seed = static_cast<uint64_t>(seed);
          meta.metrics = nlohmann::json{{"test", msr.test}, {"valid", msr.valid}}.dump();
          write_checkpoint((fs::path(dir) / msr.checkpoint).string(), model->params(), meta, nullptr,
                           &data.normalization);
        }
        ModelResults& mr = results.model(name, entry.model.type);
        mr.subnets = entry.subnet_names;
        mr.total_parameters = model->params().num_parameters(false);
        mr.trainable_parameters = result.trainable_parameters;
        mr.seeds.erase(std::remove_if(mr.seeds.begin(), mr.seeds.end(), [&](const ModelSeedResult& s) { return s.seed == seed; }),
                       mr.seeds.end());
        mr.seeds.push_back(msr);
        log.line(fmt::format("seed {} {} {}: best epoch {}/{}{}, valid {:.2f}%, test WA {:.2f}% UA {:.2f}% wF1 {:.2f}% "
                             "({:.1f}s)",
                             seed, stage.name, name, result.best_epoch, result.history.size(),
                             result.stopped_early ? " (early stop)" : "", 100 * result.best_valid_accuracy,
                             100 * msr.test.accuracy, 100 * msr.test.unweighted_accuracy, 100 * msr.test.weighted_f1,
                             result.seconds));
        write_outputs();
      }
    }
  }
  } catch (const Error& e) {
    if (progress) progress->finish();
    log.file_only(fmt::format("error: {}", e.what()));
    throw;
  }
  progress.reset();
  results.complete = true;
  write_outputs();
  if (cfg.output.plots) make_figures(dir, log);
  const std::string table = summary_table(results);
  fmt::print("\n{}{}\n{}", data.synthetic ? "Synthetic IEMOCAP-shaped data (not the real corpus). " : "",
             data.protocol.binary() ? "Table 3 layout (test):" : "Table 2 layout (test):", table);
  // Only what this run wrote: checkpoints and figures are optional (output.checkpoints, output.plots,
  // and figures need the plotting script to have succeeded).
  std::string listing = "report.md, results.json, metrics.csv, run.log";
  if (cfg.output.checkpoints) listing += ", checkpoints/";
  if (cfg.output.plots && fs::is_directory(fs::path(dir) / "figures")) listing += ", figures/";
  fmt::print("\nrun directory: {} ({})\n", dir, listing);
  std::fflush(stdout);
  log.file_only("summary:\n" + table);
  return 0;
}

}  // namespace mman
