// Progress reporting: a live, rewritten line on a terminal; plain log lines otherwise.
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

namespace mman {

// One unit of long work (e.g. "stage 1 clstm_speech seed 0", `total` epochs). On a
// terminal update() redraws one line in place (epoch, loss, validation accuracy,
// elapsed and estimated remaining time); on a pipe or file it prints nothing until
// line(), which always prints a complete line, so logs stay clean.
class Progress {
 public:
  Progress(std::string title, int total, std::FILE* out = stderr);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `done` units finished, `status` e.g. "loss 1.234 valid 61.2%".
  void update(int done, const std::string& status);
  // A permanent line (clears a live line first).
  void line(const std::string& text);
  // Finishes the live line, if any.
  void finish();

  bool is_terminal() const { return terminal_; }
  double elapsed_seconds() const;

 private:
  std::string title_;
  int total_;
  std::FILE* out_;
  bool terminal_;
  bool live_ = false;
  std::chrono::steady_clock::time_point start_;
};

// "1h02m", "3m05s", "12.3s".
std::string format_duration(double seconds);

}  // namespace mman
