// OpenMP thread count for this process: train.threads, or every core in the affinity mask.
#pragma once

namespace relora {

// Sets the OpenMP (and so OpenBLAS) thread count; returns it.
int configure_threads(int requested);

}  // namespace relora
