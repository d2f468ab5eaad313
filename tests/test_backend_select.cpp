// train.device: cpu always gives the CPU backend; auto gives CUDA exactly when a GPU is usable
// (and says why not otherwise); cuda without a usable GPU is one clear InputError.
#include <gtest/gtest.h>

#include <string>

#include "backend/select.h"
#include "core/errors.h"
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

}  // namespace
}  // namespace relora
