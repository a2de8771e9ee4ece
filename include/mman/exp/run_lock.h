// RunLock: at most one mman_exp process per run directory.
#pragma once
#include <string>

namespace mman {

// An exclusive advisory lock (flock) on `<dir>/run.lock`, held by the object. The kernel drops
// it when the process ends in any way (SIGKILL and power loss included), so a stale lock never
// blocks a resume. The file holds the owner's pid, for the message a second process gets:
//   "<dir>: another mman_exp process (pid N) is using this run directory; wait for it to finish
//    or stop it (Ctrl-C), then continue with --resume"
// The file stays after unlocking (removing it would race with a process about to lock it).
class RunLock {
 public:
  // Throws mman::Error when another process holds the lock or the file cannot be opened.
  explicit RunLock(const std::string& dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace mman
