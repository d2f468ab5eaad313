// LocalComm: the communicator of a run with one process. Every collective is the identity.
#include <cstdlib>
#include <cstring>

#include "dist/communicator.h"

namespace relora {
namespace {

class LocalComm final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  const char* name() const override { return "local"; }
  void all_reduce(float*, int64_t, ReduceOp) override {}
  void all_reduce(double*, int64_t, ReduceOp) override {}
  void all_reduce(uint64_t*, int64_t, ReduceOp) override {}
  void all_reduce_start(void*, int64_t, DType, ReduceOp) override {}
  void progress() override {}
  void wait_all() override {}
  void broadcast(void*, int64_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) override { std::exit(exit_code); }
};

}  // namespace

std::unique_ptr<Communicator> make_local_comm() { return std::make_unique<LocalComm>(); }

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(var)) return true;
  return false;
}

namespace {

// The variable's value as a rank (0 <= rank < 2^20), or -1.
int rank_in(const char* var) {
  const char* value = std::getenv(var);
  if (value == nullptr || *value == '\0') return -1;
  char* end = nullptr;
  const long rank = std::strtol(value, &end, 10);
  return *end == '\0' && rank >= 0 && rank < (1L << 20) ? static_cast<int>(rank) : -1;
}

}  // namespace

int launcher_local_rank(const char** source) {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK",
                          "PALS_LOCAL_RANKID", "FLUX_TASK_LOCAL_ID", "SLURM_LOCALID"}) {
    const int rank = rank_in(var);
    if (rank < 0) continue;
    if (std::strcmp(var, "SLURM_LOCALID") == 0) {
      const int task = rank_in("SLURM_PROCID");
      if (task < 0 || (task != rank_in("PMI_RANK") && task != rank_in("PMIX_RANK"))) continue;
    }
    if (source != nullptr) *source = var;
    return rank;
  }
  return -1;
}

std::unique_ptr<Communicator> make_communicator() {
  return launched_by_mpi() ? make_mpi_comm() : make_local_comm();
}

void broadcast_string(Communicator& comm, std::string& text, int root) {
  uint64_t size = text.size();
  comm.broadcast(&size, sizeof(size), root);
  text.resize(size);
  if (size > 0) comm.broadcast(text.data(), static_cast<int64_t>(size), root);
}

void broadcast_tensor(Communicator& comm, Tensor& tensor, int root) {
  if (comm.world_size() <= 1) return;
  Tensor host = tensor.to_host();
  comm.broadcast(host.data(), static_cast<int64_t>(host.bytes()), root);
  if (!tensor.on_host()) tensor.copy_from_host(host.data());
}

}  // namespace relora
