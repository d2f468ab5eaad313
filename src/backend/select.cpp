// Backend selection: train.device and the CUDA devices this process can see.
#include "backend/select.h"

#include <cstdio>

#include "core/errors.h"
#include "dist/communicator.h"
#ifdef RELORA_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace relora {
namespace {

// What bind_gpu_before_mpi did: the GPU it bound (-1: none) and the variable it read.
struct EarlyBinding {
  int gpu = -1;
  const char* source = "";
};
EarlyBinding g_early_binding;

}  // namespace

int gpu_index(int devices, int visible, int local_rank) {
  const int per_node = devices > 0 ? devices : visible;
  return per_node > 0 ? local_rank % per_node : 0;
}

void bind_gpu_before_mpi(const std::string& device, int devices) {
  const char* source = "";
  const int local_rank = launcher_local_rank(&source);
  if (device == "cpu" || local_rank < 0) return;
#ifdef RELORA_HAVE_CUDA
  const int visible = cuda::device_count(nullptr);
  if (visible == 0 || devices > visible) return;
  const int gpu = gpu_index(devices, visible, local_rank);
  if (cuda::select_device(gpu)) g_early_binding = EarlyBinding{gpu, source};
#else
  (void)devices;
#endif
}

Backend make_backend(const std::string& device, int devices, const std::string& matmul,
                     int local_rank, int local_size) {
  Backend backend;
  if (device == "cpu") {
    backend.ops = make_cpu_ops();
    backend.reason = "train.device: cpu";
    return backend;
  }
  std::string why = "this build has no CUDA backend (configure on a machine with nvcc, RELORA_CUDA=AUTO or ON)";
  int visible = 0;
#ifdef RELORA_HAVE_CUDA
  visible = cuda::device_count(&why);
#endif
  if (visible == 0) {
    if (device == "cuda")
      RELORA_INPUT_ERROR("train.device: cuda, but no CUDA device is usable: " << why
                         << "; use train.device=cpu (or auto)");
    backend.ops = make_cpu_ops();
    backend.reason = "train.device: auto, no usable CUDA device (" + why + ")";
    return backend;
  }
  if (devices > visible)
    RELORA_INPUT_ERROR("train.devices: " << devices << " GPUs per node asked for, but this process sees "
                       << visible << "; set train.devices to at most " << visible << " (or 0: all)");
  const int per_node = devices > 0 ? devices : visible;
  // A rank that sees a single GPU binds to it: launchers that give each rank its own GPU
  // (srun --gpus-per-task=1, a per-rank CUDA_VISIBLE_DEVICES) show every rank one device.
  // Several ranks that truly share one GPU are refused by NCCL when it connects them.
  if (visible > 1 && local_size > per_node)
    RELORA_INPUT_ERROR("train.device: " << device << ": " << local_size << " ranks on this node but "
                       << per_node << " GPU(s) to bind them to (train.devices " << devices << ", "
                       << visible << " visible); each rank needs a GPU of its own: start at most "
                       << per_node << " ranks per node, or use train.device=cpu");
  const int index = gpu_index(devices, visible, local_rank);  // 0 when it sees one
#ifdef RELORA_HAVE_CUDA
  backend.ops = cuda::make_cuda_ops(index, matmul);
#else
  (void)matmul;
#endif
  backend.reason = "train.device: " + device + ", local rank " + std::to_string(local_rank) +
                   " -> GPU " + std::to_string(index) + " of " + std::to_string(per_node);
  if (g_early_binding.gpu == index) {
    backend.reason += ", bound before MPI_Init (" + std::string(g_early_binding.source) + ")";
  } else if (g_early_binding.gpu >= 0) {
    std::fprintf(stderr,
                 "relora: warning: local rank %d: GPU %d was bound before MPI_Init (from %s), GPU %d after it "
                 "(from MPI's node-local rank): GPU %d holds a CUDA context this rank does not use; the "
                 "launcher's and MPI's node-local ranks differ\n",
                 local_rank, g_early_binding.gpu, g_early_binding.source, index, g_early_binding.gpu);
  }
  return backend;
}

}  // namespace relora
