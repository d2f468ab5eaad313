// The CUDA backend's compute stream: every op and every DeviceMemory copy runs on it, so
// they are ordered without events; NcclComm runs on its own stream, ordered against this
// one with events.
#pragma once
#include <cuda_runtime.h>

namespace relora::cuda {

// The stream make_cuda_ops created (it lives until the process ends); nullptr (the legacy
// default stream) before make_cuda_ops has run.
cudaStream_t compute_stream();

}  // namespace relora::cuda
