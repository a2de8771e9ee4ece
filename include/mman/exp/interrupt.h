// Graceful interruption: SIGINT/SIGTERM set a flag that long work polls between batches.
#pragma once

namespace mman {

// Installs handlers for SIGINT and SIGTERM that only record the signal (async-signal
// safe). A second signal of the same kind while the first is being honoured restores
// the default action and re-raises, so a stuck program can still be killed with a
// second Ctrl-C.
void install_interrupt_handlers();
// The signal received (SIGINT or SIGTERM) or 0.
int interrupt_signal();
bool interrupt_requested();
// For tests: forget a received signal.
void clear_interrupt();

}  // namespace mman
