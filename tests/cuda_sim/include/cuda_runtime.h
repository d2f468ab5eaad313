// Emulated <cuda_runtime.h>: the device built-ins of cuda_sim.h and the host runtime API
// of cuda_sim_runtime.h.
#pragma once
#include "cuda_sim.h"
#include "cuda_sim_runtime.h"
