// Host execution of CUDA kernel source: one cooperative ucontext fiber per thread, a block at a
// time, with real barrier and warp-shuffle semantics, poisoned shared memory, varied schedules
// and a shared-memory race detector (docs/simt.md).
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "mman/error.h"
#include "mman/rng.h"
#include "mman/simt/host.h"

#if defined(__SANITIZE_ADDRESS__)
#define MMAN_SIMT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MMAN_SIMT_ASAN 1
#endif
#endif
#if defined(MMAN_SIMT_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace mman::simt {

using device::dim3;
using device::uint3;

namespace {

constexpr size_t kSharedLimit = 48 * 1024;  // static + dynamic shared memory a block gets by default
constexpr int kWarp = 32;
constexpr int32_t kManyThreads = -2;  // shadow: more than one thread read / used atomics
constexpr unsigned char kPoison = 0xFF;  // NaN as float, double, half, bfloat16; -1 as a signed integer
constexpr unsigned long long kMaxBlocks = 1ull << 24;  // beyond this the emulation is pointless anyway
#if defined(MMAN_SIMT_ASAN)
constexpr size_t kDefaultStack = 256 * 1024;  // instrumented frames are larger
#else
constexpr size_t kDefaultStack = 64 * 1024;
#endif

thread_local EmulationOptions t_options;

enum class State { Runnable, AtBarrier, AtShuffle, Done, Failed };

struct Fiber {
  ucontext_t context{};
  unsigned char* stack = nullptr;
  size_t stack_size = 0;
  uint3 idx{};
  State state = State::Runnable;
  const char* file = "";  // the barrier or shuffle it waits at
  int line = 0;
  detail::ShuffleMode mode{};
  uint64_t value = 0, result = 0;
  int source = 0;              // the thread whose shuffle payload this lane receives
  void* fake_stack = nullptr;  // ASan's fake stack of this fiber while it is switched out
  std::string error;
};

// Per byte of the block's shared memory: who last wrote, read, or used atomics, and in which
// barrier interval ("epoch", 0 = never in this block).
struct Shadow {
  uint32_t write_epoch = 0, read_epoch = 0, atomic_epoch = 0;
  int32_t writer = -1, reader = -1, atomic_user = -1;
};

struct Allocation : detail::SharedAllocation {
  const void* tag;
};

// A kernel fault found while a thread runs: the message is complete, with kernel, block, thread.
class KernelFault : public Error {
 public:
  using Error::Error;
};

const char* base_name(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

std::string dims(uint3 v) { return fmt::format("({},{},{})", v.x, v.y, v.z); }
std::string dims(dim3 v) { return fmt::format("({},{},{})", v.x, v.y, v.z); }

// The kernel's name from MMAN_LAUNCH's argument text: up to the first comma outside <>.
std::string kernel_name(const char* expression) {
  std::string name;
  int depth = 0;
  for (const char* c = expression; *c; ++c) {
    if (*c == '<') ++depth;
    if (*c == '>') --depth;
    if (*c == ',' && depth <= 0) break;
    name += *c;
  }
  return name;
}

struct Launch {
  std::string kernel;
  LaunchSite site{};
  LaunchConfig config;
  detail::KernelBody body{};
  EmulationOptions options;
  int threads = 0;
  std::vector<Fiber> fibers;
  unsigned char* stacks = nullptr;
  size_t stacks_bytes = 0;
  ucontext_t scheduler{};
  const void* scheduler_stack = nullptr;  // ASan: the OS thread's stack, learnt on the first switch
  size_t scheduler_stack_size = 0;
  Fiber* current = nullptr;
  Rng rng;
  uint3 block{};
  uint32_t epoch = 0;
  const char* epoch_file = nullptr;  // the barrier that opened the current epoch
  int epoch_line = 0;
  std::unique_ptr<unsigned char[]> arena;
  size_t dynamic_bytes = 0, used = 0, shadow_dirty = 0;
  std::vector<Shadow> shadow;
  std::deque<Allocation> allocations;  // a deque: SharedPtrs point at its elements
  std::vector<int> warp_arrived;
  std::deque<int> ready;

  ~Launch() {
    if (!stacks) return;
#if defined(MMAN_SIMT_ASAN)
    // Fibers abandoned after a fault leave poisoned frames behind.
    __asan_unpoison_memory_region(stacks, stacks_bytes);
#endif
    munmap(stacks, stacks_bytes);
  }

  int thread_id(const Fiber& f) const { return static_cast<int>(&f - fibers.data()); }
  std::string context() const {
    return fmt::format("simt: kernel `{}` (launched at {}:{}), block {}", kernel, base_name(site.file), site.line,
                       dims(block));
  }
  std::string since() const {
    return epoch_file ? fmt::format("since the __syncthreads() at {}:{}", base_name(epoch_file), epoch_line)
                      : std::string("since the block started");
  }
};

thread_local Launch* t_launch = nullptr;

Launch& active(const char* what) {
  if (!t_launch || !t_launch->current) fail("simt: {} used outside a kernel launched with MMAN_LAUNCH", what);
  return *t_launch;
}

template <class... Args>
[[noreturn]] void kernel_fault(const Launch& l, fmt::format_string<Args...> format, Args&&... args) {
  throw KernelFault(fmt::format("{}, thread {}: {}", l.context(), dims(l.current->idx),
                                fmt::format(format, std::forward<Args>(args)...)));
}

// ---- fiber switching (with AddressSanitizer's fiber annotations) ----

void asan_start_switch(void** fake_stack_save, const void* bottom, size_t size) {
#if defined(MMAN_SIMT_ASAN)
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
  (void)fake_stack_save, (void)bottom, (void)size;
#endif
}
void asan_finish_switch(void* fake_stack, const void** old_bottom, size_t* old_size) {
#if defined(MMAN_SIMT_ASAN)
  __sanitizer_finish_switch_fiber(fake_stack, old_bottom, old_size);
#else
  (void)fake_stack, (void)old_bottom, (void)old_size;
#endif
}

void fiber_main() {
  Launch& l = *t_launch;
  Fiber& f = *l.current;
  asan_finish_switch(nullptr, &l.scheduler_stack, &l.scheduler_stack_size);
  try {
    l.body.invoke(l.body.closure);
    f.state = State::Done;
  } catch (const KernelFault& e) {
    f.error = e.what();
    f.state = State::Failed;
  } catch (const std::exception& e) {
    f.error = fmt::format("{}, thread {}: {}", l.context(), dims(f.idx), e.what());
    f.state = State::Failed;
  } catch (...) {
    f.error = fmt::format("{}, thread {}: unknown exception", l.context(), dims(f.idx));
    f.state = State::Failed;
  }
  // Outside the handler (the C++ runtime's caught-exception list is per OS thread). A null
  // fake-stack slot tells ASan this fiber is finished.
  asan_start_switch(nullptr, l.scheduler_stack, l.scheduler_stack_size);
  setcontext(&l.scheduler);
}

// From the scheduler into fiber i, until it waits or finishes.
void switch_to(Launch& l, int i) {
  Fiber& f = l.fibers[i];
  l.current = &f;
  device::threadIdx = f.idx;
  void* fake_stack = nullptr;
  asan_start_switch(&fake_stack, f.stack, f.stack_size);
  if (swapcontext(&l.scheduler, &f.context) != 0) fail("{}: swapcontext failed", l.context());
  asan_finish_switch(fake_stack, nullptr, nullptr);
  l.current = nullptr;
}

// From the running fiber back to the scheduler; returns when the scheduler resumes it.
void yield(Launch& l, Fiber& f) {
  asan_start_switch(&f.fake_stack, l.scheduler_stack, l.scheduler_stack_size);
  swapcontext(&f.context, &l.scheduler);
  asan_finish_switch(f.fake_stack, &l.scheduler_stack, &l.scheduler_stack_size);
}

// ---- scheduling ----

void enqueue(Launch& l, std::vector<int> ids) {
  if (l.options.order == ThreadOrder::Reverse) std::reverse(ids.begin(), ids.end());
  if (l.options.order == ThreadOrder::Shuffled) l.rng.shuffle(ids);
  for (int i : ids) {
    l.fibers[i].state = State::Runnable;
    l.ready.push_back(i);
  }
}

bool same_site(const Fiber& a, const Fiber& b) { return a.line == b.line && std::strcmp(a.file, b.file) == 0; }

// "16 threads wait at __syncthreads() at x.cuh:40, 240 threads exited"
std::string census(const Launch& l) {
  std::map<std::string, int> groups;
  for (const Fiber& f : l.fibers) {
    std::string what;
    switch (f.state) {
      case State::Done: what = "exited"; break;
      case State::AtBarrier: what = fmt::format("wait at __syncthreads() at {}:{}", base_name(f.file), f.line); break;
      case State::AtShuffle: what = fmt::format("wait at a warp shuffle at {}:{}", base_name(f.file), f.line); break;
      default: what = "are runnable"; break;
    }
    ++groups[what];
  }
  std::string out;
  for (const auto& [what, n] : groups) out += fmt::format("{}{} thread{} {}", out.empty() ? "" : ", ", n, n == 1 ? "" : "s", what);
  return out;
}

// The last lane of a warp reached its shuffle: hand every lane its payload and wake them.
void release_warp(Launch& l, int warp) {
  const int first = warp * kWarp;
  for (int i = first; i < first + kWarp; ++i) {
    const Fiber& f = l.fibers[i];
    if (!same_site(f, l.fibers[first]) || f.mode != l.fibers[first].mode)
      fail("{}: divergent warp shuffle in warp {}: the lanes of one full-mask shuffle must all execute the same "
           "call ({})",
           l.context(), warp, census(l));
  }
  for (int i = first; i < first + kWarp; ++i) l.fibers[i].result = l.fibers[l.fibers[i].source].value;
  std::vector<int> lanes(kWarp);
  for (int k = 0; k < kWarp; ++k) lanes[k] = first + k;
  enqueue(l, std::move(lanes));
}

// Kept out of run_block: getcontext "returns twice" as far as the compiler knows, which would
// pessimise (and warn about) every local of the scheduler loop.
[[gnu::noinline]] void prepare_fiber(Launch& l, Fiber& f) {
  f.error.clear();
  f.fake_stack = nullptr;
  if (getcontext(&f.context) != 0) fail("{}: getcontext failed", l.context());
  f.context.uc_stack.ss_sp = f.stack;
  f.context.uc_stack.ss_size = f.stack_size;
  f.context.uc_link = nullptr;  // fibers never return: fiber_main ends with setcontext
  makecontext(&f.context, fiber_main, 0);
}

void run_block(Launch& l, uint3 block) {
  l.block = block;
  device::blockIdx = block;
  std::memset(l.arena.get(), kPoison, kSharedLimit);
  std::fill(l.shadow.begin(), l.shadow.begin() + static_cast<std::ptrdiff_t>(l.shadow_dirty), Shadow{});
  l.allocations.clear();
  l.used = l.dynamic_bytes;
  l.shadow_dirty = l.dynamic_bytes;
  l.epoch = 1;
  l.epoch_file = nullptr;
  std::fill(l.warp_arrived.begin(), l.warp_arrived.end(), 0);
  l.ready.clear();

  std::vector<int> all(l.threads);
  for (int i = 0; i < l.threads; ++i) {
    all[i] = i;
    prepare_fiber(l, l.fibers[i]);
  }
  enqueue(l, all);

  for (;;) {
    while (!l.ready.empty()) {
      const int i = l.ready.front();
      l.ready.pop_front();
      switch_to(l, i);
      Fiber& f = l.fibers[i];
      if (f.state == State::Failed) throw Error(f.error);
      if (f.state == State::AtShuffle && ++l.warp_arrived[i / kWarp] == kWarp) {
        l.warp_arrived[i / kWarp] = 0;
        release_warp(l, i / kWarp);
      }
    }
    // Nobody can run: the block is finished, at a barrier, or stuck.
    int done = 0, at_barrier = 0;
    for (const Fiber& f : l.fibers) {
      done += f.state == State::Done;
      at_barrier += f.state == State::AtBarrier;
    }
    if (done == l.threads) return;
    if (at_barrier == l.threads) {
      for (const Fiber& f : l.fibers)
        if (!same_site(f, l.fibers[0]))
          fail("{}: divergent barrier: the threads reached different __syncthreads() calls ({}); every thread of "
               "a block must reach the same one",
               l.context(), census(l));
      ++l.epoch;
      l.epoch_file = l.fibers[0].file;
      l.epoch_line = l.fibers[0].line;
      enqueue(l, all);
      continue;
    }
    fail("{}: divergent barrier or warp shuffle: the block cannot proceed ({}); every thread of a block must reach each "
         "__syncthreads(), and all 32 lanes each full-mask shuffle",
         l.context(), census(l));
  }
}

void check_config(const Launch& l) {
  const dim3 g = l.config.grid, b = l.config.block;
  const auto bad = [&](const std::string& why) {
    fail("simt: launch of `{}` at {}:{} with grid {} and block {}: {}", l.kernel, base_name(l.site.file),
         l.site.line, dims(g), dims(b), why);
  };
  if (g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0) bad("every dimension must be at least 1");
  if (g.y > 65535 || g.z > 65535 || g.x > 2147483647u) bad("grid dimensions exceed CUDA's (2^31-1, 65535, 65535)");
  if (b.x > 1024 || b.y > 1024 || b.z > 64) bad("block dimensions exceed CUDA's (1024, 1024, 64)");
  if (static_cast<unsigned long long>(b.x) * b.y * b.z > 1024) bad("a block has at most 1024 threads");
  if (static_cast<unsigned long long>(g.x) * g.y * g.z > kMaxBlocks)
    bad(fmt::format("more than {} blocks is beyond the host emulation", kMaxBlocks));
  if (l.config.shared_bytes > kSharedLimit)
    bad(fmt::format("{} bytes of dynamic shared memory exceed the {} a block gets without opting in",
                    l.config.shared_bytes, kSharedLimit));
}

void allocate_stacks(Launch& l) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size_t size = l.options.stack_bytes ? l.options.stack_bytes : kDefaultStack;
  if (size < 16 * 1024)
    fail("simt: fiber stacks of {} bytes for kernel `{}` are too small: use at least 16 KiB", size, l.kernel);
  size = (size + page - 1) / page * page;
  // A guard page below each stack turns an overflow into a SIGSEGV instead of silently
  // overwriting the next fiber's stack.
  const size_t stride = size + page;
  l.stacks_bytes = stride * static_cast<size_t>(l.threads);
  void* p = mmap(nullptr, l.stacks_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) fail("simt: cannot map {} bytes of fiber stacks for kernel `{}`", l.stacks_bytes, l.kernel);
  l.stacks = static_cast<unsigned char*>(p);
  for (int i = 0; i < l.threads; ++i) {
    unsigned char* base = l.stacks + stride * static_cast<size_t>(i);
    if (mprotect(base, page, PROT_NONE) != 0) fail("simt: mprotect of a fiber stack guard page failed");
    l.fibers[i].stack = base + page;
    l.fibers[i].stack_size = size;
  }
}

}  // namespace

// ---- options ----

const EmulationOptions& emulation_options() { return t_options; }

ScopedEmulation::ScopedEmulation(const EmulationOptions& options) : saved_(t_options) { t_options = options; }
ScopedEmulation::~ScopedEmulation() { t_options = saved_; }

std::vector<EmulationOptions> test_schedules() {
  std::vector<EmulationOptions> out;
  for (ThreadOrder order : {ThreadOrder::Forward, ThreadOrder::Reverse}) {
    EmulationOptions o;
    o.order = order;
    out.push_back(o);
  }
  for (uint64_t seed : {1, 2, 3}) {
    EmulationOptions o;
    o.order = ThreadOrder::Shuffled;
    o.seed = seed;
    out.push_back(o);
  }
  return out;
}

std::string describe(const EmulationOptions& o) {
  std::string order = o.order == ThreadOrder::Forward   ? "forward"
                      : o.order == ThreadOrder::Reverse ? "reverse"
                                                        : fmt::format("shuffled(seed {})", o.seed);
  return o.check_shared ? order : order + ", shared checks off";
}

// ---- launch ----

void detail::run_launch(const LaunchSite& site, const LaunchConfig& config, KernelBody body) {
  const std::string kernel = kernel_name(site.expression);
  if (t_launch)
    fail("simt: kernel `{}` launched from inside kernel `{}`: dynamic parallelism is not emulated", kernel,
         t_launch->kernel);
  Launch l;
  l.kernel = kernel;
  l.site = site;
  l.config = config;
  l.body = body;
  l.options = t_options;
  l.rng = Rng(mix64(l.options.seed));
  check_config(l);
  const dim3 g = config.grid, b = config.block;
  l.threads = static_cast<int>(b.x * b.y * b.z);
  l.fibers.resize(static_cast<size_t>(l.threads));
  for (int i = 0; i < l.threads; ++i) {
    const unsigned u = static_cast<unsigned>(i);
    l.fibers[i].idx = uint3{u % b.x, u / b.x % b.y, u / (b.x * b.y)};
  }
  l.warp_arrived.assign(static_cast<size_t>((l.threads + kWarp - 1) / kWarp), 0);
  l.arena.reset(new unsigned char[kSharedLimit]);
  l.shadow.resize(kSharedLimit);
  l.dynamic_bytes = config.shared_bytes;
  allocate_stacks(l);

  t_launch = &l;
  device::gridDim = g;
  device::blockDim = b;
  struct Reset {
    ~Reset() {
      t_launch = nullptr;
      device::threadIdx = device::blockIdx = uint3{};
      device::blockDim = device::gridDim = dim3{};
    }
  } reset;

  const unsigned long long blocks = static_cast<unsigned long long>(g.x) * g.y * g.z;
  std::vector<int> order(blocks);
  for (unsigned long long i = 0; i < blocks; ++i) order[i] = static_cast<int>(i);
  if (l.options.order == ThreadOrder::Reverse) std::reverse(order.begin(), order.end());
  if (l.options.order == ThreadOrder::Shuffled) l.rng.shuffle(order);
  for (int id : order) {
    const unsigned u = static_cast<unsigned>(id);
    run_block(l, uint3{u % g.x, u / g.x % g.y, u / (g.x * g.y)});
  }
}

// ---- device functions ----

void device::__syncthreads(const char* file, int line) {
  Launch& l = active("__syncthreads()");
  Fiber& f = *l.current;
  f.state = State::AtBarrier;
  f.file = file;
  f.line = line;
  yield(l, f);
}

uint64_t detail::shuffle(ShuffleMode mode, unsigned mask, uint64_t bits, int b, int width, const char* file,
                         int line) {
  Launch& l = active("a warp shuffle");
  Fiber& f = *l.current;
  const int tid = l.thread_id(f);
  const int lane = tid % kWarp, warp_first = tid - lane;
  if (mask != 0xFFFFFFFFu)
    kernel_fault(l, "warp shuffle at {}:{} with mask 0x{:08x}: only full-mask shuffles are emulated",
                 base_name(file), line, mask);
  if (width < 1 || width > kWarp || (width & (width - 1)) != 0)
    kernel_fault(l, "warp shuffle at {}:{} with width {}: the width must be a power of two up to 32",
                 base_name(file), line, width);
  if (warp_first + kWarp > l.threads)
    kernel_fault(l,
                 "full-mask warp shuffle at {}:{} in a warp of only {} threads (block of {}): lanes that do not "
                 "exist cannot take part; use a block size that is a multiple of 32",
                 base_name(file), line, l.threads - warp_first, l.threads);
  // PTX ISA, shfl.sync: CUDA passes c = ((32 - width) << 8) | clamp, clamp 0 for up, 31 otherwise.
  const int seg = kWarp - width;
  const int min_lane = lane & seg;
  const int max_lane = min_lane | ((mode == ShuffleMode::Up ? 0 : 31) & ~seg);
  int j = lane;
  bool valid = false;
  switch (mode) {
    case ShuffleMode::Up: j = lane - b; valid = j >= max_lane; break;
    case ShuffleMode::Down: j = lane + b; valid = j <= max_lane; break;
    case ShuffleMode::Xor: j = lane ^ b; valid = j <= max_lane; break;
    case ShuffleMode::Idx: j = min_lane | (b & ~seg & 31); valid = j <= max_lane; break;
  }
  if (!valid) j = lane;
  f.mode = mode;
  f.value = bits;
  f.source = warp_first + j;
  f.file = file;
  f.line = line;
  f.state = State::AtShuffle;
  yield(l, f);
  return f.result;
}

const detail::SharedAllocation& detail::shared_static(const void* tag, const char* name, size_t bytes,
                                                      size_t align) {
  Launch& l = active("a __shared__ declaration");
  for (const Allocation& a : l.allocations)
    if (a.tag == tag) return a;
  align = std::max<size_t>(align, 16);
  const size_t offset = (l.used + align - 1) / align * align;
  if (offset + bytes > kSharedLimit)
    kernel_fault(l, "__shared__ `{}` ({} bytes) does not fit: the block would use {} bytes of shared memory, more "
                    "than the {} a block gets without opting in",
                 name, bytes, offset + bytes, kSharedLimit);
  l.allocations.push_back(Allocation{{name, l.arena.get() + offset, bytes}, tag});
  l.used = offset + bytes;
  l.shadow_dirty = std::max(l.shadow_dirty, l.used);
  return l.allocations.back();
}

const detail::SharedAllocation& detail::shared_dynamic(const char* name) {
  Launch& l = active("extern __shared__ memory");
  for (const Allocation& a : l.allocations)
    if (a.tag == name) return a;  // keyed by the name literal: every declaration aliases offset 0
  l.allocations.push_back(Allocation{{name, l.arena.get(), l.dynamic_bytes}, name});
  return l.allocations.back();
}

void detail::shared_out_of_bounds(const SharedAllocation& a, long long index, size_t element_bytes) {
  const Launch& l = active("shared memory");
  kernel_fault(l, "index {} is out of bounds of shared array `{}` ({} elements of {} bytes)", index, a.name,
               a.bytes / element_bytes, element_bytes);
}

void detail::shared_access(const SharedAllocation& a, size_t index, size_t element_bytes, Access kind) {
  Launch& l = active("shared memory");
  if (!l.options.check_shared) return;
  const int32_t t = l.thread_id(*l.current);
  const uint32_t e = l.epoch;
  const size_t first = static_cast<size_t>(a.data - l.arena.get()) + index * element_bytes;
  const auto who = [&](int32_t thread) {
    return thread == kManyThreads ? std::string("other threads") : "thread " + dims(l.fibers[thread].idx);
  };
  const char* verb = kind == Access::Read ? "reads" : kind == Access::Write ? "writes" : "atomically updates";
  const auto race = [&](int32_t other, const char* other_verb) {
    kernel_fault(l,
                 "shared-memory race: it {} `{}`[{}] (byte {} of the block's shared memory), which {} {} in the "
                 "same barrier interval ({}); a __syncthreads() is missing between the two",
                 verb, a.name, index, first, who(other), other_verb, l.since());
  };
  for (size_t byte = first; byte < first + element_bytes; ++byte) {
    Shadow& s = l.shadow[byte];
    if (kind != Access::Write && s.write_epoch == 0 && s.atomic_epoch == 0)
      kernel_fault(l,
                   "it {} `{}`[{}] (byte {} of the block's shared memory), which no thread of this block has written: "
                   "shared memory starts uninitialised",
                   verb, a.name, index, first);
    if (s.write_epoch == e && s.writer != t) race(s.writer, "wrote");
    if (kind != Access::Atomic && s.atomic_epoch == e && s.atomic_user != t) race(s.atomic_user, "updated atomically");
    if (kind != Access::Read && s.read_epoch == e && s.reader != t) race(s.reader, "read");
    // Record this access; a second thread doing the same turns the slot into "many".
    int32_t* slot = kind == Access::Read ? &s.reader : kind == Access::Write ? &s.writer : &s.atomic_user;
    uint32_t* slot_epoch = kind == Access::Read ? &s.read_epoch : kind == Access::Write ? &s.write_epoch : &s.atomic_epoch;
    if (*slot_epoch != e) {
      *slot_epoch = e;
      *slot = t;
    } else if (*slot != t) {
      *slot = kManyThreads;
    }
  }
}

}  // namespace mman::simt
