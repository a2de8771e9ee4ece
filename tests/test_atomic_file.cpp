// write_file_atomic and ensure_writable_dir: whole files or clear errors, never partial output.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mman/atomic_file.h"
#include "mman/error.h"
#include "support/test_support.h"

namespace mman {
namespace {

TEST(AtomicFile, WritesAndReplacesWholeFiles) {
  test::TempDir dir;
  const std::string path = dir.file("a.txt");
  write_file_atomic(path, "first");
  EXPECT_EQ(test::read_file(path), "first");
  write_file_atomic(path, "second, longer");
  EXPECT_EQ(test::read_file(path), "second, longer");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator()), 1);
}

TEST(AtomicFile, UnwritableFolderIsAClearErrorAndLeavesNothing) {
  if (geteuid() == 0) {
    // root ignores permission bits; use a path whose parent is a regular file instead.
    test::TempDir dir;
    write_file_atomic(dir.file("file"), "x");
    try {
      write_file_atomic(dir.file("file/a.txt"), "y");
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("file/a.txt: cannot write"), std::string::npos) << e.what();
    }
    return;
  }
  test::TempDir dir;
  chmod(dir.path().c_str(), 0500);
  EXPECT_THROW(write_file_atomic(dir.file("a.txt"), "x"), Error);
  chmod(dir.path().c_str(), 0700);
}

TEST(AtomicFile, FullDiskKeepsTheOldFileAndRemovesTheTemporary) {
  test::TempDir dir;
  const std::string path = dir.file("big.txt");
  write_file_atomic(path, "old");
  // Simulate a full disk with a file-size limit, in a child so the limit stays there.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::signal(SIGXFSZ, SIG_IGN);  // make write() fail with EFBIG instead of killing us
    rlimit lim{1024, 1024};
    setrlimit(RLIMIT_FSIZE, &lim);
    try {
      write_file_atomic(path, std::string(1 << 20, 'x'));
    } catch (const Error& e) {
      _exit(std::string(e.what()).find("cannot write") != std::string::npos ? 42 : 1);
    }
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 42);
  EXPECT_EQ(test::read_file(path), "old");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator()), 1);
}

TEST(AtomicFile, EnsureWritableDirCreatesParentsAndRejectsFiles) {
  test::TempDir dir;
  ensure_writable_dir(dir.file("a/b/c"));
  EXPECT_TRUE(std::filesystem::is_directory(dir.file("a/b/c")));
  write_file_atomic(dir.file("f"), "x");
  EXPECT_THROW(ensure_writable_dir(dir.file("f")), Error);
}

}  // namespace
}  // namespace mman
