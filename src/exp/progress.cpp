// Progress: live terminal line or plain lines, with elapsed and remaining time.
#include "mman/exp/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>

namespace mman {

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "?";
  if (seconds < 60) return fmt::format("{:.1f}s", seconds);
  const long s = std::lround(seconds);
  if (s < 3600) return fmt::format("{}m{:02d}s", s / 60, static_cast<int>(s % 60));
  return fmt::format("{}h{:02d}m", s / 3600, static_cast<int>((s % 3600) / 60));
}

Progress::Progress(std::string title, int total, std::FILE* out)
    : title_(std::move(title)),
      total_(total),
      out_(out),
      terminal_(isatty(fileno(out)) != 0),
      start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() { finish(); }

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int done, const std::string& status) {
  if (!terminal_) return;
  const double elapsed = elapsed_seconds();
  const double remaining = done > 0 ? elapsed / done * (total_ - done) : -1.0;
  fmt::print(out_, "\r\033[K{} [{}/{}] {} | {} elapsed, ~{} left", title_, done, total_, status,
             format_duration(elapsed), done > 0 ? format_duration(remaining) : std::string("?"));
  std::fflush(out_);
  live_ = true;
}

void Progress::line(const std::string& text) {
  if (live_) fmt::print(out_, "\r\033[K");
  live_ = false;
  fmt::print(out_, "{}\n", text);
  std::fflush(out_);
}

void Progress::finish() {
  if (!live_) return;
  fmt::print(out_, "\n");
  std::fflush(out_);
  live_ = false;
}

}  // namespace mman
