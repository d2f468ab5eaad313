// Entry point of the MPI tests, run by ctest under `mpirun -np 2`: one MpiComm for all
// tests; rank 0 prints the report; the exit code is non-zero if a test failed on any rank.
#include <gtest/gtest.h>

#include "dist/communicator.h"
#include "mpi_env.h"

namespace relora::testing {
Communicator* g_comm = nullptr;
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto comm = relora::make_mpi_comm();
  relora::testing::g_comm = comm.get();
  if (comm->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  uint64_t failed = RUN_ALL_TESTS() != 0;
  comm->all_reduce(&failed, 1, relora::ReduceOp::max);
  return failed ? 1 : 0;
}
