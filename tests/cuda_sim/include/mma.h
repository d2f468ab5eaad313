// Emulated nvcuda::wmma, m16n16k16 with bf16 inputs and fp32 accumulators (all that
// flash_attention.cu uses). Every lane's fragment holds the whole 16x16 matrix (valid
// because the kernels never touch fragment.x[]), read from memory when that lane executes
// the load. A store writes only the 8 accumulator elements the lane owns on sm_80+ (rows
// g and g+8, g = lane/4; columns 2t, 2t+1, 2t+8, 2t+9, t = lane%4), so a lane that reads
// the stored tile before the warp's __syncwarp sees other lanes' elements missing.
// Loads and stores check the pointer (32-byte aligned) and ldm (a multiple of 16 bytes);
// with SIM_WMMA_BARRIER=1 they also wait for the whole warp. mma_sync accumulates in k
// order in fp32 (tensor cores may differ in the last bits).
#pragma once
#include <type_traits>

#include "cuda_bf16.h"
#include "cuda_sim.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "cuda_sim: only m16n16k16 fragments");
  float m[16][16];
};
using Accumulator = fragment<accumulator, 16, 16, 16, float>;

template <typename Use, typename T, typename Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, float value) {
  for (auto& row : f.m)
    for (float& x : row) x = value;
}

inline void check_operand(const void* p, unsigned ldm, unsigned element_bytes, const sim::Site& site) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) sim::error("pointer not 32-byte aligned at " + site.str());
  if (ldm * element_bytes % 16 != 0) sim::error("ldm not a multiple of 16 bytes at " + site.str());
  if (sim::settings().wmma_barrier) sim::wait_at(sim::State::at_warp_barrier, site);
}

template <typename Use, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, __nv_bfloat16, Layout>& f, const __nv_bfloat16* p,
                      unsigned ldm, sim::Site site = sim::Site::current("wmma::load_matrix_sync")) {
  static_assert(std::is_same_v<Use, matrix_a> || std::is_same_v<Use, matrix_b>);
  check_operand(p, ldm, sizeof(__nv_bfloat16), site);
  constexpr bool row = std::is_same_v<Layout, row_major>;
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) f.m[i][j] = __bfloat162float(row ? p[i * ldm + j] : p[i + j * ldm]);
}

inline void store_matrix_sync(float* p, const Accumulator& f, unsigned ldm, layout_t layout,
                              sim::Site site = sim::Site::current("wmma::store_matrix_sync")) {
  check_operand(p, ldm, sizeof(float), site);
  const int lane = sim::lane_id(), g = lane / 4, t = lane % 4;
  for (int i : {g, g + 8})
    for (int j : {2 * t, 2 * t + 1, 2 * t + 8, 2 * t + 9})
      (layout == mem_row_major ? p[i * ldm + j] : p[i + j * ldm]) = f.m[i][j];
}

// d = a b + c
template <typename LayoutA, typename LayoutB>
void mma_sync(Accumulator& d, const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LayoutA>& a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LayoutB>& b, const Accumulator& c) {
  float out[16][16];
  std::memcpy(out, c.m, sizeof out);
  for (int k = 0; k < 16; ++k)  // k outermost: 16 independent rows per step (vectorizes)
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 16; ++j) out[i][j] += a.m[i][k] * b.m[k][j];
  std::memcpy(d.m, out, sizeof out);
}

}  // namespace wmma
}  // namespace nvcuda
