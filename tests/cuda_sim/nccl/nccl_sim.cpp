// cuda_sim's libnccl.so.2: the NCCL calls of src/dist/nccl_comm.cpp for the emulated CUDA
// build, over MPI between the processes of one mpirun (or within one process at world size
// 1, where no MPI is needed, as with NCCL). The emulator runs all stream work at once, in
// call order, so a collective runs when it is queued: ncclAllReduce returns after the
// reduction, and the stream argument orders nothing. Emulated device memory is host memory.
// As NCCL for what relora uses:
//   - ranks that pass the same unique id form one communicator (split from MPI_COMM_WORLD by
//     the id), and each must pass its own rank, 0..nranks-1; anything else is ncclInvalidUsage;
//   - fp32 sum and average (each rank's values times 1/nranks, then summed, as NCCL does),
//     bf16 sum (each partial sum rounded to bf16, nearest even); the sums run in rank
//     order, so every rank gets the same bits, as with NCCL (whose order is its ring's).
// Fault injection for the failure tests: with SIM_NCCL_FAIL_RANK=R and SIM_NCCL_FAIL_AT=N,
// rank R's N-th all-reduce (from 1) and every later one are queued but never take part,
// and ncclCommGetAsyncError reports ncclRemoteError on that rank from then on, as after a
// broken link; its peers wait in theirs.
#define OMPI_SKIP_MPICXX 1  // the C API only
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/bf16.h"

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;  // MPI_COMM_NULL at one rank
  int rank = 0, nranks = 1;
  int64_t calls = 0;  // all-reduces so far
  ncclResult_t async_error = ncclSuccess;
};

namespace {

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value == nullptr || *value == '\0' ? fallback : std::atoi(value);
}

// Every rank's n values of type T, rank after rank (n * nranks), gathered over comm.
template <typename T>
std::vector<T> gather_all(const ncclComm& comm, const T* values, size_t n) {
  std::vector<T> all(n * static_cast<size_t>(comm.nranks));
  MPI_Allgather(values, static_cast<int>(n * sizeof(T)), MPI_BYTE, all.data(),
                static_cast<int>(n * sizeof(T)), MPI_BYTE, comm.mpi);
  return all;
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  if (version == nullptr) return ncclInvalidArgument;
  *version = 21800;  // 2.18.0
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* unique_id) {
  if (unique_id == nullptr) return ncclInvalidArgument;
  std::random_device device;
  std::mt19937_64 bits(device() ^ static_cast<uint64_t>(
                                      std::chrono::steady_clock::now().time_since_epoch().count()));
  for (char& c : unique_id->internal) c = static_cast<char>(bits());
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId comm_id, int rank) {
  if (comm == nullptr || nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
  auto* c = new ncclComm;
  c->rank = rank;
  c->nranks = nranks;
  if (nranks > 1) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      delete c;
      return ncclInvalidUsage;  // the emulation connects ranks over MPI only
    }
    // colour: the id's first bytes, as a non-negative int
    uint32_t colour = 0;
    std::memcpy(&colour, comm_id.internal, sizeof(colour));
    MPI_Comm_split(MPI_COMM_WORLD, static_cast<int>(colour & 0x7fffffff), rank, &c->mpi);
    int size = 0, my_rank = 0;
    MPI_Comm_size(c->mpi, &size);
    MPI_Comm_rank(c->mpi, &my_rank);
    const std::vector<char> ids = gather_all(*c, comm_id.internal, NCCL_UNIQUE_ID_BYTES);
    bool same_id = true;
    for (int r = 0; r < size; ++r)
      same_id = same_id && std::memcmp(&ids[static_cast<size_t>(r) * NCCL_UNIQUE_ID_BYTES],
                                       comm_id.internal, NCCL_UNIQUE_ID_BYTES) == 0;
    if (size != nranks || my_rank != rank || !same_id) {
      MPI_Comm_free(&c->mpi);
      delete c;
      return ncclInvalidUsage;
    }
  }
  *comm = c;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t /*stream*/) {
  if (comm == nullptr || sendbuff == nullptr || recvbuff == nullptr) return ncclInvalidArgument;
  if (datatype != ncclFloat && datatype != ncclBfloat16) return ncclInvalidArgument;
  if (op != ncclSum && (op != ncclAvg || datatype != ncclFloat)) return ncclInvalidArgument;  // relora's
  ++comm->calls;
  if (comm->rank == env_int("SIM_NCCL_FAIL_RANK", -1) && comm->calls == env_int("SIM_NCCL_FAIL_AT", 0))
    comm->async_error = ncclRemoteError;  // reported by ncclCommGetAsyncError from now on
  if (comm->async_error != ncclSuccess) return ncclSuccess;  // queued, never completes
  const size_t n = count;
  if (datatype == ncclFloat) {
    const auto* send = static_cast<const float*>(sendbuff);
    std::vector<float> mine(send, send + n);
    if (op == ncclAvg)  // as NCCL: each rank's values times 1/nranks, then summed
      for (float& x : mine) x *= 1.0f / static_cast<float>(comm->nranks);
    std::vector<float> sum = mine;
    if (comm->nranks > 1) {
      const std::vector<float> all = gather_all(*comm, mine.data(), n);
      for (size_t i = 0; i < n; ++i) {
        float s = all[i];
        for (int r = 1; r < comm->nranks; ++r) s += all[static_cast<size_t>(r) * n + i];
        sum[i] = s;
      }
    }
    std::memcpy(recvbuff, sum.data(), n * sizeof(float));
    return ncclSuccess;
  }
  const auto* send = static_cast<const uint16_t*>(sendbuff);
  std::vector<uint16_t> result(send, send + n);
  if (comm->nranks > 1) {
    const std::vector<uint16_t> all = gather_all(*comm, send, n);
    for (size_t i = 0; i < n; ++i) {
      uint16_t s = all[i];  // each partial sum rounded to bf16, as NCCL's reductions (and MpiComm's) do
      for (int r = 1; r < comm->nranks; ++r)
        s = relora::float_to_bf16(relora::bf16_to_float(s) + relora::bf16_to_float(all[static_cast<size_t>(r) * n + i]));
      result[i] = s;
    }
  }
  std::memcpy(recvbuff, result.data(), n * sizeof(uint16_t));
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  if (comm == nullptr || async_error == nullptr) return ncclInvalidArgument;
  *async_error = comm->async_error;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (comm == nullptr) return ncclInvalidArgument;
  if (comm->mpi != MPI_COMM_NULL) {  // (no MPI call at one rank)
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm->mpi);
  }
  delete comm;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

}  // extern "C"
