// ParamStore: registration, lookup, freezing and copying of named parameter tensors.
#include "mman/params.h"

#include <algorithm>

#include "mman/error.h"

namespace mman {

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

}  // namespace mman
