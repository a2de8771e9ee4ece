// h5::File: a small RAII wrapper over the HDF5 C API for datasets and checkpoints.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace mman::h5 {

// Dataset shapes; kAny in an expected shape matches any extent of that dimension.
using Shape = std::vector<int64_t>;
inline constexpr int64_t kAny = -1;

// What a stored dataset or attribute holds, for checks and messages.
enum class TypeClass { Integer, Float, String, Other };
struct TypeInfo {
  TypeClass cls = TypeClass::Other;
  size_t size = 0;           // bytes per element (fixed-length strings: their width)
  bool is_signed = false;    // integers
  bool variable = false;     // strings: variable length
  std::string other;         // Other: the HDF5 class ("compound", "enum", ...)
  std::string name() const;  // "float32", "int64", "uint8", "string", "string(12)", "compound"
};
struct ArrayInfo {
  TypeInfo type;
  Shape shape;                 // empty for a scalar
  bool scalar = false;
  int64_t elements() const;    // product of shape (1 for a scalar)
  std::string describe() const;  // "float64 [3 x 4]", "int32 [7]", "string scalar"
};
std::string describe_shape(const Shape& shape);  // "[3 x 4]", kAny shown as "?"

// HDF5 1.10 can crash or hang on some damaged files (a corrupt variable-length string
// heap, for one), and no API call can check for that beforehand. probe() runs `read`
// (which should do the reads the caller is about to do) in a forked child process: an
// mman::Error thrown there is rethrown here; a crash or a run past timeout_s (0: 30 s
// plus 1 s per 10 MB of file, or the environment's MMAN_HDF5_PROBE_TIMEOUT seconds)
// becomes an mman::Error naming the file, the
// last HDF5 path the child opened and what happened. The caller then repeats the reads
// in its own process, knowing they are safe. `read` must not use OpenMP or CUDA (a
// forked child cannot). Where fork() fails, probe() returns without checking.
void probe(const std::string& file, const std::function<void()>& read, double timeout_s = 0);

// One open HDF5 file. Every failure throws mman::Error "<file>: <hdf5 path>: <problem>"
// (attributes are named "<object> (attribute <name>)"), never prints HDF5's own error
// stack. Most damage to a file gives such an error; a few kinds make HDF5 itself crash
// or hang (see probe()). Paths are absolute ("/train_state/adam/m").
//
// open() reads an existing file. create() writes to a temporary file in the same folder;
// commit() renames it into place atomically, and destroying an uncommitted File removes
// the temporary, so a failed or interrupted write never leaves a partial file at `path`.
// edit() changes an existing file in place (not atomic; for tests and tools).
//
// Serial HDF5 is not thread-safe: use HDF5 from one thread at a time.
class File {
 public:
  static File open(const std::string& path);
  static File create(const std::string& path);
  static File edit(const std::string& path);

  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  // create(): flush, close and rename the temporary file onto path(). The File is
  // closed afterwards. edit(): flush and close.
  void commit();

  const std::string& path() const { return path_; }  // the name users know (never the temporary)
  [[noreturn]] void fail(const std::string& object_path, const std::string& problem) const;

  // ---- structure ----
  bool exists(const std::string& path) const;  // a link at path (every parent a group)
  bool is_group(const std::string& path) const;
  bool is_dataset(const std::string& path) const;
  std::vector<std::string> children(const std::string& group) const;  // names, sorted
  void create_group(const std::string& path);  // with missing parents; fine if it exists
  void remove(const std::string& path);        // unlinks a dataset or group

  // ---- datasets: inspection ----
  ArrayInfo info(const std::string& path) const;  // throws when missing or not a dataset

  // ---- datasets: reading (one H5Dread each) ----
  // The stored shape must match `expect` (same rank; kAny for any extent) and the type
  // its class, otherwise: "expected float32 [? x 100], found float64 [7 x 100]".
  // float32: exactly 4-byte IEEE floats (either byte order).
  std::vector<float> read_float32(const std::string& path, const Shape& expect, Shape* shape = nullptr) const;
  // Reads into caller memory of exactly product(shape) floats (e.g. a parameter arena).
  void read_float32_into(const std::string& path, const Shape& shape, float* dst) const;
  // Any float width, converted.
  std::vector<double> read_float64(const std::string& path, const Shape& expect, Shape* shape = nullptr) const;
  // Any integer type, converted; values that do not fit are an error, floats are rejected.
  std::vector<int64_t> read_int64(const std::string& path, const Shape& expect, Shape* shape = nullptr) const;
  std::vector<uint64_t> read_uint64(const std::string& path, const Shape& expect, Shape* shape = nullptr) const;
  // Variable- or fixed-length strings (h5py writes both), flattened in row-major order.
  std::vector<std::string> read_strings(const std::string& path, const Shape& expect, Shape* shape = nullptr) const;

  // ---- datasets: writing (the path must be new; missing parent groups are created) ----
  // Stored as the matching little-endian type (float -> float32, int64_t -> int64, ...).
  // Explicitly instantiated for float, double, int8_t, int16_t, int32_t, int64_t,
  // uint8_t, uint16_t, uint32_t, uint64_t. An empty shape writes a scalar.
  template <class T>
  void write(const std::string& path, const T* data, const Shape& shape);
  template <class T>
  void write(const std::string& path, const std::vector<T>& values) {  // 1-D
    write(path, values.data(), Shape{static_cast<int64_t>(values.size())});
  }
  void write_float32(const std::string& path, const float* data, const Shape& shape) { write(path, data, shape); }
  // Variable-length UTF-8 strings, 1-D.
  void write_strings(const std::string& path, const std::vector<std::string>& values);
  // Fixed-length, NUL-padded strings of the longest value's width (as numpy "S" arrays
  // in h5py); for compatibility tests.
  void write_fixed_strings(const std::string& path, const std::vector<std::string>& values);

  // ---- attributes on groups or datasets ("/" is the root) ----
  bool has_attr(const std::string& object, const std::string& name) const;
  std::vector<std::string> attr_names(const std::string& object) const;  // sorted
  ArrayInfo attr_info(const std::string& object, const std::string& name) const;
  // A scalar or one-element string attribute (variable or fixed length).
  std::string read_string_attr(const std::string& object, const std::string& name) const;
  // A string attribute of any rank, flattened; a scalar gives one element.
  std::vector<std::string> read_strings_attr(const std::string& object, const std::string& name) const;
  // Scalar or one-element numeric attributes; int/uint accept any integer type that
  // fits, double accepts integers and floats.
  int64_t read_int_attr(const std::string& object, const std::string& name) const;
  uint64_t read_uint_attr(const std::string& object, const std::string& name) const;
  double read_double_attr(const std::string& object, const std::string& name) const;

  // Writing replaces an existing attribute of the same name.
  void write_string_attr(const std::string& object, const std::string& name, const std::string& value);
  void write_strings_attr(const std::string& object, const std::string& name, const std::vector<std::string>& values);
  void write_int_attr(const std::string& object, const std::string& name, int64_t value);
  void write_uint_attr(const std::string& object, const std::string& name, uint64_t value);
  void write_double_attr(const std::string& object, const std::string& name, double value);
  void remove_attr(const std::string& object, const std::string& name);

 private:
  enum class Mode { Read, Write, Edit };
  File(std::string path, std::string tmp_path, int64_t id, Mode mode)
      : path_(std::move(path)), tmp_path_(std::move(tmp_path)), id_(id), mode_(mode) {}
  void close_quietly() noexcept;
  void require_writable(const std::string& object_path) const;

  std::string path_;      // the final name
  std::string tmp_path_;  // create(): the temporary being written
  int64_t id_ = -1;       // hid_t of the open file, -1 when closed
  Mode mode_ = Mode::Read;
};

}  // namespace mman::h5
