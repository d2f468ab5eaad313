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

}  // namespace relora
