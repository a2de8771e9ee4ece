// The helper-thread pool behind parallel_chunks(): claim-based chunks, brief spin, then sleep.
#include "src/core/parallel.h"

#include <omp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "mman/threads.h"

namespace mman::detail {
namespace {

thread_local bool t_in_chunk = false;

// How long an idle thread polls before it sleeps: back-to-back loops of one training
// step (a few microseconds apart) find the helpers awake, while a helper with nothing to
// do gives its core back almost at once on a machine with other work.
constexpr std::chrono::microseconds kSpin{20};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// state_ packs the loop's generation (high 32 bits) and the next unclaimed chunk (low
// 32 bits, kClosed while the loop is being described): a claim is one compare-and-swap
// that fails once a newer loop was posted, so a helper can never run a chunk of a loop
// other than the one it claimed from. The loop's description (fn_, ctx_, count_) is
// rewritten only after every chunk of the previous loop has finished and while the new
// generation is closed, and a helper reads fn_ and ctx_ only after a successful claim.
constexpr uint32_t kClosed = 0xFFFFFFFFu;
class Pool {
 public:
  static Pool& get() {
    static Pool* pool = new Pool();  // never destroyed: helpers may outlive static destructors
    return *pool;
  }

  void run(int count, void (*fn)(void*, int), void* ctx, int helpers) {
    ensure_helpers(helpers);
    // The new generation is published closed first: a helper still in the previous loop
    // then fails its claim (generation changed) instead of claiming a chunk index against
    // the new count before the new loop is described.
    const uint32_t gen = ++gen_;
    state_.store(static_cast<uint64_t>(gen) << 32 | kClosed, std::memory_order_release);
    fn_.store(fn, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    count_.store(count, std::memory_order_relaxed);
    helpers_.store(helpers, std::memory_order_relaxed);
    remaining_.store(count, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      state_.store(static_cast<uint64_t>(gen) << 32, std::memory_order_release);
    }
    work_cv_.notify_all();
    work_through(gen);
    // Wait only for chunks that helpers have claimed and not finished.
    const auto until = std::chrono::steady_clock::now() + kSpin;
    while (remaining_.load(std::memory_order_acquire) > 0 && std::chrono::steady_clock::now() < until)
      cpu_relax();
    if (remaining_.load(std::memory_order_acquire) > 0) {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, [&] { return remaining_.load(std::memory_order_acquire) == 0; });
    }
  }

 private:
  Pool() = default;

  // Claims and runs chunks of loop `gen` until none is left.
  void work_through(uint32_t gen) {
    // OpenMP regions inside a chunk run on this thread alone: the other threads are busy
    // with the other chunks (the team size is a per-thread setting, restored below).
    const int omp_threads = omp_get_max_threads();
    omp_set_num_threads(1);
    t_in_chunk = true;
    for (;;) {
      uint64_t s = state_.load(std::memory_order_acquire);
      if (static_cast<uint32_t>(s >> 32) != gen) break;
      const uint32_t next = static_cast<uint32_t>(s);
      if (next == kClosed) {  // the loop is being described: it opens in a moment
        cpu_relax();
        continue;
      }
      if (next >= static_cast<uint32_t>(count_.load(std::memory_order_relaxed))) break;
      if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire))
        continue;
      fn_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), static_cast<int>(next));
      if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mu_);
        done_cv_.notify_all();
      }
    }
    t_in_chunk = false;
    omp_set_num_threads(omp_threads);
  }

  void ensure_helpers(int helpers) {
    while (static_cast<int>(threads_.size()) < helpers) {
      const int index = static_cast<int>(threads_.size());
      threads_.emplace_back([this, index] { helper_main(index); });
      threads_.back().detach();
    }
  }

  void helper_main(int index) {
    uint32_t seen = 0;
    for (;;) {
      // Poll briefly for the next loop, then sleep until one is posted.
      uint32_t gen = static_cast<uint32_t>(state_.load(std::memory_order_acquire) >> 32);
      const auto until = std::chrono::steady_clock::now() + kSpin;
      while (gen == seen && std::chrono::steady_clock::now() < until) {
        cpu_relax();
        gen = static_cast<uint32_t>(state_.load(std::memory_order_acquire) >> 32);
      }
      if (gen == seen) {
        std::unique_lock<std::mutex> lock(mu_);
        work_cv_.wait(lock, [&] {
          return static_cast<uint32_t>(state_.load(std::memory_order_acquire) >> 32) != seen;
        });
        gen = static_cast<uint32_t>(state_.load(std::memory_order_acquire) >> 32);
      }
      seen = gen;
      // Only as many helpers as the caller's thread count allows take part.
      if (index < helpers_.load(std::memory_order_relaxed)) work_through(gen);
    }
  }

  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::vector<std::thread> threads_;  // only touched by the (single) running caller
  std::atomic<uint64_t> state_{0};
  std::atomic<void (*)(void*, int)> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int> count_{0};
  std::atomic<int> helpers_{0};
  std::atomic<int> remaining_{0};
  uint32_t gen_ = 0;
};

std::atomic<bool> g_pool_busy{false};

}  // namespace

bool in_parallel_chunk() { return t_in_chunk; }

void parallel_chunks_impl(int count, void (*fn)(void*, int), void* ctx) {
  if (count <= 0) return;
  if (count == 1 && !t_in_chunk) {  // nothing to share: the one chunk may use the threads itself
    fn(ctx, 0);
    return;
  }
  const int threads = omp_in_parallel() ? 1 : num_threads();
  const int helpers = std::min(threads - 1, count - 1);
  bool expected = false;
  if (helpers <= 0 || t_in_chunk || !g_pool_busy.compare_exchange_strong(expected, true)) {
    const bool outer = t_in_chunk;
    t_in_chunk = true;
    for (int i = 0; i < count; ++i) fn(ctx, i);
    t_in_chunk = outer;
    return;
  }
  Pool::get().run(count, fn, ctx, helpers);
  g_pool_busy.store(false, std::memory_order_release);
}

}  // namespace mman::detail
