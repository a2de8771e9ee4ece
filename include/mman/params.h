// ParamStore: one arena of parameter values and one of gradients with the same layout.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mman {

// A named parameter tensor inside the arenas. Names and shapes are those of the
// equivalent PyTorch module's state_dict ("lstm.weight_ih_l0" [4h x d_in]), so a
// checkpoint is the store written out name by name.
struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset = 0;  // into values() and grads(); a multiple of kParamAlign
  size_t size = 0;
  bool trainable = true;
};

// Parameters live in one contiguous float arena and their gradients in a second one of
// identical layout (llm.c's malloc_and_point_parameters), so the optimiser runs as one
// loop over the arena and a checkpoint or a device copy is one memcpy. Layers keep the
// integer id returned by add(); pointers are looked up per call because the arenas may
// grow while a model is being built.
class ParamStore {
 public:
  static constexpr size_t kParamAlign = 16;  // floats: every tensor starts on a 64-byte line

  // Registers a zero-initialised tensor; the name must be new.
  int add(const std::string& name, std::vector<int64_t> shape);
  int find(const std::string& name) const;  // -1 when absent
  int count() const { return static_cast<int>(infos_.size()); }
  const ParamInfo& info(int id) const { return infos_[static_cast<size_t>(id)]; }
  const std::vector<ParamInfo>& infos() const { return infos_; }

  float* value(int id) { return values_.data() + infos_[static_cast<size_t>(id)].offset; }
  const float* value(int id) const { return values_.data() + infos_[static_cast<size_t>(id)].offset; }
  float* grad(int id) { return grads_.data() + infos_[static_cast<size_t>(id)].offset; }
  const float* grad(int id) const { return grads_.data() + infos_[static_cast<size_t>(id)].offset; }

  // The whole arenas (padding between tensors included; padding stays zero).
  std::vector<float>& values() { return values_; }
  const std::vector<float>& values() const { return values_; }
  std::vector<float>& grads() { return grads_; }
  const std::vector<float>& grads() const { return grads_; }

  void zero_grads();
  // Zeroes the gradients of trainable tensors only: what a training step needs (frozen
  // tensors get no gradient and nothing reads theirs), without clearing the frozen
  // sub-networks of a composite, most of its arena, at every step.
  void zero_trainable_grads();
  // Marks every parameter whose name starts with prefix as (not) trainable.
  void set_trainable(const std::string& prefix, bool trainable);
  // Number of scalar parameters (padding excluded), optionally only the trainable ones.
  int64_t num_parameters(bool trainable_only = false) const;
  // Copies every tensor named src_prefix + X in `from` into dst_prefix + X here; shapes
  // must match. Returns how many tensors were copied.
  int copy_from(const ParamStore& from, const std::string& src_prefix, const std::string& dst_prefix);

 private:
  std::vector<ParamInfo> infos_;
  std::vector<float> values_;
  std::vector<float> grads_;
};

// True when some tensor's name starts with `prefix` and none of those is trainable: a frozen
// sub-network (its parameters live under its prefix). Takes ParamStore::infos() or a device
// mirror's.
bool prefix_frozen(const std::vector<ParamInfo>& infos, const std::string& prefix);

}  // namespace mman
