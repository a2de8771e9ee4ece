// SIGINT/SIGTERM handling that defers to the training loop's next safe point.
#include "mman/exp/interrupt.h"

#include <csignal>

namespace mman {
namespace {

volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_interrupt(int sig) {
  if (g_signal != 0) {  // second signal: give up waiting for the safe point
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_signal = sig;
}

}  // namespace

void install_interrupt_handlers() {
  struct sigaction action {};
  action.sa_handler = on_interrupt;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: blocking reads return EINTR promptly
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

int interrupt_signal() { return static_cast<int>(g_signal); }
bool interrupt_requested() { return g_signal != 0; }
void clear_interrupt() { g_signal = 0; }

}  // namespace mman
