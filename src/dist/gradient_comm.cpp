// Which communicator carries the gradient buckets: NCCL for device memory with several
// ranks, the host communicator otherwise.
#include "core/errors.h"
#include "dist/communicator.h"

namespace relora {

void check_gradient_communicator(Device device, int world_size) {
  if (device != Device::cuda || world_size <= 1) return;
#ifdef RELORA_HAVE_NCCL  // CUDA builds that found nccl.h, and the emulated one (tests/cuda_sim)
  check_nccl_environment();
#else
  RELORA_INPUT_ERROR("train.device cuda on " << world_size << " ranks needs NCCL, and this build has "
                     "none (nccl.h was not found when it was configured): install NCCL's headers and "
                     "rebuild (NCCL_HOME names where they are), or run on one GPU");
#endif
}

std::unique_ptr<Communicator> make_gradient_communicator(Communicator& host, Device device,
                                                         int64_t timeout_s) {
  check_gradient_communicator(device, host.world_size());
  if (device != Device::cuda || host.world_size() <= 1) return nullptr;
#ifdef RELORA_HAVE_NCCL
  return make_nccl_comm(host, timeout_s);
#else
  (void)timeout_s;
  return nullptr;  // not reached: check_gradient_communicator refused it
#endif
}

}  // namespace relora
