// Thread control for OpenMP, mman's helper threads (src/core/parallel.h) and OpenBLAS.
#include "mman/threads.h"

#include <fmt/format.h>
#include <omp.h>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <thread>

extern "C" {
// OpenBLAS extensions (declared here: Debian's cblas.h variants differ in which they expose).
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
char* openblas_get_config(void);
char* openblas_get_corename(void);
}

namespace mman {

namespace {
std::atomic<int> g_threads{0};  // set_num_threads(); 0: never called, OpenMP's default
}  // namespace

void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  g_threads.store(n);
  omp_set_num_threads(n);
  // OpenBLAS's pthread pool stays at one thread: its workers busy-wait after every call
  // and, on a machine with as many cores as threads, fight OpenMP's team (2 threads of
  // each on 2 cores made an epoch 3x slower than one thread). gemm() splits large
  // products over mman's own helper threads instead (src/core/blas.cpp).
  openblas_set_num_threads(1);
}

int num_threads() {
  const int n = g_threads.load();
  return n > 0 ? n : omp_get_max_threads();
}

void prefer_passive_openmp_waits(char** argv) {
  if (argv == nullptr || std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr)
    return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  execv("/proc/self/exe", argv);
  // Still here: the program image could not be re-executed (no /proc, say). Carry on with
  // the policy libgomp already read; the variable stays set for child processes.
}

std::string blas_description() {
  return fmt::format("{} (core {}, {} thread per call; mman splits large products over {} threads)",
                     openblas_get_config(), openblas_get_corename(), openblas_get_num_threads(), num_threads());
}

}  // namespace mman
