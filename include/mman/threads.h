// Thread control for OpenMP and OpenBLAS together, and a description of the BLAS in use.
#pragma once
#include <string>

namespace mman {

// Sets the number of threads mman uses to n (n <= 0: the number of cores): the OpenMP
// team size and the helper threads of gemm() and the LSTM recurrence; OpenBLAS's own
// pool stays at one thread (gemm() splits large products itself). Results are
// deterministic for a fixed n.
void set_num_threads(int n);
int num_threads();

// Call first thing in main(): when the environment sets neither OMP_WAIT_POLICY nor
// GOMP_SPINCOUNT, re-executes the program (same pid, same arguments) with
// OMP_WAIT_POLICY=PASSIVE, so idle OpenMP threads sleep instead of spinning. GNU OpenMP
// reads these variables only when it loads, hence the re-exec. A spinning thread costs
// nothing on idle cores, but on cores shared with other work it takes the time the
// program's own busy thread needs: with libgomp's default (up to 300,000 spins per wait)
// a stage-2 epoch on 2 busy cores took 5-8 s instead of 0.9 s (bench/NOTES.md). mman's
// few, large parallel regions make sleeping waits cheap. Returns (doing nothing) when a
// variable is set or the re-exec fails.
void prefer_passive_openmp_waits(char** argv);
// e.g. "OpenBLAS 0.3.21 ... (core Haswell, 1 thread per call; mman splits large products over 2 threads)".
std::string blas_description();

}  // namespace mman
