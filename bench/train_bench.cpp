// mman_bench: times one training epoch and evaluation of each model on the synthetic IEMOCAP, for
// bench/run_bench.py.
//
//   mman_bench --model clstm_speech [--data FILE] [--threads N] [--epochs E] [--batch 10]
//   mman_bench --sgemm-peak [--threads N]
//
// Prints one JSON object per line. Uses the production trainer (train_model) and the
// production evaluate(), so it measures exactly what `mman_exp run` executes. Composite
// models (clstm_lf, mman) time their stage-2 epoch with frozen sub-networks: the first
// epoch (epoch_seconds; it also fills the frozen sub-networks' output cache) and the
// later ones (epoch_seconds_warm).
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include <cblas.h>

#include "mman/blas.h"
#include "mman/data/batch.h"
#include "mman/data/dataset.h"
#include "mman/data/synth.h"
#include "mman/error.h"
#include "mman/models/model.h"
#include "mman/threads.h"
#include "mman/train/trainer.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// CPU time of the whole process (every thread), seconds: unlike wall time it barely
// changes when other programs compete for the cores, so it compares code versions on a
// loaded machine.
double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

// Forward FLOPs per utterance of one model (multiply-adds counted as 2), from its
// configuration; training costs about 3x this (forward + two backward GEMMs).
double lstm_flops(int in, int hidden, int layers, bool bidirectional) {
  const int dirs = bidirectional ? 2 : 1;
  double f = 0;
  for (int l = 0; l < layers; ++l) {
    const int layer_in = l == 0 ? in : hidden * dirs;
    f += dirs * 2.0 * 4 * hidden * (layer_in + hidden);
  }
  return f;
}

double block_flops(const mman::ModelConfig& c, int in, int outputs, int layers) {
  const int dirs = c.bidirectional ? 2 : 1;
  return lstm_flops(in, c.hidden, layers, c.bidirectional) + 2.0 * c.hidden * dirs * c.fc +
         2.0 * c.fc * outputs;
}

double model_flops(const mman::ModelConfig& c, const mman::DataShape& s) {
  auto dim = [&](const std::string& m) {
    for (size_t i = 0; i < s.modalities.size(); ++i)
      if (s.modalities[i] == m) return static_cast<int>(s.dims[i]);
    return 0;
  };
  const int layers =
      c.lstm_layers > 0 ? c.lstm_layers : ((c.type == "clstm_lf" || c.type == "clstm_mma") ? 1 : 2);
  if (c.type == "clstm_speech") return block_flops(c, dim("audio"), s.num_outputs, layers);
  if (c.type == "clstm_visual") return block_flops(c, dim("visual"), s.num_outputs, layers);
  if (c.type == "clstm_text") return block_flops(c, dim("text"), s.num_outputs, layers);
  if (c.type == "clstm_ef")
    return block_flops(c, dim("audio") + dim("visual") + dim("text"), s.num_outputs, layers);
  if (c.type == "clstm_mma") {
    const double d = c.d_model;
    const double std_proj = 2.0 * d * (dim("audio") + dim("visual") + dim("text"));
    const double qkv = 9 * 2.0 * d * d;
    const double attn = 2 * 9 * 2.0 * d;
    const int width = c.skip == mman::MmaSkip::Concat ? 6 * c.d_model : 3 * c.d_model;
    return std_proj + qkv + attn + block_flops(c, width, s.num_outputs, layers);
  }
  return 0;  // composites: the caller adds the sub-networks (stage 2 trains only the top)
}

// GFLOP/s of the best of `reps` n x n x n products run by `f`.
template <typename F>
double best_gflops(int n, int reps, F&& f) {
  f();  // warm up (first-touch, packing buffers, thread start)
  double best = 0;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t = Clock::now();
    f();
    best = std::max(best, 2.0 * n * n * static_cast<double>(n) / seconds_since(t) / 1e9);
  }
  return best;
}

}  // namespace

extern "C" void openblas_set_num_threads(int);

int main(int argc, char** argv) {
  mman::prefer_passive_openmp_waits(argv);  // as mman_exp does (include/mman/threads.h)
  CLI::App app{"mman_bench: one training epoch and evaluation per model on the synthetic IEMOCAP"};
  std::string model_type = "clstm_speech", data_file;
  int threads = 2, epochs = 1, batch = 10, warmup = 0;
  bool sgemm = false;
  app.add_option("--model", model_type, "model type");
  app.add_option("--data", data_file,
                 "mman-dataset/1 file (default: the synthetic IEMOCAP of seed 0, generated in memory)");
  app.add_option("--threads", threads, "threads");
  app.add_option("--epochs", epochs, "timed epochs (the mean is reported)")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed epochs first")->check(CLI::NonNegativeNumber);
  app.add_option("--batch", batch, "conversations per batch")->check(CLI::PositiveNumber);
  app.add_flag("--sgemm-peak", sgemm, "measure this machine's sgemm GFLOP/s instead");
  CLI11_PARSE(app, argc, argv);
  try {
    mman::set_num_threads(threads);
    if (sgemm) {
      // Large square products: the attainable peak at this thread count, of mman's gemm()
      // (packed kernels split over the OpenMP team) and of OpenBLAS with its own pool of
      // `threads` threads; the larger is the machine's sgemm peak.
      const int n = 1536;
      std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a), c(a);
      const double ours = best_gflops(n, 5, [&] {
        mman::gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
      });
      openblas_set_num_threads(threads);
      const double openblas = best_gflops(n, 5, [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(),
                    n);
      });
      openblas_set_num_threads(1);
      std::printf("%s\n", nlohmann::json{{"sgemm_gflops", std::max(ours, openblas)},
                                         {"mman_gemm_gflops", ours},
                                         {"openblas_gflops", openblas},
                                         {"threads", threads},
                                         {"n", n}}
                              .dump()
                              .c_str());
      return 0;
    }
    mman::Dataset ds = data_file.empty() ? mman::synth_dataset("iemocap", 0) : mman::read_dataset(data_file);
    const mman::LabelProtocol protocol = mman::make_protocol("iemocap4", ds.label_names);
    mman::SplitIndices splits = mman::resolve_splits(ds, 0.0, 0);  // every train conversation trains
    mman::Normalizer::fit(ds, splits.train).apply(ds);
    const mman::DataShape shape = mman::data_shape_of(ds, protocol);

    mman::ModelConfig mc;
    mc.type = model_type;
    auto model = mman::make_model(mc, shape);
    mman::init_model(*model, 0);
    int64_t train_utts = 0;
    for (int c : splits.train) train_utts += ds.conv_length(c);
    const bool composite = !model->subnet_configs().empty();

    // Forward FLOPs per utterance of the trained part, and of the frozen sub-networks.
    double top_flops = model_flops(model->config(), shape), frozen_flops = 0;
    if (composite) {
      // Stage 2: sub-networks copied in and frozen (their training is timed by their own
      // runs), only the fusion part trains: clstm_lf's cLSTM block on the 3C
      // probabilities, mman's Linear(4C -> C).
      const mman::ModelConfig& top = model->config();
      const int width = static_cast<int>(model->subnet_configs().size()) * shape.num_outputs;
      top_flops = top.type == "clstm_lf"
                      ? block_flops(top, width, shape.num_outputs, top.lstm_layers > 0 ? top.lstm_layers : 1)
                      : 2.0 * width * shape.num_outputs;
      for (const mman::ModelConfig& sub : model->subnet_configs()) {
        auto s = mman::make_model(sub, shape);
        mman::init_model(*s, 0);
        model->params().copy_from(s->params(), "", "subnets." + sub.name + ".");
        model->params().set_trainable("subnets." + sub.name + ".", false);
        frozen_flops += model_flops(s->config(), shape);
      }
    }
    mman::TrainConfig tc;
    tc.batch_size = batch;
    // Composites run one more epoch: the first fills the frozen sub-networks' output
    // cache (src/models/frozen_cache.h) and is reported as the epoch time; the later ones
    // reuse it and are reported as the warm epoch time.
    const int cold = composite ? 1 : 0;
    tc.max_epochs = warmup + cold + epochs;
    tc.patience = 0;
    // CPU time per epoch: from the first batch (the stop hook is polled before every
    // batch, so the trainer's setup is not counted) to the epoch hook (so the trainer's
    // end-of-epoch model selection, a copy of the parameters, is).
    std::vector<double> epoch_cpu;
    double cpu_mark = 0;
    bool in_epoch = false;
    mman::TrainHooks hooks;
    hooks.should_stop = [&] {
      if (!in_epoch) cpu_mark = process_cpu_seconds();
      in_epoch = true;
      return false;
    };
    hooks.on_epoch = [&](const std::string&, const mman::EpochRecord&, int) {
      epoch_cpu.push_back(process_cpu_seconds() - cpu_mark);
      in_epoch = false;
    };
    const mman::TrainResult r = mman::train_model(*model, ds, protocol, splits, tc, hooks);
    auto mean_seconds = [&](int from, int to) {
      double sum = 0;
      for (int e = from; e < to; ++e) sum += r.history[static_cast<size_t>(e)].seconds;
      return sum / std::max(1, to - from);
    };
    const int total = static_cast<int>(r.history.size());
    const double epoch_seconds = mean_seconds(warmup, warmup + (composite ? 1 : epochs));
    // Work done in the reported epoch: training is ~3x the forward FLOPs (forward and two
    // backward products), frozen sub-networks run forward only, and only while the
    // cache fills (the first epoch).
    const double work = static_cast<double>(train_utts) * (3.0 * top_flops + (warmup == 0 ? frozen_flops : 0.0));

    // Evaluation throughput on the test split (for composites this also fills the cache
    // with the test conversations, as the first evaluation of a run does).
    const auto te = Clock::now();
    const mman::Evaluation ev = mman::evaluate(*model, ds, protocol, splits.test, batch);
    const double eval_seconds = seconds_since(te);
    nlohmann::json j{{"impl", "mman"},
                     {"model", model_type},
                     {"threads", threads},
                     {"parameters", model->params().num_parameters()},
                     {"train_utterances", train_utts},
                     {"epoch_seconds", epoch_seconds},
                     {"train_gflops", work / epoch_seconds / 1e9},
                     {"eval_utterances_per_second", static_cast<double>(ev.utterances.size()) / eval_seconds},
                     {"peak_rss_mib", peak_rss_mib()}};
    auto mean_cpu = [&](int from, int to) {
      double sum = 0;
      for (int e = from; e < to; ++e) sum += epoch_cpu[static_cast<size_t>(e)];
      return sum / std::max(1, to - from);
    };
    j["epoch_cpu_seconds"] = mean_cpu(warmup, warmup + (composite ? 1 : epochs));
    if (composite) {
      j["epoch_seconds_warm"] = mean_seconds(warmup + 1, total);
      j["epoch_cpu_seconds_warm"] = mean_cpu(warmup + 1, total);
    }
    std::printf("%s\n", j.dump().c_str());
  } catch (const mman::Error& e) {
    std::fprintf(stderr, "mman_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
