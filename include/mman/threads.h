// Thread control for OpenMP and OpenBLAS together, and a description of the BLAS in use.
#pragma once
#include <string>

namespace mman {

// Sets the OpenMP team size and OpenBLAS's own thread count to n (n <= 0: the number of
// cores). Results are deterministic for a fixed n.
void set_num_threads(int n);
int num_threads();
// e.g. "OpenBLAS 0.3.21 (pthread, Haswell, 2 threads)".
std::string blas_description();

}  // namespace mman
