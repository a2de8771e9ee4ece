// Split resolution, train-only normalisation, packed mini-batches and epoch plans.
#include "mman/data/batch.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <unordered_map>

#include "mman/error.h"

namespace mman {

namespace {

std::string source_of(const Dataset& ds) { return ds.source.empty() ? std::string("in-memory dataset") : ds.source; }

// Conversation indices of a split, in file order.
std::vector<int> split_indices(const Dataset& ds, const std::string& name,
                               const std::unordered_map<std::string, int>& index) {
  const auto it = ds.splits.find(name);
  if (it == ds.splits.end())
    fail("{}: /splits/{}: missing split (train and test are required; valid is optional)", source_of(ds), name);
  std::vector<int> out;
  out.reserve(it->second.size());
  for (const std::string& id : it->second) {
    const auto found = index.find(id);
    if (found == index.end()) fail("{}: /splits/{}: unknown conversation '{}'", source_of(ds), name, id);
    out.push_back(found->second);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

SplitIndices resolve_splits(const Dataset& ds, double valid_fraction, uint64_t seed) {
  if (!(valid_fraction >= 0.0 && valid_fraction < 1.0))
    fail("valid_fraction must be in [0, 1), got {}", valid_fraction);
  std::unordered_map<std::string, int> index;
  for (int c = 0; c < ds.num_conversations(); ++c) index.emplace(ds.conv_ids[static_cast<size_t>(c)], c);

  SplitIndices s;
  s.train = split_indices(ds, "train", index);
  s.test = split_indices(ds, "test", index);
  if (ds.splits.count("valid") != 0) {
    s.valid = split_indices(ds, "valid", index);
    s.valid_from_file = true;
    return s;
  }
  // Carve valid from train by conversation (utterances of one conversation never straddle
  // splits). A generator of its own, so the draw depends on the seed alone.
  size_t k = static_cast<size_t>(std::llround(valid_fraction * static_cast<double>(s.train.size())));
  if (k >= s.train.size()) k = s.train.size() > 0 ? s.train.size() - 1 : 0;  // keep one to train on
  if (k == 0) return s;
  std::vector<int> order = s.train;
  Rng rng(rng_key(seed, 0x76616C6964ull));  // "valid"
  rng.shuffle(order);
  s.valid.assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k));
  s.train.assign(order.begin() + static_cast<std::ptrdiff_t>(k), order.end());
  std::sort(s.valid.begin(), s.valid.end());
  std::sort(s.train.begin(), s.train.end());
  return s;
}

Normalizer Normalizer::fit(const Dataset& ds, const std::vector<int>& convs) {
  int64_t count = 0;
  for (int c : convs) {
    MMAN_CHECK(c >= 0 && c < ds.num_conversations(), "normaliser: conversation index {} out of range", c);
    count += ds.conv_length(c);
  }
  if (count == 0) fail("{}: cannot fit the normaliser: no utterances in the given conversations", source_of(ds));

  Normalizer n;
  const size_t mods = ds.features.size();
  n.mean.resize(mods);
  n.stddev.resize(mods);
  for (size_t m = 0; m < mods; ++m) {
    const Tensor& x = ds.features[m];
    const size_t d = static_cast<size_t>(x.cols());
    // Two passes in double: openSMILE values are in the hundreds, so a one-pass
    // E[x^2] - E[x]^2 would lose digits.
    std::vector<double> mu(d, 0.0), sq(d, 0.0);  // mu: sums, then means
    for (int c : convs)
      for (int64_t r = ds.conv_offsets[static_cast<size_t>(c)]; r < ds.conv_offsets[static_cast<size_t>(c) + 1]; ++r) {
        const float* row = x.row(r);
        for (size_t j = 0; j < d; ++j) mu[j] += row[j];
      }
    for (size_t j = 0; j < d; ++j) mu[j] /= static_cast<double>(count);
    for (int c : convs)
      for (int64_t r = ds.conv_offsets[static_cast<size_t>(c)]; r < ds.conv_offsets[static_cast<size_t>(c) + 1]; ++r) {
        const float* row = x.row(r);
        for (size_t j = 0; j < d; ++j) {
          const double dev = row[j] - mu[j];
          sq[j] += dev * dev;
        }
      }
    n.mean[m].resize(d);
    n.stddev[m].resize(d);
    for (size_t j = 0; j < d; ++j) {
      double sd = std::sqrt(sq[j] / static_cast<double>(count));  // population deviation
      // A (nearly) constant feature carries no information; dividing by ~0 would only
      // blow up rounding noise, so it is centred and left unscaled.
      if (!(sd > 1e-6 * std::max(1.0, std::abs(mu[j])))) sd = 1.0;
      n.mean[m][j] = static_cast<float>(mu[j]);
      n.stddev[m][j] = static_cast<float>(sd);
    }
  }
  return n;
}

void Normalizer::apply(Dataset& ds) const {
  MMAN_CHECK(mean.size() == ds.features.size() && stddev.size() == ds.features.size(),
             "normaliser fitted on {} modalities applied to a dataset with {}", mean.size(), ds.features.size());
  for (size_t m = 0; m < ds.features.size(); ++m) {
    Tensor& x = ds.features[m];
    const size_t d = static_cast<size_t>(x.cols());
    MMAN_CHECK(mean[m].size() == d && stddev[m].size() == d,
               "normaliser: modality {} fitted with {} dimensions, the dataset has {}", m, mean[m].size(), d);
    const float* mu = mean[m].data();
    const float* sd = stddev[m].data();
    const int64_t rows = x.rows();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* row = x.row(r);
      for (size_t j = 0; j < d; ++j) row[j] = (row[j] - mu[j]) / sd[j];
    }
  }
}

void make_batch(const Dataset& ds, const LabelProtocol& protocol, const std::vector<int>& convs, Batch& out) {
  MMAN_CHECK(protocol.raw_to_class.size() == ds.label_names.size(),
             "label protocol '{}' was built for {} label names, the dataset has {}", protocol.name,
             protocol.raw_to_class.size(), ds.label_names.size());
  for (int c : convs)
    MMAN_CHECK(c >= 0 && c < ds.num_conversations(), "batch: conversation index {} out of range (0..{})", c,
               ds.num_conversations() - 1);

  // Longest first, ties in the given order, as packed sequences require.
  std::vector<size_t> order(convs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return ds.conv_length(convs[a]) > ds.conv_length(convs[b]); });
  out.conv_index.resize(convs.size());
  std::vector<int> lengths(convs.size());
  for (size_t b = 0; b < order.size(); ++b) {
    out.conv_index[b] = convs[order[b]];
    lengths[b] = ds.conv_length(out.conv_index[b]);
  }
  out.layout = PackedLayout::from_lengths(std::move(lengths));

  // Where each packed row comes from; then every buffer is filled by one gather.
  const int64_t rows = out.layout.rows();
  out.utterance.resize(static_cast<size_t>(rows));
  for (int b = 0; b < out.layout.convs(); ++b) {
    const int64_t first = ds.conv_offsets[static_cast<size_t>(out.conv_index[static_cast<size_t>(b)])];
    for (int t = 0; t < out.layout.lengths[static_cast<size_t>(b)]; ++t)
      out.utterance[static_cast<size_t>(out.layout.row(b, t))] = first + t;
  }

  out.targets.resize(static_cast<size_t>(rows));
  out.num_labelled = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t y = protocol.map(ds.labels[static_cast<size_t>(out.utterance[static_cast<size_t>(r)])]);
    out.targets[static_cast<size_t>(r)] = y;
    out.num_labelled += y >= 0;
  }

  out.features.resize(ds.features.size());
  for (size_t m = 0; m < ds.features.size(); ++m) {
    const Tensor& src = ds.features[m];
    Tensor& dst = out.features[m];
    dst.resize(rows, src.cols());
    const size_t bytes = static_cast<size_t>(src.cols()) * sizeof(float);
    for (int64_t r = 0; r < rows; ++r) std::memcpy(dst.row(r), src.row(out.utterance[static_cast<size_t>(r)]), bytes);
  }
}

std::vector<std::vector<int>> plan_batches(const std::vector<int>& convs, int batch_size, Rng* shuffle_rng) {
  MMAN_CHECK(batch_size > 0, "batch size must be positive, got {}", batch_size);
  std::vector<int> order = convs;
  if (shuffle_rng != nullptr) shuffle_rng->shuffle(order);
  std::vector<std::vector<int>> batches;
  for (size_t i = 0; i < order.size(); i += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(order.size(), i + static_cast<size_t>(batch_size));
    batches.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(i), order.begin() + static_cast<std::ptrdiff_t>(end));
  }
  return batches;
}

}  // namespace mman
