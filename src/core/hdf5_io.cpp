// h5::File: HDF5 C API calls behind RAII handles, with one-line errors naming file and path.
#include "mman/hdf5_io.h"

#include <fcntl.h>
#include <hdf5.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>

#include "mman/atomic_file.h"
#include "mman/error.h"

// Weak: set only in sanitizer builds (probe() clears it in its child).
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace mman::h5 {

static_assert(sizeof(hid_t) == sizeof(int64_t), "File stores a hid_t in an int64_t");

namespace {

namespace fs = std::filesystem;

// HDF5 prints its whole error stack to stderr by default; we report errors ourselves.
// Called on every open because the setting is per thread in thread-safe builds.
void quiet_hdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

herr_t innermost_error(unsigned n, const H5E_error2_t* err, void* data) {
  if (n == 0 && err != nullptr && err->desc != nullptr) *static_cast<std::string*>(data) = err->desc;
  return 0;
}

// The most specific description on HDF5's error stack (e.g. "truncated file: eof = ..."),
// as " (HDF5: ...)" for the end of a message, or "" when the stack is empty. Clears it.
std::string hdf5_detail() {
  std::string desc;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_error, &desc);
  H5Eclear2(H5E_DEFAULT);
  return desc.empty() ? std::string() : " (HDF5: " + desc + ")";
}

// Owns one HDF5 identifier and closes it with the matching function.
class Hid {
 public:
  using Closer = herr_t (*)(hid_t);
  Hid() = default;
  Hid(hid_t id, Closer close) : id_(id), close_(close) {}
  Hid(Hid&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Hid& operator=(Hid&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      close_ = o.close_;
      o.id_ = -1;
    }
    return *this;
  }
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;
  ~Hid() { reset(); }
  void reset() {
    if (id_ >= 0 && close_ != nullptr) close_(id_);
    id_ = -1;
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_ = -1;
  Closer close_ = nullptr;
};

TypeInfo type_info(hid_t t) {
  TypeInfo ti;
  ti.size = H5Tget_size(t);
  switch (H5Tget_class(t)) {
    case H5T_INTEGER:
      ti.cls = TypeClass::Integer;
      ti.is_signed = H5Tget_sign(t) == H5T_SGN_2;
      break;
    case H5T_FLOAT: ti.cls = TypeClass::Float; break;
    case H5T_STRING:
      ti.cls = TypeClass::String;
      ti.variable = H5Tis_variable_str(t) > 0;
      break;
    case H5T_COMPOUND: ti.other = "compound"; break;
    case H5T_ENUM: ti.other = "enum"; break;
    case H5T_ARRAY: ti.other = "array"; break;
    case H5T_VLEN: ti.other = "variable-length sequence"; break;
    case H5T_OPAQUE: ti.other = "opaque"; break;
    case H5T_BITFIELD: ti.other = "bitfield"; break;
    case H5T_REFERENCE: ti.other = "reference"; break;
    case H5T_TIME: ti.other = "time"; break;
    default: ti.other = "unknown type"; break;
  }
  return ti;
}

// Fills shape/scalar from a dataspace. A null dataspace (h5py.Empty) reads as [0].
bool space_info(hid_t space, ArrayInfo& ai) {
  const H5S_class_t cls = H5Sget_simple_extent_type(space);
  ai.shape.clear();
  ai.scalar = false;
  if (cls == H5S_SCALAR) {
    ai.scalar = true;
    return true;
  }
  if (cls == H5S_NULL) {
    ai.shape = {0};
    return true;
  }
  const int rank = H5Sget_simple_extent_ndims(space);
  if (rank < 0) return false;
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0 && H5Sget_simple_extent_dims(space, dims.data(), nullptr) < 0) return false;
  for (hsize_t d : dims) ai.shape.push_back(static_cast<int64_t>(d));
  return true;
}

bool shape_matches(const ArrayInfo& ai, const Shape& expect) {
  if (expect.empty()) return ai.scalar;
  if (ai.scalar || ai.shape.size() != expect.size()) return false;
  for (size_t i = 0; i < expect.size(); ++i)
    if (expect[i] != kAny && expect[i] != ai.shape[i]) return false;
  return true;
}

std::string describe_expect(const char* what, const Shape& expect) {
  return expect.empty() ? fmt::format("{} scalar", what) : fmt::format("{} {}", what, describe_shape(expect));
}

// Splits "/a/b/c" into its components; rejects relative paths and empty components.
bool split_path(const std::string& path, std::vector<std::string>& parts) {
  parts.clear();
  if (path.empty() || path[0] != '/') return false;
  size_t pos = 1;
  while (pos < path.size()) {
    size_t next = path.find('/', pos);
    if (next == std::string::npos) next = path.size();
    if (next == pos) {
      if (next == path.size() - 1) break;  // one trailing slash is fine
      return false;
    }
    parts.push_back(path.substr(pos, next - pos));
    pos = next + 1;
  }
  return true;
}

template <class T>
struct H5Types;
#define MMAN_H5_TYPES(T, FILE_TYPE, MEM_TYPE)         \
  template <>                                         \
  struct H5Types<T> {                                 \
    static hid_t file() { return FILE_TYPE; }         \
    static hid_t mem() { return MEM_TYPE; }           \
  };
MMAN_H5_TYPES(float, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT)
MMAN_H5_TYPES(double, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE)
MMAN_H5_TYPES(int8_t, H5T_STD_I8LE, H5T_NATIVE_INT8)
MMAN_H5_TYPES(int16_t, H5T_STD_I16LE, H5T_NATIVE_INT16)
MMAN_H5_TYPES(int32_t, H5T_STD_I32LE, H5T_NATIVE_INT32)
MMAN_H5_TYPES(int64_t, H5T_STD_I64LE, H5T_NATIVE_INT64)
MMAN_H5_TYPES(uint8_t, H5T_STD_U8LE, H5T_NATIVE_UINT8)
MMAN_H5_TYPES(uint16_t, H5T_STD_U16LE, H5T_NATIVE_UINT16)
MMAN_H5_TYPES(uint32_t, H5T_STD_U32LE, H5T_NATIVE_UINT32)
MMAN_H5_TYPES(uint64_t, H5T_STD_U64LE, H5T_NATIVE_UINT64)
#undef MMAN_H5_TYPES

// Either a dataset or an attribute: what reading needs from both.
struct Source {
  std::string label;  // path for messages
  Hid object;         // dataset or attribute
  Hid type;
  Hid space;
  ArrayInfo info;
  bool is_attr = false;
  herr_t read(hid_t mem_type, void* buf) const {
    return is_attr ? H5Aread(object.get(), mem_type, buf)
                   : H5Dread(object.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
  }
};

Hid vlen_utf8_type() {
  Hid t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), H5T_VARIABLE);
  H5Tset_cset(t.get(), H5T_CSET_UTF8);
  return t;
}

std::atomic<unsigned> g_temp_counter{0};

// probe(): in the child, the pipe to the parent; -1 everywhere else.
int g_probe_fd = -1;

// Sends one record (a type letter, a 32-bit length, the text) to the probing parent.
void probe_send(char type, const std::string& text) {
  if (g_probe_fd < 0) return;
  std::string rec(1, type);
  const uint32_t len = static_cast<uint32_t>(text.size());
  rec.append(reinterpret_cast<const char*>(&len), sizeof len);
  rec += text;
  size_t done = 0;
  while (done < rec.size()) {
    const ssize_t n = ::write(g_probe_fd, rec.data() + done, rec.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

// Tells a probing parent which object is being read, so a crash can be located.
void note_path(const std::string& label) { probe_send('P', label); }

}  // namespace

// ---------------------------------------------------------------------------------------
// Descriptions

std::string TypeInfo::name() const {
  switch (cls) {
    case TypeClass::Integer: return fmt::format("{}{}", is_signed ? "int" : "uint", size * 8);
    case TypeClass::Float: return fmt::format("float{}", size * 8);
    case TypeClass::String: return variable ? std::string("string") : fmt::format("string({})", size);
    case TypeClass::Other: break;
  }
  return other;
}

int64_t ArrayInfo::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ArrayInfo::describe() const {
  return scalar ? type.name() + " scalar" : type.name() + " " + describe_shape(shape);
}

std::string describe_shape(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += " x ";
    s += shape[i] == kAny ? std::string("?") : std::to_string(shape[i]);
  }
  return s + "]";
}

// ---------------------------------------------------------------------------------------
// Opening, committing, closing

namespace {

// Checks that happen before HDF5 sees the file, so each common mistake gets its own
// message instead of a generic "unable to open".
void check_existing_file(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) throw Error(fmt::format("{}: no such file", path));
  if (fs::is_directory(st)) throw Error(fmt::format("{}: is a folder, not an HDF5 file", path));
  if (::access(path.c_str(), R_OK) != 0)
    throw Error(fmt::format("{}: cannot read the file ({})", path, std::strerror(errno)));
  const auto size = fs::file_size(path, ec);
  if (!ec && size == 0) throw Error(fmt::format("{}: empty file (0 bytes), not an HDF5 file", path));
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  if (is_hdf5 == 0) {
    H5Eclear2(H5E_DEFAULT);
    throw Error(fmt::format("{}: not an HDF5 file (no HDF5 signature in its {} bytes)", path, size));
  }
  if (is_hdf5 < 0) throw Error(fmt::format("{}: not a readable HDF5 file{}", path, hdf5_detail()));
}

int64_t open_hdf5(const std::string& path, unsigned flags) {
  Hid fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  // Closing the file also closes any object a caller forgot, so the file is released.
  H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG);
  const hid_t id = H5Fopen(path.c_str(), flags, fapl.get());
  if (id < 0) {
    const std::string detail = hdf5_detail();
    const bool truncated = detail.find("truncated") != std::string::npos;
    throw Error(fmt::format("{}: cannot open: {} HDF5 file{}", path,
                            truncated ? "truncated" : "damaged or truncated", detail));
  }
  return id;
}

}  // namespace

File File::open(const std::string& path) {
  quiet_hdf5();
  check_existing_file(path);
  return File(path, "", open_hdf5(path, H5F_ACC_RDONLY), Mode::Read);
}

File File::edit(const std::string& path) {
  quiet_hdf5();
  check_existing_file(path);
  return File(path, "", open_hdf5(path, H5F_ACC_RDWR), Mode::Edit);
}

File File::create(const std::string& path) {
  quiet_hdf5();
  if (path.empty()) throw Error("an empty file name was given for an HDF5 file to write");
  const fs::path target(path);
  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error(fmt::format("{}: cannot write: folder '{}' does not exist", path, dir.string()));
  if (fs::is_directory(target, ec)) throw Error(fmt::format("{}: cannot write: it is a folder", path));
  // The temporary lives in the same folder so the final rename stays on one file system.
  const std::string tmp = (dir / fmt::format(".{}.tmp-{}-{}", target.filename().string(), ::getpid(),
                                             g_temp_counter.fetch_add(1)))
                              .string();
  // The file is built in memory (HDF5's core driver) and written out by commit() with our
  // own checked writes: when HDF5 itself meets a full disk its close fails half-way and
  // the library crashes at exit. The empty temporary created here reserves the name and
  // shows at once whether the folder is writable.
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    const std::string why = std::strerror(errno);
    throw Error(fmt::format("{}: cannot create the temporary file '{}' ({})", path, tmp, why));
  }
  ::close(fd);
  Hid fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG);
  H5Pset_fapl_core(fapl.get(), size_t{1} << 20, /*backing_store=*/0);
  const hid_t id = H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (id < 0) {
    const std::string detail = hdf5_detail();
    std::remove(tmp.c_str());
    throw Error(fmt::format("{}: cannot create the file in memory{}", path, detail));
  }
  return File(path, tmp, id, Mode::Write);
}

File::File(File&& other) noexcept
    : path_(std::move(other.path_)), tmp_path_(std::move(other.tmp_path_)), id_(other.id_), mode_(other.mode_) {
  other.id_ = -1;
  other.tmp_path_.clear();
}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    close_quietly();
    path_ = std::move(other.path_);
    tmp_path_ = std::move(other.tmp_path_);
    id_ = other.id_;
    mode_ = other.mode_;
    other.id_ = -1;
    other.tmp_path_.clear();
  }
  return *this;
}

File::~File() { close_quietly(); }

void File::close_quietly() noexcept {
  if (id_ >= 0) {
    H5Fclose(id_);
    H5Eclear2(H5E_DEFAULT);
    id_ = -1;
  }
  if (mode_ == Mode::Write && !tmp_path_.empty()) {
    std::remove(tmp_path_.c_str());  // uncommitted: never leave a partial file behind
    tmp_path_.clear();
  }
}

void File::commit() {
  if (id_ < 0) throw Error(fmt::format("{}: commit on a closed file", path_));
  if (mode_ == Mode::Read) {
    close_quietly();
    return;
  }
  const bool flushed = H5Fflush(id_, H5F_SCOPE_GLOBAL) >= 0;
  std::string image;
  if (flushed && mode_ == Mode::Write) {
    const ssize_t size = H5Fget_file_image(id_, nullptr, 0);
    if (size > 0) {
      image.resize(static_cast<size_t>(size));
      if (H5Fget_file_image(id_, image.data(), image.size()) != size) image.clear();
    }
  }
  const bool closed = H5Fclose(id_) >= 0;
  id_ = -1;
  if (!flushed || !closed || (mode_ == Mode::Write && image.empty())) {
    const std::string detail = hdf5_detail();
    close_quietly();
    throw Error(fmt::format("{}: writing the file failed{}", path_, detail));
  }
  if (mode_ == Mode::Edit) return;
  // Written to a temporary, flushed to disk and renamed (write_file_atomic), so a crash or
  // a full disk leaves either the old file or the complete new one, and a clear error.
  try {
    write_file_atomic(path_, image);
  } catch (const Error&) {
    close_quietly();
    throw;
  }
  close_quietly();  // removes the empty placeholder
}

void File::fail(const std::string& object_path, const std::string& problem) const {
  throw Error(fmt::format("{}: {}: {}", path_, object_path, problem));
}

void File::require_writable(const std::string& object_path) const {
  if (id_ < 0) fail(object_path, "the file is closed");
  if (mode_ == Mode::Read) fail(object_path, "the file is open read-only");
}

// ---------------------------------------------------------------------------------------
// Structure

namespace {

// Opens the object at path, or returns an invalid Hid (error stack cleared).
Hid open_object(hid_t file, const std::string& path) {
  Hid obj(H5Oopen(file, path.c_str(), H5P_DEFAULT), H5Oclose);
  if (!obj.ok()) H5Eclear2(H5E_DEFAULT);
  return obj;
}

H5I_type_t object_kind(hid_t file, const std::string& path) {
  Hid obj = open_object(file, path);
  return obj.ok() ? H5Iget_type(obj.get()) : H5I_BADID;
}

}  // namespace

bool File::exists(const std::string& path) const {
  if (id_ < 0) fail(path, "the file is closed");
  std::vector<std::string> parts;
  if (!split_path(path, parts)) fail(path, "not an absolute HDF5 path");
  std::string prefix;
  for (size_t i = 0; i < parts.size(); ++i) {
    prefix += "/" + parts[i];
    const htri_t e = H5Lexists(id_, prefix.c_str(), H5P_DEFAULT);
    if (e <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    if (i + 1 < parts.size() && object_kind(id_, prefix) != H5I_GROUP) return false;
  }
  return true;
}

bool File::is_group(const std::string& path) const {
  return exists(path) && object_kind(id_, path) == H5I_GROUP;
}

bool File::is_dataset(const std::string& path) const {
  return exists(path) && object_kind(id_, path) == H5I_DATASET;
}

std::vector<std::string> File::children(const std::string& group) const {
  note_path(group);
  if (!exists(group)) fail(group, "missing group");
  Hid g = open_object(id_, group);
  if (!g.ok() || H5Iget_type(g.get()) != H5I_GROUP) fail(group, "expected a group, found a dataset");
  H5G_info_t gi;
  if (H5Gget_info(g.get(), &gi) < 0) fail(group, "cannot list the group" + hdf5_detail());
  std::vector<std::string> names;
  names.reserve(gi.nlinks);
  for (hsize_t i = 0; i < gi.nlinks; ++i) {
    const ssize_t len = H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) fail(group, "cannot list the group" + hdf5_detail());
    std::string name(static_cast<size_t>(len) + 1, '\0');
    H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT);
    name.resize(static_cast<size_t>(len));
    names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  return names;
}

void File::create_group(const std::string& path) {
  require_writable(path);
  std::vector<std::string> parts;
  if (!split_path(path, parts)) fail(path, "not an absolute HDF5 path");
  std::string prefix;
  for (const std::string& part : parts) {
    prefix += "/" + part;
    if (exists(prefix)) {
      if (object_kind(id_, prefix) != H5I_GROUP) fail(prefix, "exists and is not a group");
      continue;
    }
    Hid gcpl(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
    H5Pset_obj_track_times(gcpl.get(), 0);
    Hid g(H5Gcreate2(id_, prefix.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), H5Gclose);
    if (!g.ok()) fail(prefix, "cannot create the group" + hdf5_detail());
  }
}

void File::remove(const std::string& path) {
  require_writable(path);
  if (!exists(path)) fail(path, "cannot remove: missing");
  if (H5Ldelete(id_, path.c_str(), H5P_DEFAULT) < 0) fail(path, "cannot remove" + hdf5_detail());
}

// ---------------------------------------------------------------------------------------
// Reading

namespace {

// A damaged file can declare shapes far larger than what it stores; allocating for them
// would exhaust memory (or hang zero-filling it) before HDF5 noticed. The stored bytes of
// a contiguous dataset must lie inside the file; anything else must at least fit in RAM.
void check_declared_size(const File& f, hid_t file, const Source& s) {
  int64_t elements = 1;
  for (int64_t d : s.info.shape)
    if (d != 0 && __builtin_mul_overflow(elements, d, &elements))
      f.fail(s.label, "damaged: its shape " + describe_shape(s.info.shape) + " overflows");
  for (int64_t d : s.info.shape)
    if (d == 0) elements = 0;
  int64_t bytes = 0;
  const int64_t type_size = static_cast<int64_t>(std::max<size_t>(s.info.type.size, 1));
  if (__builtin_mul_overflow(elements, type_size, &bytes))
    f.fail(s.label, "damaged: its shape " + describe_shape(s.info.shape) + " overflows");
  if (bytes == 0) return;
  if (s.is_attr) {
    if (static_cast<int64_t>(H5Aget_storage_size(s.object.get())) < bytes)
      f.fail(s.label, fmt::format("damaged: {} needs {} bytes but {} are stored", s.info.describe(), bytes,
                                  H5Aget_storage_size(s.object.get())));
    return;
  }
  hsize_t file_size = 0;
  H5Fget_filesize(file, &file_size);
  const haddr_t offset = H5Dget_offset(s.object.get());
  H5Eclear2(H5E_DEFAULT);
  if (offset != HADDR_UNDEF) {  // contiguous and allocated
    if (offset > file_size || static_cast<uint64_t>(bytes) > file_size - offset)
      f.fail(s.label, fmt::format("damaged: {} ({} bytes at offset {}) extends beyond the end of the file ({} bytes)",
                                  s.info.describe(), bytes, offset, file_size));
    return;
  }
  const int64_t ram = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<int64_t>(sysconf(_SC_PAGE_SIZE));
  if (ram > 0 && bytes > ram)
    f.fail(s.label, fmt::format("{} needs {} bytes, more than this machine's memory (damaged file?)",
                                s.info.describe(), bytes));
}

Source open_dataset(const File& f, hid_t file, const std::string& path) {
  note_path(path);
  if (!f.exists(path)) f.fail(path, "missing dataset");
  Source s;
  s.label = path;
  s.object = open_object(file, path);
  if (!s.object.ok()) f.fail(path, "cannot open" + hdf5_detail());
  if (H5Iget_type(s.object.get()) != H5I_DATASET) f.fail(path, "expected a dataset, found a group");
  s.type = Hid(H5Dget_type(s.object.get()), H5Tclose);
  s.space = Hid(H5Dget_space(s.object.get()), H5Sclose);
  if (!s.type.ok() || !s.space.ok() || !space_info(s.space.get(), s.info))
    f.fail(path, "cannot read the type or shape" + hdf5_detail());
  s.info.type = type_info(s.type.get());
  check_declared_size(f, file, s);
  return s;
}

Source open_attribute(const File& f, hid_t file, const std::string& object, const std::string& name) {
  const std::string label = object + " (attribute " + name + ")";
  note_path(label);
  if (!f.exists(object)) f.fail(object, "missing object (looking for attribute " + name + ")");
  Hid obj = open_object(file, object);
  if (!obj.ok()) f.fail(object, "cannot open" + hdf5_detail());
  const htri_t has = H5Aexists(obj.get(), name.c_str());
  if (has < 0) f.fail(label, "cannot check the attribute" + hdf5_detail());
  if (has == 0) f.fail(label, "missing attribute");
  Source s;
  s.label = label;
  s.is_attr = true;
  s.object = Hid(H5Aopen(obj.get(), name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!s.object.ok()) f.fail(label, "cannot open" + hdf5_detail());
  s.type = Hid(H5Aget_type(s.object.get()), H5Tclose);
  s.space = Hid(H5Aget_space(s.object.get()), H5Sclose);
  if (!s.type.ok() || !s.space.ok() || !space_info(s.space.get(), s.info))
    f.fail(label, "cannot read the type or shape" + hdf5_detail());
  s.info.type = type_info(s.type.get());
  check_declared_size(f, file, s);
  return s;
}

void read_or_fail(const File& f, const Source& s, hid_t mem_type, void* buf) {
  if (s.info.elements() == 0) return;
  if (s.read(mem_type, buf) < 0) f.fail(s.label, "cannot read the data (damaged file?)" + hdf5_detail());
}

// Integers of any width and sign into int64, failing on unsigned values above INT64_MAX
// (HDF5's conversion would silently clip them).
std::vector<int64_t> read_integers_signed(const File& f, const Source& s) {
  std::vector<int64_t> out(static_cast<size_t>(s.info.elements()));
  if (!s.info.type.is_signed && s.info.type.size >= 8) {
    std::vector<uint64_t> raw(out.size());
    read_or_fail(f, s, H5T_NATIVE_UINT64, raw.data());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        f.fail(s.label, fmt::format("value {} at index {} does not fit in int64", raw[i], i));
      out[i] = static_cast<int64_t>(raw[i]);
    }
    return out;
  }
  read_or_fail(f, s, H5T_NATIVE_INT64, out.data());
  return out;
}

// Integers into uint64, failing on negative values.
std::vector<uint64_t> read_integers_unsigned(const File& f, const Source& s) {
  std::vector<uint64_t> out(static_cast<size_t>(s.info.elements()));
  if (s.info.type.is_signed) {
    std::vector<int64_t> raw(out.size());
    read_or_fail(f, s, H5T_NATIVE_INT64, raw.data());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] < 0) f.fail(s.label, fmt::format("negative value {} at index {} where unsigned was expected", raw[i], i));
      out[i] = static_cast<uint64_t>(raw[i]);
    }
    return out;
  }
  read_or_fail(f, s, H5T_NATIVE_UINT64, out.data());
  return out;
}

std::vector<std::string> read_string_values(const File& f, const Source& s) {
  const size_t n = static_cast<size_t>(s.info.elements());
  std::vector<std::string> out;
  out.reserve(n);
  if (n == 0) return out;
  if (s.info.type.variable) {
    Hid mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(s.type.get()));
    std::vector<char*> ptrs(n, nullptr);
    read_or_fail(f, s, mem.get(), ptrs.data());
    for (char* p : ptrs) out.emplace_back(p != nullptr ? p : "");
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(mem.get(), s.space.get(), H5P_DEFAULT, ptrs.data());
#else
    H5Dvlen_reclaim(mem.get(), s.space.get(), H5P_DEFAULT, ptrs.data());
#endif
    return out;
  }
  const size_t width = s.info.type.size;
  Hid mem(H5Tcopy(s.type.get()), H5Tclose);
  std::vector<char> buf(n * width);
  read_or_fail(f, s, mem.get(), buf.data());
  const bool space_padded = H5Tget_strpad(s.type.get()) == H5T_STR_SPACEPAD;
  for (size_t i = 0; i < n; ++i) {
    const char* p = buf.data() + i * width;
    size_t len = 0;
    while (len < width && p[len] != '\0') ++len;
    if (space_padded)
      while (len > 0 && p[len - 1] == ' ') --len;
    out.emplace_back(p, len);
  }
  return out;
}

}  // namespace

ArrayInfo File::info(const std::string& path) const { return open_dataset(*this, id_, path).info; }

std::vector<float> File::read_float32(const std::string& path, const Shape& expect, Shape* shape) const {
  const Source s = open_dataset(*this, id_, path);
  if (s.info.type.cls != TypeClass::Float || s.info.type.size != 4 || !shape_matches(s.info, expect))
    fail(path, fmt::format("expected {}, found {}", describe_expect("float32", expect), s.info.describe()));
  std::vector<float> out(static_cast<size_t>(s.info.elements()));
  read_or_fail(*this, s, H5T_NATIVE_FLOAT, out.data());
  if (shape != nullptr) *shape = s.info.shape;
  return out;
}

void File::read_float32_into(const std::string& path, const Shape& shape, float* dst) const {
  for (int64_t d : shape)
    if (d < 0) fail(path, "read_float32_into needs an exact shape");
  const Source s = open_dataset(*this, id_, path);
  if (s.info.type.cls != TypeClass::Float || s.info.type.size != 4 || !shape_matches(s.info, shape))
    fail(path, fmt::format("expected {}, found {}", describe_expect("float32", shape), s.info.describe()));
  read_or_fail(*this, s, H5T_NATIVE_FLOAT, dst);
}

std::vector<double> File::read_float64(const std::string& path, const Shape& expect, Shape* shape) const {
  const Source s = open_dataset(*this, id_, path);
  if (s.info.type.cls != TypeClass::Float || !shape_matches(s.info, expect))
    fail(path, fmt::format("expected {}, found {}", describe_expect("floats", expect), s.info.describe()));
  std::vector<double> out(static_cast<size_t>(s.info.elements()));
  read_or_fail(*this, s, H5T_NATIVE_DOUBLE, out.data());
  if (shape != nullptr) *shape = s.info.shape;
  return out;
}

std::vector<int64_t> File::read_int64(const std::string& path, const Shape& expect, Shape* shape) const {
  const Source s = open_dataset(*this, id_, path);
  if (s.info.type.cls != TypeClass::Integer || !shape_matches(s.info, expect))
    fail(path, fmt::format("expected {}, found {}", describe_expect("integers", expect), s.info.describe()));
  if (shape != nullptr) *shape = s.info.shape;
  return read_integers_signed(*this, s);
}

std::vector<uint64_t> File::read_uint64(const std::string& path, const Shape& expect, Shape* shape) const {
  const Source s = open_dataset(*this, id_, path);
  if (s.info.type.cls != TypeClass::Integer || !shape_matches(s.info, expect))
    fail(path, fmt::format("expected {}, found {}", describe_expect("unsigned integers", expect), s.info.describe()));
  if (shape != nullptr) *shape = s.info.shape;
  return read_integers_unsigned(*this, s);
}

std::vector<std::string> File::read_strings(const std::string& path, const Shape& expect, Shape* shape) const {
  const Source s = open_dataset(*this, id_, path);
  if (s.info.type.cls != TypeClass::String || !shape_matches(s.info, expect))
    fail(path, fmt::format("expected {}, found {}", describe_expect("strings", expect), s.info.describe()));
  if (shape != nullptr) *shape = s.info.shape;
  return read_string_values(*this, s);
}

// ---------------------------------------------------------------------------------------
// Writing datasets

namespace {

Hid make_space(const File& f, const std::string& path, const Shape& shape) {
  if (shape.empty()) return Hid(H5Screate(H5S_SCALAR), H5Sclose);
  std::vector<hsize_t> dims;
  for (int64_t d : shape) {
    if (d < 0) f.fail(path, fmt::format("cannot write a negative extent {}", describe_shape(shape)));
    dims.push_back(static_cast<hsize_t>(d));
  }
  Hid space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  if (!space.ok()) f.fail(path, "cannot make a dataspace" + hdf5_detail());
  return space;
}

Hid create_dataset(File& f, hid_t file, const std::string& path, hid_t file_type, hid_t space) {
  if (f.exists(path)) f.fail(path, "already exists");
  const size_t slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) f.create_group(path.substr(0, slash));
  Hid dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  H5Pset_obj_track_times(dcpl.get(), 0);  // no timestamps: the same data gives the same bytes
  Hid ds(H5Dcreate2(file, path.c_str(), file_type, space, H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), H5Dclose);
  if (!ds.ok()) f.fail(path, "cannot create the dataset" + hdf5_detail());
  return ds;
}

std::vector<const char*> c_strings(const File& f, const std::string& label, const std::vector<std::string>& values) {
  std::vector<const char*> ptrs;
  ptrs.reserve(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i].find('\0') != std::string::npos)
      f.fail(label, fmt::format("string at index {} contains a NUL byte", i));
    ptrs.push_back(values[i].c_str());
  }
  return ptrs;
}

}  // namespace

template <class T>
void File::write(const std::string& path, const T* data, const Shape& shape) {
  require_writable(path);
  Hid space = make_space(*this, path, shape);
  Hid ds = create_dataset(*this, id_, path, H5Types<T>::file(), space.get());
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (n > 0 && H5Dwrite(ds.get(), H5Types<T>::mem(), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    fail(path, "cannot write the data" + hdf5_detail());
}

template void File::write<float>(const std::string&, const float*, const Shape&);
template void File::write<double>(const std::string&, const double*, const Shape&);
template void File::write<int8_t>(const std::string&, const int8_t*, const Shape&);
template void File::write<int16_t>(const std::string&, const int16_t*, const Shape&);
template void File::write<int32_t>(const std::string&, const int32_t*, const Shape&);
template void File::write<int64_t>(const std::string&, const int64_t*, const Shape&);
template void File::write<uint8_t>(const std::string&, const uint8_t*, const Shape&);
template void File::write<uint16_t>(const std::string&, const uint16_t*, const Shape&);
template void File::write<uint32_t>(const std::string&, const uint32_t*, const Shape&);
template void File::write<uint64_t>(const std::string&, const uint64_t*, const Shape&);

void File::write_strings(const std::string& path, const std::vector<std::string>& values) {
  require_writable(path);
  const std::vector<const char*> ptrs = c_strings(*this, path, values);
  Hid type = vlen_utf8_type();
  Hid space = make_space(*this, path, Shape{static_cast<int64_t>(values.size())});
  Hid ds = create_dataset(*this, id_, path, type.get(), space.get());
  if (!ptrs.empty() && H5Dwrite(ds.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()) < 0)
    fail(path, "cannot write the data" + hdf5_detail());
}

void File::write_fixed_strings(const std::string& path, const std::vector<std::string>& values) {
  require_writable(path);
  c_strings(*this, path, values);  // same NUL check
  size_t width = 1;
  for (const std::string& v : values) width = std::max(width, v.size());
  Hid type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), width);
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  std::vector<char> buf(values.size() * width, '\0');
  for (size_t i = 0; i < values.size(); ++i) std::memcpy(buf.data() + i * width, values[i].data(), values[i].size());
  Hid space = make_space(*this, path, Shape{static_cast<int64_t>(values.size())});
  Hid ds = create_dataset(*this, id_, path, type.get(), space.get());
  if (!buf.empty() && H5Dwrite(ds.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0)
    fail(path, "cannot write the data" + hdf5_detail());
}

// ---------------------------------------------------------------------------------------
// Attributes

namespace {

herr_t collect_attr_name(hid_t, const char* name, const H5A_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
}

void need_one(const File& f, const Source& s, const char* what) {
  if (s.info.elements() != 1)
    f.fail(s.label, fmt::format("expected one {}, found {}", what, s.info.describe()));
}

}  // namespace

bool File::has_attr(const std::string& object, const std::string& name) const {
  if (!exists(object)) return false;
  Hid obj = open_object(id_, object);
  if (!obj.ok()) return false;
  const htri_t has = H5Aexists(obj.get(), name.c_str());
  if (has < 0) H5Eclear2(H5E_DEFAULT);
  return has > 0;
}

std::vector<std::string> File::attr_names(const std::string& object) const {
  if (!exists(object)) fail(object, "missing object");
  Hid obj = open_object(id_, object);
  if (!obj.ok()) fail(object, "cannot open" + hdf5_detail());
  std::vector<std::string> names;
  hsize_t idx = 0;
  if (H5Aiterate2(obj.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr_name, &names) < 0)
    fail(object, "cannot list the attributes" + hdf5_detail());
  std::sort(names.begin(), names.end());
  return names;
}

ArrayInfo File::attr_info(const std::string& object, const std::string& name) const {
  return open_attribute(*this, id_, object, name).info;
}

std::string File::read_string_attr(const std::string& object, const std::string& name) const {
  const Source s = open_attribute(*this, id_, object, name);
  if (s.info.type.cls != TypeClass::String) fail(s.label, "expected a string, found " + s.info.describe());
  need_one(*this, s, "string");
  return read_string_values(*this, s).front();
}

std::vector<std::string> File::read_strings_attr(const std::string& object, const std::string& name) const {
  const Source s = open_attribute(*this, id_, object, name);
  if (s.info.type.cls != TypeClass::String) fail(s.label, "expected strings, found " + s.info.describe());
  return read_string_values(*this, s);
}

int64_t File::read_int_attr(const std::string& object, const std::string& name) const {
  const Source s = open_attribute(*this, id_, object, name);
  if (s.info.type.cls != TypeClass::Integer) fail(s.label, "expected an integer, found " + s.info.describe());
  need_one(*this, s, "integer");
  return read_integers_signed(*this, s).front();
}

uint64_t File::read_uint_attr(const std::string& object, const std::string& name) const {
  const Source s = open_attribute(*this, id_, object, name);
  if (s.info.type.cls != TypeClass::Integer)
    fail(s.label, "expected an unsigned integer, found " + s.info.describe());
  need_one(*this, s, "unsigned integer");
  return read_integers_unsigned(*this, s).front();
}

double File::read_double_attr(const std::string& object, const std::string& name) const {
  const Source s = open_attribute(*this, id_, object, name);
  if (s.info.type.cls != TypeClass::Integer && s.info.type.cls != TypeClass::Float)
    fail(s.label, "expected a number, found " + s.info.describe());
  need_one(*this, s, "number");
  double v = 0;
  read_or_fail(*this, s, H5T_NATIVE_DOUBLE, &v);
  return v;
}

namespace {

// Creates (replacing) attribute `name` on `object` and writes `buf` as `mem_type`.
void put_attr(File& f, hid_t file, const std::string& object, const std::string& name, hid_t file_type,
              hid_t mem_type, hid_t space, const void* buf) {
  const std::string label = object + " (attribute " + name + ")";
  if (!f.exists(object)) f.fail(object, "missing object (writing attribute " + name + ")");
  Hid obj = open_object(file, object);
  if (!obj.ok()) f.fail(object, "cannot open" + hdf5_detail());
  if (H5Aexists(obj.get(), name.c_str()) > 0 && H5Adelete(obj.get(), name.c_str()) < 0)
    f.fail(label, "cannot replace the attribute" + hdf5_detail());
  Hid attr(H5Acreate2(obj.get(), name.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) f.fail(label, "cannot create the attribute" + hdf5_detail());
  hssize_t n = H5Sget_simple_extent_npoints(space);
  if (n > 0 && H5Awrite(attr.get(), mem_type, buf) < 0) f.fail(label, "cannot write the attribute" + hdf5_detail());
}

}  // namespace

void File::write_string_attr(const std::string& object, const std::string& name, const std::string& value) {
  require_writable(object);
  const std::vector<std::string> values{value};  // must outlive ptrs
  const std::vector<const char*> ptrs = c_strings(*this, object + " (attribute " + name + ")", values);
  Hid type = vlen_utf8_type();
  Hid space(H5Screate(H5S_SCALAR), H5Sclose);
  put_attr(*this, id_, object, name, type.get(), type.get(), space.get(), ptrs.data());
}

void File::write_strings_attr(const std::string& object, const std::string& name,
                              const std::vector<std::string>& values) {
  require_writable(object);
  const std::vector<const char*> ptrs = c_strings(*this, object + " (attribute " + name + ")", values);
  Hid type = vlen_utf8_type();
  Hid space = make_space(*this, object, Shape{static_cast<int64_t>(values.size())});
  put_attr(*this, id_, object, name, type.get(), type.get(), space.get(), ptrs.data());
}

void File::write_int_attr(const std::string& object, const std::string& name, int64_t value) {
  require_writable(object);
  Hid space(H5Screate(H5S_SCALAR), H5Sclose);
  put_attr(*this, id_, object, name, H5T_STD_I64LE, H5T_NATIVE_INT64, space.get(), &value);
}

void File::write_uint_attr(const std::string& object, const std::string& name, uint64_t value) {
  require_writable(object);
  Hid space(H5Screate(H5S_SCALAR), H5Sclose);
  put_attr(*this, id_, object, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, space.get(), &value);
}

void File::write_double_attr(const std::string& object, const std::string& name, double value) {
  require_writable(object);
  Hid space(H5Screate(H5S_SCALAR), H5Sclose);
  put_attr(*this, id_, object, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, space.get(), &value);
}

void File::remove_attr(const std::string& object, const std::string& name) {
  require_writable(object);
  const std::string label = object + " (attribute " + name + ")";
  if (!has_attr(object, name)) fail(label, "cannot remove: missing attribute");
  Hid obj = open_object(id_, object);
  if (H5Adelete(obj.get(), name.c_str()) < 0) fail(label, "cannot remove the attribute" + hdf5_detail());
}

// ---------------------------------------------------------------------------------------
// Probing damaged files in a child process

void probe(const std::string& file, const std::function<void()>& read, double timeout_s) {
  if (timeout_s <= 0) {
    std::error_code ec;
    const auto size = fs::file_size(file, ec);
    timeout_s = 30.0 + (ec ? 0.0 : static_cast<double>(size) / 1e7);
    // The fuzzers meet HDF5 hangs every few dozen inputs and cannot wait 30 s for each.
    if (const char* env = std::getenv("MMAN_HDF5_PROBE_TIMEOUT")) {
      const double t = std::atof(env);
      if (t > 0) timeout_s = t;
    }
  }
  int fds[2];
  if (::pipe(fds) != 0) return;
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return;
  }
  if (pid == 0) {
    // The child: report how the read ends and leave without running any destructor or
    // atexit handler of the parent's state (_exit).
    ::close(fds[0]);
    g_probe_fd = fds[1];
    // glibc's and HDF5's own complaints about a damaged file ("double free", ...) would
    // only add noise before the parent's one-line message.
    const int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) ::dup2(devnull, STDERR_FILENO);
    // A crash here is an expected outcome the parent reports: die by the signal, without
    // the handlers a sanitizer or libFuzzer installed in the parent (libFuzzer's would
    // save the input as a crash of its own, though the parent process carries on).
    for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) std::signal(sig, SIG_DFL);
    if (&__sanitizer_set_death_callback != nullptr) __sanitizer_set_death_callback(nullptr);
    int code = 0;
    try {
      read();
      probe_send('D', "");
    } catch (const Error& e) {
      probe_send('E', e.what());
      code = 3;
    } catch (const std::exception& e) {
      probe_send('X', e.what());
      code = 4;
    } catch (...) {
      probe_send('X', "unknown exception");
      code = 4;
    }
    ::_exit(code);
  }

  ::close(fds[1]);
  std::string out;
  bool timed_out = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  char buf[4096];
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1 << 30)));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) {
      timed_out = true;
      break;
    }
    if (r < 0) break;
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  pid_t waited;
  do waited = ::waitpid(pid, &status, 0);
  while (waited < 0 && errno == EINTR);

  std::string last_path, error, other;
  bool done = false;
  for (size_t pos = 0; pos + 1 + sizeof(uint32_t) <= out.size();) {
    const char type = out[pos];
    uint32_t len = 0;
    std::memcpy(&len, out.data() + pos + 1, sizeof len);
    pos += 1 + sizeof len;
    if (pos + len > out.size()) break;
    const std::string text = out.substr(pos, len);
    pos += len;
    if (type == 'P') last_path = text;
    if (type == 'E') error = text;
    if (type == 'X') other = text;
    if (type == 'D') done = true;
  }
  const std::string where = last_path.empty() ? file + ": " : file + ": " + last_path + ": ";
  if (timed_out) fail("{}reading did not finish within {:.0f} s (damaged HDF5 file?)", where, timeout_s);
  if (!error.empty()) throw Error(error);
  if (done) return;
  if (!other.empty()) fail("{}reading failed ({}; damaged HDF5 file?)", where, other);
  // The child always reports before leaving; ending without a report means something
  // inside the read killed it (a signal, or an abort()/exit() in the library).
  std::string how = "it ended without reporting";
  if (waited == pid && WIFSIGNALED(status)) how = strsignal(WTERMSIG(status));
  if (waited == pid && WIFEXITED(status)) how = fmt::format("exit status {}", WEXITSTATUS(status));
  fail("{}damaged HDF5 file: reading it crashed the HDF5 library ({})", where, how);
}

}  // namespace mman::h5
