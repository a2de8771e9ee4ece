// RunLock: an flock on <run dir>/run.lock naming its owner's pid.
#include "mman/exp/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "mman/error.h"

namespace mman {

RunLock::RunLock(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "run.lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);  // not inherited by plot_run.py
  if (fd_ < 0) fail("{}: cannot open the run directory's lock file: {}", path, std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof(buf) - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err != EWOULDBLOCK) fail("{}: cannot lock the run directory: {}", path, std::strerror(err));
    std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("unknown");
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    fail("{}: another mman_exp process (pid {}) is using this run directory; wait for it to finish or stop it "
         "(Ctrl-C), then continue with --resume",
         dir, pid);
  }
  const std::string me = std::to_string(::getpid()) + "\n";
  // Best effort: the pid is for the message only; the lock itself is what excludes.
  if (::ftruncate(fd_, 0) == 0) {
    const ssize_t written = ::pwrite(fd_, me.data(), me.size(), 0);
    (void)written;
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

}  // namespace mman
