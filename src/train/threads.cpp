// Thread count from the CPU affinity mask (what mpirun/taskset gave this process).
#include "train/threads.h"

#include <omp.h>
#include <sched.h>

#include <thread>

namespace relora {

int configure_threads(int requested) {
  int n = requested;
  if (n <= 0) {
    cpu_set_t mask;
    CPU_ZERO(&mask);
    n = sched_getaffinity(0, sizeof(mask), &mask) == 0 ? CPU_COUNT(&mask)
                                                      : static_cast<int>(std::thread::hardware_concurrency());
    if (n <= 0) n = 1;
  }
  omp_set_num_threads(n);
  return n;
}

}  // namespace relora
