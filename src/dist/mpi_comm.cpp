// MpiComm: the communicator over MPI_COMM_WORLD, host memory. The only file (with start-up)
// that includes mpi.h. Every MPI call is checked; MPI's default error handler
// (MPI_ERRORS_ARE_FATAL) already ends the job on a communication failure.
#define OMPI_SKIP_MPICXX 1  // the C API only
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "core/errors.h"
#include "dist/communicator.h"

#define MPI_CHECK(call)                                                      \
  do {                                                                       \
    int mpi_rc_ = (call);                                                    \
    if (mpi_rc_ != MPI_SUCCESS) {                                            \
      char mpi_msg_[MPI_MAX_ERROR_STRING];                                   \
      int mpi_len_ = 0;                                                      \
      MPI_Error_string(mpi_rc_, mpi_msg_, &mpi_len_);                        \
      RELORA_CHECK(false, #call " failed: " << std::string(mpi_msg_, mpi_len_)); \
    }                                                                        \
  } while (0)

namespace relora {
namespace {

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg: return MPI_SUM;
    case ReduceOp::min: return MPI_MIN;
    case ReduceOp::max: return MPI_MAX;
  }
  return MPI_SUM;
}

// MPI counts are int: reduce in pieces of at most 1 Gi elements.
constexpr int64_t kMaxCount = 1 << 30;

class MpiComm final : public Communicator {
 public:
  MpiComm() {
    int initialised = 0;
    MPI_CHECK(MPI_Initialized(&initialised));
    if (!initialised) {
      int provided = 0;
      MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
      owns_mpi_ = true;
    }
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_));
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_rank(node, &local_rank_));
    MPI_CHECK(MPI_Comm_free(&node));
  }
  ~MpiComm() override {
    if (owns_mpi_) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  int local_rank() const override { return local_rank_; }
  const char* name() const override { return "mpi"; }

  void all_reduce(float* data, int64_t n, ReduceOp op) override {
    RELORA_CHECK(op == ReduceOp::sum || op == ReduceOp::avg, "float all_reduce: sum or avg");
    reduce(data, n, MPI_FLOAT, mpi_op(op));
    if (op == ReduceOp::avg) {
      const float inv = 1.0f / static_cast<float>(world_);
      for (int64_t i = 0; i < n; ++i) data[i] *= inv;
    }
  }
  void all_reduce(double* data, int64_t n, ReduceOp op) override {
    reduce(data, n, MPI_DOUBLE, mpi_op(op));
    if (op == ReduceOp::avg)
      for (int64_t i = 0; i < n; ++i) data[i] /= world_;
  }
  void all_reduce(uint64_t* data, int64_t n, ReduceOp op) override {
    RELORA_CHECK(op != ReduceOp::avg, "uint64 all_reduce: sum, min or max");
    reduce(data, n, MPI_UINT64_T, mpi_op(op));
  }

  void all_reduce_sum_start(float* data, int64_t n) override {
    for (int64_t done = 0; done < n; done += kMaxCount) {
      requests_.emplace_back();
      MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data + done, static_cast<int>(std::min(kMaxCount, n - done)),
                               MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &requests_.back()));
    }
  }
  void progress() override {
    if (requests_.empty()) return;
    int all_done = 0;
    MPI_CHECK(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &all_done,
                          MPI_STATUSES_IGNORE));
  }
  void wait_all() override {
    if (requests_.empty()) return;
    MPI_CHECK(MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE));
    requests_.clear();
  }

  void broadcast(void* data, int64_t bytes, int root) override {
    char* p = static_cast<char*>(data);
    for (int64_t done = 0; done < bytes; done += kMaxCount)
      MPI_CHECK(MPI_Bcast(p + done, static_cast<int>(std::min(kMaxCount, bytes - done)), MPI_BYTE, root,
                          MPI_COMM_WORLD));
  }
  void barrier() override { MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD)); }
  [[noreturn]] void abort(int exit_code) override {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  template <typename T>
  void reduce(T* data, int64_t n, MPI_Datatype type, MPI_Op op) {
    for (int64_t done = 0; done < n; done += kMaxCount)
      MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data + done, static_cast<int>(std::min(kMaxCount, n - done)),
                              type, op, MPI_COMM_WORLD));
  }

  int rank_ = 0, world_ = 1, local_rank_ = 0;
  bool owns_mpi_ = false;
  std::vector<MPI_Request> requests_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_comm() { return std::make_unique<MpiComm>(); }

}  // namespace relora
