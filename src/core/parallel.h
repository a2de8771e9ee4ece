// parallel_chunks: dynamically claimed parallel loops whose caller never waits for a thread that has not
// started.
#pragma once
#include <type_traits>
#include <utility>

namespace mman::detail {

// Runs body(i) for every i in [0, count), on the calling thread and on up to
// num_threads() - 1 pooled helper threads, and returns when all are done.
//
// Why not an OpenMP loop: an OpenMP region ends at a barrier that every thread of the
// team must reach, so on cores shared with other work (a busy workstation, a CI runner)
// each region waits for its slowest thread to be scheduled at all, and a spinning
// barrier takes the core from the thread doing the work. Here chunks are claimed one at
// a time from a shared counter: the caller works through the chunks itself and waits only
// for chunks a helper has already claimed; a helper that wakes late finds nothing left.
// On idle cores helpers join within microseconds and the loop runs on every thread.
//
// Which thread runs a chunk varies from run to run, so body(i) must give the same result
// wherever it runs (write only its own outputs, no shared reductions); it must not
// throw. Nested calls (from inside a chunk) and calls while another thread uses the pool
// run serially on the calling thread.
void parallel_chunks_impl(int count, void (*fn)(void*, int), void* ctx);

template <typename F>
void parallel_chunks(int count, F&& body) {
  parallel_chunks_impl(
      count, [](void* ctx, int i) { (*static_cast<std::remove_reference_t<F>*>(ctx))(i); },
      const_cast<void*>(static_cast<const void*>(&body)));
}

// True on a thread while it runs a chunk (callers then keep their own work serial).
bool in_parallel_chunk();

}  // namespace mman::detail
