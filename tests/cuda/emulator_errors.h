// The GPU tests of this folder also run in the CUDA emulator (tests/cuda_sim, where
// RELORA_CUDA_EMULATED is defined). There, whatever the emulator recorded during a test
// (a kernel's out-of-bounds access, a copy in the wrong direction, a product reading past
// a tensor) fails the test, even where the host code did not stop; on a GPU this is empty.
#pragma once
#include <gtest/gtest.h>

#include <string>

#ifdef RELORA_CUDA_EMULATED
#include "cuda_sim.h"
#endif

namespace relora {

inline void expect_no_emulator_errors() {
#ifdef RELORA_CUDA_EMULATED
  for (const std::string& e : sim::take_errors()) ADD_FAILURE() << e;
#endif
}

}  // namespace relora
