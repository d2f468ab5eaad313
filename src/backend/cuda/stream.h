// The CUDA backend's single compute stream: every op, every DeviceMemory copy and (by the
// same rule) any collective that works on device tensors runs on it, so all device work is
// ordered without events.
#pragma once
#include <cuda_runtime.h>

namespace relora::cuda {

// The stream make_cuda_ops created (it lives until the process ends); nullptr (the legacy
// default stream) before make_cuda_ops has run.
cudaStream_t compute_stream();

}  // namespace relora::cuda
