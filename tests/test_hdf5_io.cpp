// h5::File: round trips, type and shape checks, atomic writes, damaged files, h5py files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>

#include "mman/error.h"
#include "mman/hdf5_io.h"
#include "support/test_support.h"

namespace mman {
namespace {

using h5::File;
using h5::kAny;
using h5::Shape;
using test::TempDir;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

TEST(Hdf5Io, RoundTripsDatasetsOfEveryKind) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  const std::vector<float> m = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
  const std::vector<float> cube = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<int64_t> i64 = {0, -5, std::numeric_limits<int64_t>::max()};
  const std::vector<uint64_t> u64 = {0, std::numeric_limits<uint64_t>::max(), 42};
  const std::vector<std::string> strs = {"a", "", "héllo wörld", "with space "};
  {
    File f = File::create(path);
    f.write_float32("/w/matrix", m.data(), {2, 3});
    f.write_float32("/w/cube", cube.data(), {2, 2, 2});
    const float scalar = 9.5f;
    f.write("/w/scalar", &scalar, {});
    f.write("/ints/i64", i64);
    f.write("/ints/u64", u64);
    f.write("/ints/i16", std::vector<int16_t>{-3, 4});
    f.write_strings("/strs/vlen", strs);
    f.write_fixed_strings("/strs/fixed", {"ab", "abcd", ""});
    f.write_strings("/strs/none", {});
    f.commit();
  }
  const File f = File::open(path);
  Shape shape;
  EXPECT_EQ(f.read_float32("/w/matrix", {kAny, 3}, &shape), m);
  EXPECT_EQ(shape, (Shape{2, 3}));
  EXPECT_EQ(f.read_float32("/w/cube", {2, 2, 2}), cube);
  EXPECT_EQ(f.read_float32("/w/scalar", {}), std::vector<float>{9.5f});
  std::vector<float> into(6, 0.0f);
  f.read_float32_into("/w/matrix", {2, 3}, into.data());
  EXPECT_EQ(into, m);
  EXPECT_EQ(f.read_float64("/w/matrix", {2, 3})[2], 3.25);
  EXPECT_EQ(f.read_int64("/ints/i64", {kAny}), i64);
  EXPECT_EQ(f.read_uint64("/ints/u64", {3}), u64);
  EXPECT_EQ(f.read_int64("/ints/i16", {2}), (std::vector<int64_t>{-3, 4}));
  EXPECT_EQ(f.read_strings("/strs/vlen", {kAny}), strs);
  EXPECT_EQ(f.read_strings("/strs/fixed", {3}), (std::vector<std::string>{"ab", "abcd", ""}));
  EXPECT_TRUE(f.read_strings("/strs/none", {kAny}).empty());
  EXPECT_EQ(f.info("/w/cube").describe(), "float32 [2 x 2 x 2]");
  EXPECT_EQ(f.info("/strs/fixed").describe(), "string(4) [3]");
  EXPECT_EQ(f.info("/w/scalar").describe(), "float32 scalar");
}

TEST(Hdf5Io, GroupsChildrenAndAttributes) {
  TempDir dir;
  const std::string path = dir.file("ckpt.h5");
  {
    File f = File::create(path);
    f.write_string_attr("/", "schema", "mman-checkpoint/1");
    f.write_strings_attr("/", "names", {"x", "yy", "zzz"});
    f.write_int_attr("/", "epoch", -12);
    f.write_uint_attr("/", "rng", std::numeric_limits<uint64_t>::max() - 1);
    f.write_double_attr("/", "loss", 0.125);
    f.create_group("/train_state/adam");
    f.create_group("/train_state/adam");  // idempotent
    f.write_int_attr("/train_state", "step", 300);
    f.write("/train_state/adam/m", std::vector<float>{1, 2});
    f.write("/train_state/adam/v", std::vector<float>{3, 4});
    f.write("/train_state/rng", std::vector<uint64_t>{7});
    f.write_int_attr("/train_state/adam/m", "on_dataset", 5);
    f.write_string_attr("/", "schema", "replaced");  // replacing an attribute
    f.commit();
  }
  const File f = File::open(path);
  EXPECT_EQ(f.read_string_attr("/", "schema"), "replaced");
  EXPECT_EQ(f.read_strings_attr("/", "names"), (std::vector<std::string>{"x", "yy", "zzz"}));
  EXPECT_EQ(f.read_strings_attr("/", "schema"), std::vector<std::string>{"replaced"});
  EXPECT_EQ(f.read_int_attr("/", "epoch"), -12);
  EXPECT_EQ(f.read_uint_attr("/", "rng"), std::numeric_limits<uint64_t>::max() - 1);
  EXPECT_EQ(f.read_double_attr("/", "loss"), 0.125);
  EXPECT_EQ(f.read_double_attr("/", "epoch"), -12.0);  // integers read as doubles
  EXPECT_EQ(f.read_int_attr("/train_state", "step"), 300);
  EXPECT_EQ(f.read_int_attr("/train_state/adam/m", "on_dataset"), 5);
  EXPECT_EQ(f.attr_names("/"), (std::vector<std::string>{"epoch", "loss", "names", "rng", "schema"}));
  EXPECT_TRUE(f.has_attr("/", "loss"));
  EXPECT_FALSE(f.has_attr("/", "nope"));
  EXPECT_FALSE(f.has_attr("/nowhere", "loss"));
  EXPECT_EQ(f.children("/"), std::vector<std::string>{"train_state"});
  EXPECT_EQ(f.children("/train_state"), (std::vector<std::string>{"adam", "rng"}));
  EXPECT_EQ(f.children("/train_state/adam"), (std::vector<std::string>{"m", "v"}));
  EXPECT_TRUE(f.is_group("/train_state/adam"));
  EXPECT_FALSE(f.is_dataset("/train_state/adam"));
  EXPECT_TRUE(f.is_dataset("/train_state/adam/m"));
  EXPECT_TRUE(f.exists("/train_state/adam/m/"));
  EXPECT_FALSE(f.exists("/train_state/adam/m/below_a_dataset"));
  EXPECT_FALSE(f.exists("/missing/deeper"));
  EXPECT_TRUE(f.exists("/"));
}

TEST(Hdf5Io, ReadChecksNameFileTypeShapeAndProblem) {
  TempDir dir;
  const std::string path = dir.file("types.h5");
  {
    File f = File::create(path);
    f.write("/f64", std::vector<double>{1, 2, 3, 4, 5, 6}.data(), {2, 3});
    f.write("/f32", std::vector<float>{1, 2, 3});
    f.write("/big", std::vector<uint64_t>{1, std::numeric_limits<uint64_t>::max()});
    f.write("/neg", std::vector<int32_t>{1, -1});
    f.write_strings("/s", {"a"});
    f.create_group("/g");
    f.write_int_attr("/", "n", 3);
    f.write_strings_attr("/", "two", {"a", "b"});
    f.commit();
  }
  const File f = File::open(path);
  const std::string file = path;
  std::string msg = test::error_message([&] { f.read_float32("/f64", {kAny, 3}); });
  EXPECT_NE(msg.find(file + ": /f64: expected float32 [? x 3], found float64 [2 x 3]"), std::string::npos) << msg;
  msg = test::error_message([&] { f.read_float32("/f32", {kAny, kAny}); });
  EXPECT_NE(msg.find("/f32: expected float32 [? x ?], found float32 [3]"), std::string::npos) << msg;
  msg = test::error_message([&] { f.read_int64("/f32", {kAny}); });
  EXPECT_NE(msg.find("/f32: expected integers [?], found float32 [3]"), std::string::npos) << msg;
  msg = test::error_message([&] { f.read_int64("/big", {kAny}); });
  EXPECT_NE(msg.find("does not fit in int64"), std::string::npos) << msg;
  msg = test::error_message([&] { f.read_uint64("/neg", {kAny}); });
  EXPECT_NE(msg.find("negative value -1"), std::string::npos) << msg;
  msg = test::error_message([&] { f.read_strings("/f32", {kAny}); });
  EXPECT_NE(msg.find("expected strings [?], found float32 [3]"), std::string::npos) << msg;
  msg = test::error_message([&] { f.read_float32("/s", {1}); });
  EXPECT_NE(msg.find("found string [1]"), std::string::npos) << msg;
  msg = test::error_message([&] { f.read_float32("/missing/x", {kAny}); });
  EXPECT_NE(msg.find(file + ": /missing/x: missing dataset"), std::string::npos) << msg;
  msg = test::error_message([&] { f.read_float32("/g", {kAny}); });
  EXPECT_NE(msg.find("/g: expected a dataset, found a group"), std::string::npos) << msg;
  msg = test::error_message([&] { f.children("/f32"); });
  EXPECT_NE(msg.find("/f32: expected a group"), std::string::npos) << msg;
  msg = test::error_message([&] { f.read_string_attr("/", "schema"); });
  EXPECT_NE(msg.find(file + ": / (attribute schema): missing attribute"), std::string::npos) << msg;
  msg = test::error_message([&] { f.read_string_attr("/", "n"); });
  EXPECT_NE(msg.find("/ (attribute n): expected a string, found int64 scalar"), std::string::npos) << msg;
  msg = test::error_message([&] { f.read_string_attr("/", "two"); });
  EXPECT_NE(msg.find("expected one string, found string [2]"), std::string::npos) << msg;
  msg = test::error_message([&] { f.read_int_attr("/", "two"); });
  EXPECT_NE(msg.find("expected an integer"), std::string::npos) << msg;
  msg = test::error_message([&] { f.read_float32_into("/f32", {4}, nullptr); });
  EXPECT_NE(msg.find("expected float32 [4], found float32 [3]"), std::string::npos) << msg;
}

TEST(Hdf5Io, ErrorsPrintNothingFromHdf5) {
  TempDir dir;
  const std::string path = dir.file("q.h5");
  {
    File f = File::create(path);
    f.write("/x", std::vector<float>{1});
    f.commit();
  }
  testing::internal::CaptureStderr();
  const File f = File::open(path);
  EXPECT_THROW(f.read_float32("/nope", {kAny}), Error);
  EXPECT_THROW(f.read_string_attr("/x", "nope"), Error);
  EXPECT_THROW(f.children("/nope"), Error);
  EXPECT_THROW(File::open(dir.file("missing.h5")), Error);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

TEST(Hdf5Io, WritingIsAtomic) {
  TempDir dir;
  const std::string path = dir.file("out.h5");
  {
    File f = File::create(path);
    f.write("/x", std::vector<float>{1, 2});
    EXPECT_FALSE(std::filesystem::exists(path));  // only the temporary exists
    ASSERT_EQ(files_in(dir.path()).size(), 1u);
    EXPECT_NE(files_in(dir.path())[0].find("out.h5.tmp"), std::string::npos);
    f.commit();
  }
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"out.h5"});
  {
    // A second write that is abandoned (an error, an exception) leaves the old file intact.
    File f = File::create(path);
    f.write("/x", std::vector<float>{9, 9, 9});
  }
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"out.h5"});
  EXPECT_EQ(File::open(path).read_float32("/x", {kAny}), (std::vector<float>{1, 2}));
  {
    File f = File::create(path);
    f.write("/x", std::vector<float>{3});
    f.commit();
    EXPECT_NE(test::error_message([&] { f.exists("/x"); }).find("closed"), std::string::npos);
  }
  EXPECT_EQ(File::open(path).read_float32("/x", {kAny}), std::vector<float>{3});
}

TEST(Hdf5Io, WriteErrors) {
  TempDir dir;
  std::string msg = test::error_message([&] { File::create(dir.file("no/such/folder/x.h5")); });
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  File f = File::create(dir.file("w.h5"));
  f.write("/x", std::vector<int32_t>{1});
  msg = test::error_message([&] { f.write("/x", std::vector<int32_t>{2}); });
  EXPECT_NE(msg.find("/x: already exists"), std::string::npos) << msg;
  msg = test::error_message([&] { f.write_strings("/s", {std::string("a\0b", 3)}); });
  EXPECT_NE(msg.find("NUL"), std::string::npos) << msg;
  msg = test::error_message([&] { f.write_int_attr("/nope", "a", 1); });
  EXPECT_NE(msg.find("/nope: missing object"), std::string::npos) << msg;
  msg = test::error_message([&] { f.write("relative", std::vector<int32_t>{2}); });
  EXPECT_NE(msg.find("absolute"), std::string::npos) << msg;
  f.commit();
  msg = test::error_message([&] { File::open(dir.file("w.h5")).write("/y", std::vector<int32_t>{2}); });
  EXPECT_NE(msg.find("read-only"), std::string::npos) << msg;
}

TEST(Hdf5Io, EditChangesAFileInPlace) {
  TempDir dir;
  const std::string path = dir.file("e.h5");
  {
    File f = File::create(path);
    f.write("/a", std::vector<float>{1});
    f.write("/b", std::vector<float>{2});
    f.write_string_attr("/", "k", "v");
    f.commit();
  }
  {
    File f = File::edit(path);
    f.remove("/a");
    f.remove_attr("/", "k");
    f.write("/a", std::vector<double>{5});
    f.commit();
  }
  const File f = File::open(path);
  EXPECT_FALSE(f.has_attr("/", "k"));
  EXPECT_EQ(f.info("/a").describe(), "float64 [1]");
  EXPECT_EQ(f.read_float64("/a", {1}), std::vector<double>{5});
}

TEST(Hdf5Io, OpeningBadFilesGivesClearMessages) {
  TempDir dir;
  std::string msg = test::error_message([&] { File::open(dir.file("missing.h5")); });
  EXPECT_NE(msg.find("missing.h5: no such file"), std::string::npos) << msg;

  write_text(dir.file("empty.h5"), "");
  msg = test::error_message([&] { File::open(dir.file("empty.h5")); });
  EXPECT_NE(msg.find("empty.h5: empty file"), std::string::npos) << msg;

  write_text(dir.file("text.h5"), "label,feature\n1,2\n");
  msg = test::error_message([&] { File::open(dir.file("text.h5")); });
  EXPECT_NE(msg.find("text.h5: not an HDF5 file"), std::string::npos) << msg;

  msg = test::error_message([&] { File::open(dir.path()); });
  EXPECT_NE(msg.find("folder"), std::string::npos) << msg;

  const std::string good = dir.file("good.h5");
  {
    File f = File::create(good);
    std::vector<float> big(20000, 1.0f);
    f.write_float32("/x", big.data(), {200, 100});
    f.write_string_attr("/", "schema", "s");
    f.commit();
  }
  const auto size = std::filesystem::file_size(good);
  std::filesystem::copy_file(good, dir.file("cut.h5"));
  std::filesystem::resize_file(dir.file("cut.h5"), size / 2);
  msg = test::error_message([&] {
    const File f = File::open(dir.file("cut.h5"));
    f.read_float32("/x", {kAny, kAny});
  });
  EXPECT_NE(msg.find("cut.h5: "), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

// h5py writes variable-length str, fixed-length bytes ("S") and lists of str as
// attributes; all of them must read as plain strings.
TEST(Hdf5Io, ReadsFilesWrittenByH5py) {
  TempDir dir;
  const std::string path = dir.file("py.h5");
  const std::string script = dir.file("make.py");
  write_text(script,
             "import sys, h5py, numpy as np\n"
             "with h5py.File(sys.argv[1], 'w') as f:\n"
             "    f.attrs['schema'] = 'mman-dataset/1'\n"
             "    f.attrs['names'] = ['hap', 'sad']\n"
             "    f.attrs['fixed'] = np.array([b'ab', b'c'])\n"
             "    f.attrs['epoch'] = np.int32(7)\n"
             "    f.attrs['lr'] = 0.5\n"
             "    f.create_dataset('vlen', data=['x', 'yz', ''], dtype=h5py.string_dtype())\n"
             "    f.create_dataset('fixed', data=np.array([b'abc', b'd', b'']))\n"
             "    f.create_dataset('w', data=np.arange(6, dtype=np.float32).reshape(2, 3))\n"
             "    f.create_dataset('i', data=np.array([1, -2], dtype=np.int8))\n");
  const test::CommandResult r = test::run_command(test::python_binary() + " " + script + " " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const File f = File::open(path);
  EXPECT_EQ(f.read_string_attr("/", "schema"), "mman-dataset/1");
  EXPECT_EQ(f.read_strings_attr("/", "names"), (std::vector<std::string>{"hap", "sad"}));
  EXPECT_EQ(f.read_strings_attr("/", "fixed"), (std::vector<std::string>{"ab", "c"}));
  EXPECT_EQ(f.read_int_attr("/", "epoch"), 7);
  EXPECT_EQ(f.read_double_attr("/", "lr"), 0.5);
  EXPECT_EQ(f.read_strings("/vlen", {kAny}), (std::vector<std::string>{"x", "yz", ""}));
  EXPECT_EQ(f.read_strings("/fixed", {kAny}), (std::vector<std::string>{"abc", "d", ""}));
  EXPECT_EQ(f.read_float32("/w", {2, 3}), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(f.read_int64("/i", {2}), (std::vector<int64_t>{1, -2}));
}

// And h5py reads what we write.
TEST(Hdf5Io, H5pyReadsOurFiles) {
  TempDir dir;
  const std::string path = dir.file("ours.h5");
  {
    File f = File::create(path);
    f.write_string_attr("/", "schema", "mman-checkpoint/1");
    f.write_strings_attr("/", "names", {"hap", "sad"});
    f.write_float32("/g/w", std::vector<float>{1, 2, 3, 4}.data(), {2, 2});
    f.write_strings("/s", {"héllo", "b"});
    f.commit();
  }
  const std::string script = dir.file("check.py");
  write_text(script,
             "import sys, h5py\n"
             "with h5py.File(sys.argv[1], 'r') as f:\n"
             "    assert f.attrs['schema'] == 'mman-checkpoint/1', f.attrs['schema']\n"
             "    assert list(f.attrs['names']) == ['hap', 'sad'], f.attrs['names']\n"
             "    assert f['g/w'].dtype.str == '<f4' and f['g/w'].shape == (2, 2)\n"
             "    assert f['g/w'][1, 0] == 3\n"
             "    assert [s.decode() for s in f['s'][()]] == ['h\\u00e9llo', 'b']\n"
             "print('ok')\n");
  const test::CommandResult r = test::run_command(test::python_binary() + " " + script + " " + path);
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(Hdf5Io, SameContentGivesIdenticalBytes) {
  TempDir dir;
  for (const char* name : {"a.h5", "b.h5"}) {
    File f = File::create(dir.file(name));
    f.write_string_attr("/", "schema", "s");
    f.write("/g/x", std::vector<float>{1, 2, 3});
    f.write_strings("/g/h/s", {"a", "b"});
    f.commit();
    if (std::string(name) == "a.h5") sleep(1);  // timestamps (when recorded) have a 1 s resolution
  }
  EXPECT_EQ(read_bytes(dir.file("a.h5")), read_bytes(dir.file("b.h5")));
}

// ---- probe(): reads in a child process turn HDF5 crashes and hangs into errors ---------

TEST(Hdf5Probe, ReturnsWhenTheReadSucceedsAndRunsItInAChild) {
  TempDir dir;
  const std::string path = dir.file("p.h5");
  {
    File f = File::create(path);
    f.write("/x", std::vector<float>{1});
    f.commit();
  }
  int touched = 0;
  h5::probe(path, [&] {
    File::open(path).read_float32("/x", {1});
    touched = 1;  // in the child's copy of memory only
  });
  EXPECT_EQ(touched, 0);
}

TEST(Hdf5Probe, RethrowsTheChildsError) {
  TempDir dir;
  const std::string path = dir.file("p.h5");
  {
    File f = File::create(path);
    f.write("/x", std::vector<float>{1});
    f.commit();
  }
  const std::string msg = test::error_message([&] { h5::probe(path, [&] { File::open(path).read_float32("/y", {1}); }); });
  EXPECT_EQ(msg, path + ": /y: missing dataset");
}

TEST(Hdf5Probe, ACrashBecomesAnErrorNamingTheLastPath) {
  TempDir dir;
  const std::string path = dir.file("p.h5");
  {
    File f = File::create(path);
    f.write("/x", std::vector<float>{1});
    f.write_strings("/names", {"a"});
    f.commit();
  }
  const std::string msg = test::error_message([&] {
    h5::probe(path, [&] {
      const File f = File::open(path);
      f.read_float32("/x", {1});
      f.read_strings("/names", {1});
      std::raise(SIGSEGV);  // stands in for HDF5 crashing on damaged data
    });
  });
  EXPECT_NE(msg.find(path + ": /names: damaged HDF5 file: reading it crashed the HDF5 library"), std::string::npos)
      << msg;
}

TEST(Hdf5Probe, AHangBecomesAnErrorAfterTheTimeout) {
  TempDir dir;
  const std::string path = dir.file("p.h5");
  {
    File f = File::create(path);
    f.write("/x", std::vector<float>{1});
    f.commit();
  }
  const std::string msg = test::error_message([&] {
    h5::probe(
        path,
        [&] {
          File::open(path).read_float32("/x", {1});
          while (true) pause();
        },
        0.5);
  });
  EXPECT_NE(msg.find(path + ": /x: reading did not finish within"), std::string::npos) << msg;
}

}  // namespace
}  // namespace mman
