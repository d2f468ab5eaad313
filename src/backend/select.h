// Which backend a process uses, from train.device (auto | cpu | cuda) and train.devices.
// auto: CUDA when this build has the CUDA backend and a device is usable, else the CPU.
// A rank binds to GPU local_rank % devices (devices = train.devices, or all visible ones).
#pragma once
#include <memory>
#include <string>

#include "backend/ops.h"

namespace relora {

struct Backend {
  std::unique_ptr<Ops> ops;
  std::string reason;  // why this one: "train.device: cuda", "auto: no usable CUDA device (...)"
};

// Throws InputError when `device` is "cuda" and no CUDA device is usable (with the CUDA
// error), when train.devices asks for more GPUs than are visible, or when this node has more
// ranks (local_size) than GPUs to bind them to (NCCL needs one GPU per rank). matmul:
// train.matmul (the CPU's products are fp32 whatever it says).
Backend make_backend(const std::string& device, int devices, const std::string& matmul,
                     int local_rank, int local_size);

// The GPU a rank binds to: local_rank % per_node, per_node = train.devices or, when that
// is 0, every visible GPU. The one rule of make_backend and bind_gpu_before_mpi.
int gpu_index(int devices, int visible, int local_rank);

// Call before MPI starts. Under a launcher that exports the node-local rank
// (launcher_local_rank), binds this process to the GPU make_backend will give it: MPI
// libraries with GPU support (MPICH, Cray MPICH, MVAPICH2-GDR) create a CUDA context on
// the current device in MPI_Init, which would otherwise be GPU 0 for every rank of a node.
// Nothing for train.device cpu, a build without CUDA, no usable GPU or no launcher's local
// rank; errors are left for make_backend to report. make_backend then says so in its
// reason, or warns on stderr when MPI's node-local rank gives another GPU.
void bind_gpu_before_mpi(const std::string& device, int devices);

}  // namespace relora
