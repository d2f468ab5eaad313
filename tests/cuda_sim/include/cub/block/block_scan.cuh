// Emulated cub::BlockScan<T, BLOCK>::ExclusiveSum (the only cub call of the kernels): each
// thread writes its input to TempStorage, the block meets, each thread sums the inputs
// before it. As in cub, reusing a TempStorage needs the caller's __syncthreads in between
// (a missing one lets a warp overwrite values another warp has not read yet).
#pragma once
#include "cuda_sim.h"

namespace cub {
template <typename T, int BLOCK>
class BlockScan {
 public:
  struct TempStorage {
    T values[BLOCK];
  };
  explicit BlockScan(TempStorage& storage) : storage_(storage) {}
  void ExclusiveSum(T input, T& output, T& aggregate,
                    sim::Site site = sim::Site::current("cub::BlockScan::ExclusiveSum")) {
    if (static_cast<int>(blockDim.x * blockDim.y * blockDim.z) != BLOCK)
      sim::error("cub::BlockScan<T, " + std::to_string(BLOCK) + "> in a block of " +
                 std::to_string(blockDim.x * blockDim.y * blockDim.z) + " threads at " + site.str());
    const int me = sim::linear_tid();
    storage_.values[me] = input;
    __syncthreads(site);
    T before{}, total{};
    for (int i = 0; i < BLOCK; ++i) {
      if (i < me) before += storage_.values[i];
      total += storage_.values[i];
    }
    output = before;
    aggregate = total;
  }

 private:
  TempStorage& storage_;
};
}  // namespace cub
