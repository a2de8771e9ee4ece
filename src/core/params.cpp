// ParamStore: registration, lookup, freezing and copying of named parameter tensors.
#include "mman/params.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "mman/error.h"

namespace mman {
namespace {

// Bytes this process may use: physical memory, or a lower cgroup (container) limit, or
// MMAN_MEMORY_LIMIT_MB from the environment (to share a machine, and for tests).
double memory_limit_bytes() {
  static const double limit = [] {
    if (const char* env = std::getenv("MMAN_MEMORY_LIMIT_MB"))
      if (std::atof(env) > 0) return std::atof(env) * 1024.0 * 1024.0;
    double bytes = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
    for (const char* file : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
      std::ifstream in(file);
      double cgroup = 0;
      if (in >> cgroup && cgroup > 0 && (bytes <= 0 || cgroup < bytes)) bytes = cgroup;
    }
    return bytes;
  }();
  return limit;
}

// Training keeps about six floats per parameter: the value, its gradient, Adam's two
// moments, the best epoch's copy and the copy a saved state is written from.
constexpr double kTrainingBytesPerParameter = 24;

}  // namespace

int ParamStore::add(const std::string& name, std::vector<int64_t> shape) {
  MMAN_CHECK(find(name) < 0, "parameter '{}' registered twice", name);
  int64_t n = 1;
  for (int64_t s : shape) {
    MMAN_CHECK(s > 0, "parameter '{}' has a non-positive dimension", name);
    n *= s;
  }
  ParamInfo info;
  info.name = name;
  info.shape = std::move(shape);
  info.offset = (values_.size() + kParamAlign - 1) / kParamAlign * kParamAlign;
  info.size = static_cast<size_t>(n);
  // A config can ask for a model far beyond memory (hidden: 8192, lstm_layers: 14):
  // refuse it before allocating, instead of dying in bad_alloc or by the OOM killer.
  const double total = static_cast<double>(info.offset + info.size);
  const double limit = memory_limit_bytes();
  if (limit > 0 && total * kTrainingBytesPerParameter > limit)
    fail("parameter '{}' {} brings the model to {:.0f} million parameters, which need about {:.1f} GB to train, "
         "more than the {:.1f} GB of memory here",
         name, fmt::format("[{}]", fmt::join(info.shape, " x ")), total / 1e6, total * kTrainingBytesPerParameter / 1e9,
         limit / 1e9);
  values_.resize(info.offset + info.size, 0.0f);
  grads_.resize(values_.size(), 0.0f);
  infos_.push_back(std::move(info));
  return count() - 1;
}

int ParamStore::find(const std::string& name) const {
  for (size_t i = 0; i < infos_.size(); ++i)
    if (infos_[i].name == name) return static_cast<int>(i);
  return -1;
}

void ParamStore::zero_grads() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

void ParamStore::zero_trainable_grads() {
  for (const ParamInfo& p : infos_)
    if (p.trainable) std::fill_n(grads_.data() + p.offset, p.size, 0.0f);
}

void ParamStore::set_trainable(const std::string& prefix, bool trainable) {
  for (ParamInfo& p : infos_)
    if (p.name.compare(0, prefix.size(), prefix) == 0) p.trainable = trainable;
}

int64_t ParamStore::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (const ParamInfo& p : infos_)
    if (!trainable_only || p.trainable) n += static_cast<int64_t>(p.size);
  return n;
}

int ParamStore::copy_from(const ParamStore& from, const std::string& src_prefix,
                          const std::string& dst_prefix) {
  int copied = 0;
  for (const ParamInfo& src : from.infos()) {
    if (src.name.compare(0, src_prefix.size(), src_prefix) != 0) continue;
    const std::string dst_name = dst_prefix + src.name.substr(src_prefix.size());
    const int dst = find(dst_name);
    MMAN_CHECK(dst >= 0, "cannot copy parameter '{}': no '{}' here", src.name, dst_name);
    MMAN_CHECK(info(dst).shape == src.shape, "cannot copy parameter '{}' into '{}': shapes differ",
               src.name, dst_name);
    std::copy_n(from.values().data() + src.offset, src.size, value(dst));
    ++copied;
  }
  return copied;
}

bool prefix_frozen(const std::vector<ParamInfo>& infos, const std::string& prefix) {
  bool any = false;
  for (const ParamInfo& p : infos)
    if (p.name.compare(0, prefix.size(), prefix) == 0) {
      any = true;
      if (p.trainable) return false;
    }
  return any;
}

}  // namespace mman
