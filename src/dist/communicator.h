// Communicator: what ranks say to each other. LocalComm is world size 1 (no MPI needed);
// MpiComm runs over MPI_COMM_WORLD on host memory through the MPI plugin librelora_mpi.so,
// loaded at run time; NcclComm (CUDA builds) all-reduces gradients in device memory and
// hands host collectives to the MPI one. Nothing above src/dist/ knows which one it has.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace relora {

enum class ReduceOp { sum, avg, min, max };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual int local_rank() const = 0;  // rank among the processes of this node
  virtual int local_size() const = 0;  // processes on this node
  virtual const char* name() const = 0;

  // In-place blocking all-reduce. float: sum, avg; double: sum, avg, min, max;
  // uint64: sum, min, max (checksums and flags).
  virtual void all_reduce(float* data, int64_t n, ReduceOp op) = 0;
  virtual void all_reduce(double* data, int64_t n, ReduceOp op) = 0;
  virtual void all_reduce(uint64_t* data, int64_t n, ReduceOp op) = 0;

  // Non-blocking in-place all-reduce of n elements: f32 sum or avg (NCCL's ncclAvg, which
  // pre-multiplies by 1/world; on MPI the sum divided once it has arrived), or bf16 sum
  // (each addition in fp32, rounded back to bf16; no bf16 avg, as 1/world in bf16 is
  // inexact: NCCL would pre-multiply by bf16(1/3) = 0.334 at three ranks): starts now,
  // completes by wait_all(). progress() lets the library move pending operations on (MPI
  // progresses only inside MPI calls).
  virtual void all_reduce_start(void* data, int64_t n, DType dtype, ReduceOp op) = 0;
  virtual void progress() = 0;
  virtual void wait_all() = 0;

  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job with exit_code. Never returns.
  [[noreturn]] virtual void abort(int exit_code) = 0;
};

// World size 1, no MPI.
std::unique_ptr<Communicator> make_local_comm();
// MPI_COMM_WORLD; loads the MPI plugin (next to the executable, or $RELORA_MPI_PLUGIN;
// InputError if it cannot be loaded), initialises MPI (and finalises it when destroyed).
std::unique_ptr<Communicator> make_mpi_comm();
// True when an MPI launcher (mpirun/mpiexec, srun with PMI/PMIx) started this process.
bool launched_by_mpi();
// This process's rank on its node as its launcher exports it (Open MPI, MPICH's and Intel
// MPI's Hydra, MVAPICH2, Cray PALS, Flux, Slurm's srun), readable before MPI starts; -1
// when none does. *source (if given) names the variable. SLURM_LOCALID counts only for an
// srun task (SLURM_PROCID equal to PMI_RANK or PMIX_RANK): a batch script's own value
// would be inherited by every rank a launcher of its own starts.
int launcher_local_rank(const char** source = nullptr);
// MpiComm when launched_by_mpi(), else LocalComm.
std::unique_ptr<Communicator> make_communicator();

// The communicator for gradient buckets in `device` memory: NCCL (make_nccl_comm) for a CUDA
// backend at world size > 1, else nullptr, meaning `host` itself does it. timeout_s: how long
// a GPU collective may wait before the job ends (train.comm_timeout).
std::unique_ptr<Communicator> make_gradient_communicator(Communicator& host, Device device,
                                                         int64_t timeout_s);
// Local, and cheap: InputError where make_gradient_communicator would refuse the settings
// (a CUDA build without NCCL, NCCL_COMM_BLOCKING=0), so a run can refuse them at start.
void check_gradient_communicator(Device device, int world_size);
// InputError for an NCCL environment relora cannot use (NCCL_COMM_BLOCKING=0). CUDA builds only.
void check_nccl_environment();
// NCCL over the ranks of `host`, which broadcasts the unique id and keeps carrying every
// host-memory collective. CUDA builds only.
std::unique_ptr<Communicator> make_nccl_comm(Communicator& host, int64_t timeout_s);

// Broadcasts a string from root (length, then bytes).
void broadcast_string(Communicator& comm, std::string& text, int root);
// Broadcasts a tensor's contents from root (through host memory for a device tensor).
void broadcast_tensor(Communicator& comm, Tensor& tensor, int root);

}  // namespace relora
