// RunLock: one process per run directory, a clear message naming the holder, no stale locks.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "mman/error.h"
#include "mman/exp/run_lock.h"
#include "support/test_support.h"

namespace mman {
namespace {

TEST(RunLock, ASecondHolderIsRefusedWithThePidOfTheFirst) {
  test::TempDir dir;
  {
    const RunLock first(dir.path());
    const std::string message = test::error_message([&] { RunLock second(dir.path()); });
    EXPECT_EQ(message, dir.path() + ": another mman_exp process (pid " + std::to_string(getpid()) +
                           ") is using this run directory; wait for it to finish or stop it (Ctrl-C), then continue "
                           "with --resume");
  }
  // Released with its holder: the directory can be locked again.
  EXPECT_NO_THROW({ const RunLock again(dir.path()); });
}

// A process that dies holding the lock (here: _exit without destructors, as SIGKILL) leaves no
// stale lock behind.
TEST(RunLock, TheLockDiesWithItsProcess) {
  test::TempDir dir;
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    new RunLock(dir.path());  // never destroyed
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_NO_THROW({ const RunLock mine(dir.path()); });
}

TEST(RunLock, AnUnwritableDirectoryIsAClearError) {
  const std::string message = test::error_message([] { RunLock lock("/nonexistent/run"); });
  EXPECT_EQ(message.rfind("/nonexistent/run/run.lock: cannot open the run directory's lock file: ", 0), 0u)
      << message;
}

}  // namespace
}  // namespace mman
