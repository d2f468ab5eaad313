// The CUDA backend's entry points, callable from plain C++ (this header includes no CUDA
// headers, so the rest of the code base compiles the same with and without CUDA).
#pragma once
#include <memory>
#include <string>

#include "backend/ops.h"

namespace relora::cuda {

// Number of CUDA devices this process can use; 0 when there is none or no working driver,
// with *why set to the CUDA error ("cudaGetDeviceCount: no CUDA-capable device is detected").
int device_count(std::string* why);

// Binds this process to device `index` (cudaSetDevice), creates the compute stream and the
// cuBLAS handle, and installs the DeviceMemory that Tensor uses for Device::cuda. One device
// per process. Training products (Ops::gemm, attention) follow matmul (train.matmul):
// "bf16_copy" rounds the inputs of a product given a scratch into bf16 copies and
// multiplies those (the others as "bf16"), "bf16" rounds their inputs to bf16 inside
// cuBLAS, "tf32" to TF32 (but attention's fused kernels still multiply bf16; its cuBLAS
// path is TF32), all with fp32 accumulation on tensor cores; "fp32" multiplies in full fp32
// (slower, for checks). Throws InputError with the CUDA error when the device is not usable.
std::unique_ptr<Ops> make_cuda_ops(int index, const std::string& matmul);

// cudaSetDevice(index) and nothing else (bind_gpu_before_mpi): false on failure, whose
// error is cleared and left for make_cuda_ops to report.
bool select_device(int index);

}  // namespace relora::cuda
