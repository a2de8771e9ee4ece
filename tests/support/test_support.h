// Small helpers shared by the test executables: temporary folders and running commands.
#pragma once
#include <string>

#include "mman/error.h"

namespace mman::test {

// A fresh folder under the system temp dir, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;    // -1 when killed by a signal
  int signal = 0;        // the signal, when killed by one
  std::string output;    // stdout and stderr together
};
// Runs a shell command line and captures its output.
CommandResult run_command(const std::string& command_line);

// The message of the mman::Error that f() throws, or "" when it throws none.
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The whole content of a file ("" when it cannot be read).
std::string read_file(const std::string& path);

// Path of the built mman_exp and Debian's python3 (with torch, h5py, numpy).
std::string mman_exp_binary();
std::string python_binary();

}  // namespace mman::test
