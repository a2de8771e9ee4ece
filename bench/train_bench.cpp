// mman_bench: times one training epoch and evaluation of each model on the synthetic IEMOCAP, for bench/run_bench.py.
//
//   mman_bench --model clstm_speech [--threads N] [--epochs E] [--batch 10]
//   mman_bench --sgemm-peak [--threads N]
//
// Prints one JSON object per line. Uses the production trainer (train_model) and the
// production evaluate(), so it measures exactly what `mman_exp run` executes.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "mman/blas.h"
#include "mman/data/batch.h"
#include "mman/data/synth.h"
#include "mman/error.h"
#include "mman/models/model.h"
#include "mman/threads.h"
#include "mman/train/trainer.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

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
  return lstm_flops(in, c.hidden, layers, c.bidirectional) + 2.0 * c.hidden * dirs * c.fc + 2.0 * c.fc * outputs;
}

double model_flops(const mman::ModelConfig& c, const mman::DataShape& s) {
  auto dim = [&](const std::string& m) {
    for (size_t i = 0; i < s.modalities.size(); ++i)
      if (s.modalities[i] == m) return static_cast<int>(s.dims[i]);
    return 0;
  };
  const int layers = c.lstm_layers > 0 ? c.lstm_layers : ((c.type == "clstm_lf" || c.type == "clstm_mma") ? 1 : 2);
  if (c.type == "clstm_speech") return block_flops(c, dim("audio"), s.num_outputs, layers);
  if (c.type == "clstm_visual") return block_flops(c, dim("visual"), s.num_outputs, layers);
  if (c.type == "clstm_text") return block_flops(c, dim("text"), s.num_outputs, layers);
  if (c.type == "clstm_ef") return block_flops(c, dim("audio") + dim("visual") + dim("text"), s.num_outputs, layers);
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mman_bench: one training epoch and evaluation per model on the synthetic IEMOCAP"};
  std::string model_type = "clstm_speech";
  int threads = 2, epochs = 1, batch = 10, warmup = 0;
  bool sgemm = false;
  app.add_option("--model", model_type, "model type");
  app.add_option("--threads", threads, "threads");
  app.add_option("--epochs", epochs, "timed epochs (the mean is reported)");
  app.add_option("--warmup", warmup, "untimed epochs first");
  app.add_option("--batch", batch, "conversations per batch");
  app.add_flag("--sgemm-peak", sgemm, "measure this machine's sgemm GFLOP/s instead");
  CLI11_PARSE(app, argc, argv);
  try {
    mman::set_num_threads(threads);
    if (sgemm) {
      // Large square GEMMs: the attainable peak of this BLAS at this thread count.
      const int n = 1536;
      std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a), c(a);
      mman::gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);  // warm up
      double best = 0;
      for (int rep = 0; rep < 5; ++rep) {
        const auto t = Clock::now();
        mman::gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
        best = std::max(best, 2.0 * n * n * static_cast<double>(n) / seconds_since(t) / 1e9);
      }
      std::printf("%s\n", nlohmann::json{{"sgemm_gflops", best}, {"threads", threads}, {"n", n}}.dump().c_str());
      return 0;
    }
    mman::Dataset ds = mman::synth_dataset("iemocap", 0);
    const mman::LabelProtocol protocol = mman::make_protocol("iemocap4", ds.label_names);
    mman::SplitIndices splits = mman::resolve_splits(ds, 0.0, 0);  // every train conversation trains
    mman::Normalizer::fit(ds, splits.train).apply(ds);
    const mman::DataShape shape = mman::data_shape_of(ds, protocol);

    mman::ModelConfig mc;
    mc.type = model_type;
    auto model = mman::make_model(mc, shape);
    mman::init_model(*model, 0);
    mman::TrainConfig tc;
    tc.batch_size = batch;
    tc.max_epochs = warmup + epochs;
    tc.patience = 0;
    int64_t train_utts = 0;
    for (int c : splits.train) train_utts += ds.conv_length(c);

    double flops_per_utt = model_flops(model->config(), shape);
    double epoch_seconds = 0;
    if (model->subnet_configs().empty()) {
      const auto t = Clock::now();
      const mman::TrainResult r = mman::train_model(*model, ds, protocol, splits, tc);
      double total = seconds_since(t);
      double timed = 0;
      for (size_t e = static_cast<size_t>(warmup); e < r.history.size(); ++e) timed += r.history[e].seconds;
      epoch_seconds = r.history.size() > static_cast<size_t>(warmup) ? timed / static_cast<double>(epochs) : total;
    } else {
      // Stage 2 of a composite: sub-networks copied in and frozen (their training is
      // timed by their own runs), only the fusion part trains.
      for (const mman::ModelConfig& sub : model->subnet_configs()) {
        auto s = mman::make_model(sub, shape);
        mman::init_model(*s, 0);
        model->params().copy_from(s->params(), "", "subnets." + sub.name + ".");
        model->params().set_trainable("subnets." + sub.name + ".", false);
        flops_per_utt += model_flops(s->config(), shape) / 3.0;  // forward only, frozen
      }
      const mman::TrainResult r = mman::train_model(*model, ds, protocol, splits, tc);
      double timed = 0;
      for (size_t e = static_cast<size_t>(warmup); e < r.history.size(); ++e) timed += r.history[e].seconds;
      epoch_seconds = timed / static_cast<double>(epochs);
    }
    // Evaluation throughput on the test split.
    const auto te = Clock::now();
    const mman::Evaluation ev = mman::evaluate(*model, ds, protocol, splits.test, batch);
    const double eval_seconds = seconds_since(te);
    const double train_flops = 3.0 * flops_per_utt * static_cast<double>(train_utts);
    nlohmann::json j{{"impl", "mman"},
                     {"model", model_type},
                     {"threads", threads},
                     {"parameters", model->params().num_parameters()},
                     {"train_utterances", train_utts},
                     {"epoch_seconds", epoch_seconds},
                     {"train_gflops", train_flops / epoch_seconds / 1e9},
                     {"eval_utterances_per_second", static_cast<double>(ev.utterances.size()) / eval_seconds},
                     {"peak_rss_mib", peak_rss_mib()}};
    std::printf("%s\n", j.dump().c_str());
  } catch (const mman::Error& e) {
    std::fprintf(stderr, "mman_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
