// The MPI plugin, librelora_mpi.so: the only code that includes mpi.h and links MPI. It
// implements the C interface of mpi_api.h over MPI_COMM_WORLD on host memory; MpiComm
// (mpi_comm.cpp) loads it only when an MPI launcher started the process, so relora itself
// needs no MPI runtime. Every MPI call is checked; MPI's default error handler
// (MPI_ERRORS_ARE_FATAL) already ends the job on a communication failure.
#define OMPI_SKIP_MPICXX 1  // the C API only
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <new>
#include <type_traits>
#include <vector>

#include "core/bf16.h"
#include "dist/mpi_api.h"

// Returns 1 from the enclosing function, with "file:line: call failed: MPI's message" in
// err, when an MPI call fails.
#define MPI_CHECK(call)                                                                    \
  do {                                                                                     \
    int mpi_rc_ = (call);                                                                  \
    if (mpi_rc_ != MPI_SUCCESS) {                                                          \
      char mpi_msg_[MPI_MAX_ERROR_STRING];                                                 \
      int mpi_len_ = 0;                                                                    \
      if (MPI_Error_string(mpi_rc_, mpi_msg_, &mpi_len_) != MPI_SUCCESS) mpi_len_ = 0;     \
      std::snprintf(err, RELORA_MPI_ERROR_LEN, "%s:%d: %s failed: %.*s (MPI error %d)",    \
                    __FILE__, __LINE__, #call, mpi_len_, mpi_msg_, mpi_rc_);               \
      return 1;                                                                            \
    }                                                                                      \
  } while (0)

namespace {

bool g_owns_mpi = false;                // init called MPI_Init_thread
std::vector<MPI_Request> g_requests;    // non-blocking all-reduces until wait_all
MPI_Op g_bf16_sum = MPI_OP_NULL;        // made by the first bf16 sum, freed by finalize

MPI_Datatype mpi_type(RelMpiType type) {
  switch (type) {
    case REL_MPI_FLOAT: return MPI_FLOAT;
    case REL_MPI_DOUBLE: return MPI_DOUBLE;
    case REL_MPI_UINT64: return MPI_UINT64_T;
    case REL_MPI_BF16: return MPI_UINT16_T;
  }
  return MPI_DATATYPE_NULL;
}

// The MPI operation of REL_MPI_BF16 sums: inout[i] = bf16(float(in[i]) + float(inout[i])).
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i)
    b[i] = relora::float_to_bf16(relora::bf16_to_float(a[i]) + relora::bf16_to_float(b[i]));
}

MPI_Op mpi_op(RelMpiOp op) {
  switch (op) {
    case REL_MPI_SUM: return MPI_SUM;
    case REL_MPI_MIN: return MPI_MIN;
    case REL_MPI_MAX: return MPI_MAX;
  }
  return MPI_OP_NULL;
}

int init(int* rank, int* world_size, int* local_rank, int* local_size, char* err) {
  int initialised = 0;
  MPI_CHECK(MPI_Initialized(&initialised));
  if (!initialised) {
    int provided = 0;
    MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    g_owns_mpi = true;
  }
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, rank));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, world_size));
  MPI_Comm node;
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, *rank, MPI_INFO_NULL, &node));
  MPI_CHECK(MPI_Comm_rank(node, local_rank));
  MPI_CHECK(MPI_Comm_size(node, local_size));
  MPI_CHECK(MPI_Comm_free(&node));
  return 0;
}

int all_reduce(void* data, int count, RelMpiType type, RelMpiOp op, char* err) {
  if (type == REL_MPI_BF16) {
    std::snprintf(err, RELORA_MPI_ERROR_LEN, "%s:%d: blocking all-reduce of bf16 is not offered", __FILE__, __LINE__);
    return 1;
  }
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, count, mpi_type(type), mpi_op(op), MPI_COMM_WORLD));
  return 0;
}

int all_reduce_sum_start(void* data, int count, RelMpiType type, char* err) {
  if (type != REL_MPI_FLOAT && type != REL_MPI_BF16) {
    std::snprintf(err, RELORA_MPI_ERROR_LEN, "%s:%d: non-blocking sums of float or bf16 only", __FILE__, __LINE__);
    return 1;
  }
  try {
    g_requests.emplace_back();
  } catch (const std::bad_alloc&) {
    std::snprintf(err, RELORA_MPI_ERROR_LEN, "%s:%d: out of memory for an MPI request", __FILE__, __LINE__);
    return 1;
  }
  if (type == REL_MPI_BF16 && g_bf16_sum == MPI_OP_NULL) MPI_CHECK(MPI_Op_create(bf16_sum, 1, &g_bf16_sum));
  const MPI_Op op = type == REL_MPI_BF16 ? g_bf16_sum : MPI_SUM;
  MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, count, mpi_type(type), op, MPI_COMM_WORLD, &g_requests.back()));
  return 0;
}

int progress(char* err) {
  if (g_requests.empty()) return 0;
  int all_done = 0;
  MPI_CHECK(MPI_Testall(static_cast<int>(g_requests.size()), g_requests.data(), &all_done, MPI_STATUSES_IGNORE));
  return 0;
}

int wait_all(char* err) {
  if (g_requests.empty()) return 0;
  MPI_CHECK(MPI_Waitall(static_cast<int>(g_requests.size()), g_requests.data(), MPI_STATUSES_IGNORE));
  g_requests.clear();
  return 0;
}

int broadcast(void* data, int bytes, int root, char* err) {
  MPI_CHECK(MPI_Bcast(data, bytes, MPI_BYTE, root, MPI_COMM_WORLD));
  return 0;
}

int barrier(char* err) {
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  return 0;
}

void abort_job(int exit_code) {
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

int finalize(char* err) {
  int finalized = 0;
  MPI_CHECK(MPI_Finalized(&finalized));
  if (finalized) {  // whoever owned MPI ended it, and its objects with it
    g_bf16_sum = MPI_OP_NULL;
    return 0;
  }
  if (g_bf16_sum != MPI_OP_NULL) MPI_CHECK(MPI_Op_free(&g_bf16_sum));
  if (!g_owns_mpi) return 0;
  g_owns_mpi = false;
  MPI_CHECK(MPI_Finalize());
  return 0;
}

const RelMpiApi kApi = {init, all_reduce, all_reduce_sum_start, progress, wait_all,
                        broadcast, barrier, abort_job, finalize};

}  // namespace

extern "C" __attribute__((visibility("default"))) const RelMpiApi* relora_mpi_api(int abi_version) {
  return abi_version == RELORA_MPI_API_VERSION ? &kApi : nullptr;
}
static_assert(std::is_same_v<decltype(&relora_mpi_api), RelMpiApiEntry>, "the entry point matches mpi_api.h");
