// OpenMP and OpenBLAS thread control.
#include "mman/threads.h"

#include <fmt/format.h>
#include <omp.h>

#include <thread>

extern "C" {
// OpenBLAS extensions (declared here: Debian's cblas.h variants differ in which they expose).
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
char* openblas_get_config(void);
char* openblas_get_corename(void);
}

namespace mman {

void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

std::string blas_description() {
  return fmt::format("{} (core {}, {} threads)", openblas_get_config(), openblas_get_corename(),
                     openblas_get_num_threads());
}

}  // namespace mman
