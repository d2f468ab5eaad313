// Which communicator carries the gradient buckets: NCCL for device memory with several
// ranks, the host communicator otherwise.
#include "core/errors.h"
#include "dist/communicator.h"

namespace relora {

std::unique_ptr<Communicator> make_gradient_communicator(Communicator& host, Device device,
                                                         int64_t timeout_s) {
  if (device != Device::cuda || host.world_size() <= 1) return nullptr;
#ifdef RELORA_HAVE_NCCL  // every CUDA build but the emulated one of tests/cuda_sim
  return make_nccl_comm(host, timeout_s);
#else
  (void)timeout_s;
  throw InternalError("gradients in device memory across ranks in a build without NCCL");
#endif
}

}  // namespace relora
