// mman::Error, the one exception for bad input and failed checks, and the MMAN_CHECK macro.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace mman {

// Thrown for anything a user can cause (bad config, data file, checkpoint, argument) and
// for violated shape contracts. The message is complete and printable as one line: it
// names the file / key / dataset and the problem. The CLI prints it and exits non-zero.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace mman

// Validate a contract in device-neutral code before dispatching to a backend.
#define MMAN_CHECK(cond, ...)          \
  do {                                 \
    if (!(cond)) ::mman::fail(__VA_ARGS__); \
  } while (0)
