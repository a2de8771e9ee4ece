// parallel_chunks: every chunk exactly once, on several threads, nested and concurrent callers, many loops in
// a row.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "mman/threads.h"
#include "src/core/parallel.h"

namespace mman {
namespace {

TEST(ParallelChunks, RunsEveryChunkExactlyOnceForAnyThreadCount) {
  for (int threads : {1, 2, 4}) {
    set_num_threads(threads);
    for (int count : {0, 1, 2, 3, 7, 64, 1000}) {
      std::vector<std::atomic<int>> runs(static_cast<size_t>(count));
      detail::parallel_chunks(count, [&](int i) { runs[static_cast<size_t>(i)].fetch_add(1); });
      for (int i = 0; i < count; ++i)
        ASSERT_EQ(runs[static_cast<size_t>(i)].load(), 1) << threads << " " << count;
    }
  }
  set_num_threads(0);
}

TEST(ParallelChunks, UsesHelperThreadsAndNeverMoreThanAsked) {
  set_num_threads(2);
  std::mutex mu;
  std::set<std::thread::id> seen;
  std::atomic<int> inside{0}, most{0};
  // Each chunk waits (up to 10 s, however busy the machine) until two threads have been
  // seen, so the caller cannot finish the loop alone: the helper must take chunks.
  detail::parallel_chunks(8, [&](int) {
    const int now = inside.fetch_add(1) + 1;
    int m = most.load();
    while (now > m && !most.compare_exchange_weak(m, now)) {
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      seen.insert(std::this_thread::get_id());
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (seen.size() >= 2) break;
      }
      if (std::chrono::steady_clock::now() > until) break;
      std::this_thread::yield();
    }
    inside.fetch_sub(1);
  });
  EXPECT_EQ(seen.size(), 2u) << "no helper thread ran a chunk within 10 s";
  EXPECT_LE(most.load(), 2);
  set_num_threads(0);
}

TEST(ParallelChunks, NestedAndConcurrentCallersRunSerially) {
  set_num_threads(2);
  std::atomic<int> total{0};
  detail::parallel_chunks(4, [&](int) {
    EXPECT_TRUE(detail::in_parallel_chunk());
    detail::parallel_chunks(5, [&](int) { total.fetch_add(1); });  // nested: on this thread
  });
  EXPECT_EQ(total.load(), 20);
  EXPECT_FALSE(detail::in_parallel_chunk());

  // Two application threads at once: one gets the helpers, the other runs on its own.
  std::atomic<int> a{0}, b{0};
  std::thread other([&] {
    for (int rep = 0; rep < 200; ++rep) detail::parallel_chunks(16, [&](int) { a.fetch_add(1); });
  });
  for (int rep = 0; rep < 200; ++rep) detail::parallel_chunks(16, [&](int) { b.fetch_add(1); });
  other.join();
  EXPECT_EQ(a.load(), 3200);
  EXPECT_EQ(b.load(), 3200);
  set_num_threads(0);
}

// Many short loops back to back (a training step runs hundreds): no lost or repeated
// chunk, no deadlock when helpers wake late or not at all.
TEST(ParallelChunks, ManyShortLoopsInARow) {
  set_num_threads(2);
  long expected = 0;
  std::atomic<long> sum{0};
  for (int rep = 0; rep < 20000; ++rep) {
    const int count = 1 + rep % 5;
    expected += static_cast<long>(count) * (count - 1) / 2;
    detail::parallel_chunks(count, [&](int i) { sum.fetch_add(i); });
  }
  EXPECT_EQ(sum.load(), expected);
  set_num_threads(0);
}

}  // namespace
}  // namespace mman
