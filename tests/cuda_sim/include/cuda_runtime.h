// Emulated <cuda_runtime.h>: the runtime API subset and device built-ins of cuda_sim.h.
#pragma once
#include "cuda_sim.h"
