// The C interface between relora and its MPI plugin, librelora_mpi.so (built from
// mpi_plugin.cpp, the only code that links MPI; MpiComm in mpi_comm.cpp loads it). Plain C
// types only, no exceptions across it, so the plugin needs no symbol of the executable.
// Every function but abort returns 0 on success, else non-zero with a NUL-terminated
// message (where in the plugin, which MPI call, MPI's error string) in err, of
// RELORA_MPI_ERROR_LEN bytes. Counts are int, as MPI's: the caller splits larger ones.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

// Raise on any change to the struct or the meaning of its functions.
#define RELORA_MPI_API_VERSION 3
#define RELORA_MPI_ERROR_LEN 512
// The plugin's one exported symbol.
#define RELORA_MPI_API_SYMBOL "relora_mpi_api"

// REL_MPI_BF16: raw 16-bit bfloat16 words (non-blocking sums only), summed in fp32 and
// rounded back to nearest-even by a user-defined MPI operation.
enum RelMpiType { REL_MPI_FLOAT, REL_MPI_DOUBLE, REL_MPI_UINT64, REL_MPI_BF16 };
enum RelMpiOp { REL_MPI_SUM, REL_MPI_MIN, REL_MPI_MAX };

typedef struct RelMpiApi {
  // Initialises MPI unless it already is (MPI_THREAD_FUNNELED); rank and size in
  // MPI_COMM_WORLD, rank among and number of the processes of this node.
  int (*init)(int* rank, int* world_size, int* local_rank, int* local_size, char* err);
  // In-place blocking all-reduce over MPI_COMM_WORLD.
  int (*all_reduce)(void* data, int count, enum RelMpiType type, enum RelMpiOp op, char* err);
  // In-place non-blocking sum of REL_MPI_FLOAT or REL_MPI_BF16 elements; the plugin keeps
  // the request until wait_all.
  int (*all_reduce_sum_start)(void* data, int count, enum RelMpiType type, char* err);
  // Tests the pending requests (MPI progresses only inside MPI calls).
  int (*progress)(char* err);
  // Completes and forgets the pending requests.
  int (*wait_all)(char* err);
  int (*broadcast)(void* data, int bytes, int root, char* err);
  int (*barrier)(char* err);
  // MPI_Abort on MPI_COMM_WORLD; never returns.
  void (*abort)(int exit_code);
  // Finalises MPI if init initialised it.
  int (*finalize)(char* err);
} RelMpiApi;

// The function table, or NULL when abi_version is not RELORA_MPI_API_VERSION.
typedef const RelMpiApi* (*RelMpiApiEntry)(int abi_version);

#ifdef __cplusplus
}
#endif
