// train.device: cpu always gives the CPU backend; auto gives CUDA exactly when a GPU is usable
// (and says why not otherwise); cuda without a usable GPU is one clear InputError. The GPU
// a rank binds to, and the launcher's local rank read before MPI starts.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "backend/select.h"
#include "core/errors.h"
#include "dist/communicator.h"
#include "test_util.h"
#ifdef RELORA_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace relora {
namespace {

bool gpu_usable() {
#ifdef RELORA_HAVE_CUDA
  std::string why;
  return cuda::device_count(&why) > 0;
#else
  return false;
#endif
}

TEST(BackendSelect, CpuIsAlwaysTheCpu) {
  const Backend backend = make_backend("cpu", 0, "bf16", 0, 1);
  EXPECT_EQ(backend.ops->device(), Device::cpu);
  EXPECT_EQ(backend.reason, "train.device: cpu");
}

TEST(BackendSelect, AutoTakesAGpuOnlyWhenOneIsUsable) {
  const Backend backend = make_backend("auto", 0, "bf16", 0, 1);
  if (gpu_usable()) {
    EXPECT_EQ(backend.ops->device(), Device::cuda);
  } else {
    EXPECT_EQ(backend.ops->device(), Device::cpu);
    EXPECT_NE(backend.reason.find("train.device: auto, no usable CUDA device ("), std::string::npos)
        << backend.reason;
  }
}

TEST(BackendSelect, CudaWithoutAGpuIsOneClearError) {
  if (gpu_usable()) GTEST_SKIP() << "a GPU is usable here";
  testing::expect_contains(testing::input_error_of([] { make_backend("cuda", 0, "bf16", 0, 1); }),
                           {"train.device: cuda, but no CUDA device is usable: ",
                            "use train.device=cpu (or auto)"});
}

// The rule make_backend binds by, and bind_gpu_before_mpi before MPI starts.
TEST(BackendSelect, GpuIndexIsTheLocalRankModuloTheNodesGpus) {
  EXPECT_EQ(gpu_index(0, 4, 5), 1);  // every visible GPU
  EXPECT_EQ(gpu_index(2, 8, 5), 1);  // train.devices 2 of 8
  EXPECT_EQ(gpu_index(0, 1, 3), 0);  // a rank that sees one GPU
}

// The launchers' node-local rank variables, in order; values that are not a rank are
// skipped; SLURM_LOCALID only for an srun task (SLURM_PROCID is PMI_RANK or PMIX_RANK).
TEST(BackendSelect, LauncherLocalRankBeforeMpiStarts) {
  const char* vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK",
                        "PALS_LOCAL_RANKID", "FLUX_TASK_LOCAL_ID", "SLURM_LOCALID", "SLURM_PROCID",
                        "PMI_RANK", "PMIX_RANK"};
  for (const char* var : vars) unsetenv(var);  // (each test runs in a process of its own)
  const char* source = "";
  EXPECT_EQ(launcher_local_rank(&source), -1);
  setenv("SLURM_LOCALID", "5", 1);  // a batch script's own: not an srun task's
  EXPECT_EQ(launcher_local_rank(), -1);
  setenv("SLURM_PROCID", "7", 1);
  setenv("PMI_RANK", "6", 1);
  EXPECT_EQ(launcher_local_rank(), -1);
  setenv("PMIX_RANK", "7", 1);
  EXPECT_EQ(launcher_local_rank(&source), 5);
  EXPECT_STREQ(source, "SLURM_LOCALID");
  setenv("FLUX_TASK_LOCAL_ID", "4", 1);
  EXPECT_EQ(launcher_local_rank(), 4);
  setenv("MPI_LOCALRANKID", "2", 1);
  EXPECT_EQ(launcher_local_rank(), 2);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "x1", 1);
  EXPECT_EQ(launcher_local_rank(), 2);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1);
  EXPECT_EQ(launcher_local_rank(&source), 3);
  EXPECT_STREQ(source, "OMPI_COMM_WORLD_LOCAL_RANK");
  setenv("MPI_LOCALRANKID", "-1", 1);
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  EXPECT_EQ(launcher_local_rank(), 4);
  for (const char* var : vars) unsetenv(var);
}

}  // namespace
}  // namespace relora
