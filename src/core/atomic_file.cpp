// write_file_atomic and ensure_writable_dir: the file-system half of "never lose work".
#include "mman/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "mman/error.h"

namespace mman {

void write_file_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp-" + std::to_string(getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("{}: cannot write: {}", path, std::strerror(errno));
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail("{}: cannot write: {}", path, std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("{}: cannot write: {}", path, std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("{}: cannot write: {}", path, std::strerror(err));
  }
}

std::vector<std::string> remove_stale_temporaries(const std::string& folder) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(folder, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const std::string name = it->path().filename().string();
    const size_t at = name.rfind(".tmp-");
    if (at == std::string::npos) continue;
    // The writer's pid follows ".tmp-" (then "-<n>" for HDF5 files, or nothing).
    const std::string rest = name.substr(at + 5);
    const size_t digits = rest.find_first_not_of("0123456789");
    const size_t length = digits == std::string::npos ? rest.size() : digits;
    if (length == 0 || length > 9 || (digits != std::string::npos && rest[digits] != '-')) continue;
    const long pid = std::stol(rest.substr(0, digits));
    if (pid <= 0 || pid == static_cast<long>(::getpid()) || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH)
      continue;  // ours, alive, or not ours to judge
    if (std::filesystem::remove(it->path(), ec)) removed.push_back(it->path().string());
  }
  return removed;
}

void ensure_writable_dir(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) fail("{}: cannot create the folder: {}", path, ec.message());
  if (!std::filesystem::is_directory(path)) fail("{}: exists and is not a folder", path);
  if (::access(path.c_str(), W_OK | X_OK) != 0) fail("{}: the folder is not writable: {}", path, std::strerror(errno));
}

}  // namespace mman
