// Fused causal attention on tensor cores, tiled as in FlashAttention-2: bf16 inputs, fp32
// accumulation and softmax, no (T,T) matrix anywhere. Used for head sizes that are
// multiples of 16 from 32 to 128 under train.matmul bf16_copy, bf16 or tf32 (tensor-core training);
// attention.cu's cuBLAS products cover the rest (other head sizes, train.matmul: fp32). The CPU backend's
// attention is the reference for both.
//
// Layout as in attention.cu: q, k, v, out (B,T,H,D), rows of C = H*D floats; lse and
// delta (B,H,T). A block takes one (b, h) and one tile of 64 rows (queries in forward and
// dQ, keys in dK/dV), 4 warps of 16 rows each, and walks the other side in tiles of 64,
// only those on or below the diagonal. Tiles are converted to bf16 in shared memory; each
// warp's 16x64 block of scores goes through shared memory for the elementwise part, where
// lane l owns row l/2 and columns (l%2)*32.. of it (a row's two lanes meet by shuffle),
// each lane walking its columns from its own starting point (no bank conflicts).
//
// Forward, per query tile, over key tiles j (scale = 1/sqrt(D), masked: key > query):
//   S = scale Q K_j^T;  m' = max(m, rowmax S);  P = exp(S - m');  l = l e^(m-m') + rowsum P
//   O = O e^(m-m') + P V_j;  m = m'.  Then out = O / l, lse = m + log l.
// Backward, without atomics (dQ by query tiles, dK and dV by key tiles, each recomputing P):
//   delta = rowsum(dO .* out);  P = exp(scale Q K^T - lse) (causal);  dP = dO V^T
//   dS = P .* (dP - delta);  dQ = scale dS K;  dK = scale dS^T Q;  dV = P^T dO
#include <cuda_bf16.h>
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backend/cuda/check.h"
#include "backend/cuda/kernels.h"

namespace relora::cuda {
namespace {

namespace wmma = nvcuda::wmma;
using bf16 = __nv_bfloat16;

constexpr int kTile = 64;  // rows of a tile, queries or keys
constexpr int kWarps = 4;  // 16 rows of the block's tile each
constexpr int kThreads = 32 * kWarps;

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragAcc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Shared-memory strides and sizes (elements). Rows are padded (bf16 by 8, fp32 by 4) so
// that the lanes walking a row each do not all hit one bank; every 16x16 fragment start
// stays 32-byte aligned, as wmma requires.
template <int D>
struct Smem {
  static constexpr int ld_tile = D + 8;                      // bf16 (64, D) tiles
  static constexpr int ld_p = kTile + 8;                     // bf16 per-warp (16, 64) blocks
  static constexpr int ld_work = (D > kTile ? D : kTile) + 4;  // fp32 per-warp (16, max(64, D)) blocks
  static constexpr int ld_o = D + 4;                         // fp32 O rows (forward)
  static constexpr int tile = kTile * ld_tile;
  static constexpr int p_block = 16 * ld_p;
  static constexpr int work = 16 * ld_work;
};

// Rows [row0, row0 + 64) of head `head` of x(B,T,H,D) (head = x + b*T*C + h*D) as bf16;
// rows at or past T are zero.
template <int D>
__device__ void load_tile(bf16* tile, const float* head, int row0, int T, int C) {
  for (int i = threadIdx.x; i < kTile * D; i += kThreads) {
    const int r = i / D, c = i % D;
    const int t = row0 + r;
    const float value = t < T ? head[static_cast<int64_t>(t) * C + c] : 0.0f;
    tile[r * Smem<D>::ld_tile + c] = __float2bfloat16(value);
  }
}

// One warp: out(16, 64) = a(16, D) b(64, D)^T, a and b rows of bf16 tiles; out fp32 with
// stride ld_work.
template <int D>
__device__ void warp_scores(float* out, const bf16* a, const bf16* b) {
  constexpr int ld = Smem<D>::ld_tile;
  FragA fa[D / 16];
  for (int kk = 0; kk < D / 16; ++kk) wmma::load_matrix_sync(fa[kk], a + kk * 16, ld);
  for (int n = 0; n < kTile / 16; ++n) {
    FragAcc acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int kk = 0; kk < D / 16; ++kk) {
      FragBCol fb;  // (b^T)[kk block, n block] = b[n block rows][kk block columns]
      wmma::load_matrix_sync(fb, b + n * 16 * ld + kk * 16, ld);
      wmma::mma_sync(acc, fa[kk], fb, acc);
    }
    wmma::store_matrix_sync(out + n * 16, acc, Smem<D>::ld_work, wmma::mem_row_major);
  }
}

// One warp: acc(16, D) += p(16, 64) m(64, D); p a per-warp bf16 block, m a bf16 tile.
template <int D>
__device__ void warp_accumulate(FragAcc (&acc)[D / 16], const bf16* p, const bf16* m) {
  for (int kk = 0; kk < kTile / 16; ++kk) {
    FragA fa;
    wmma::load_matrix_sync(fa, p + kk * 16, Smem<D>::ld_p);
    for (int n = 0; n < D / 16; ++n) {
      FragBRow fb;
      wmma::load_matrix_sync(fb, m + kk * 16 * Smem<D>::ld_tile + n * 16, Smem<D>::ld_tile);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

// One warp: rows row0.. of x's head (16 rows, those < T) = scale * acc, through the
// warp's fp32 work block, a row at a time across the lanes (coalesced).
template <int D>
__device__ void warp_store_rows(float* head, int row0, int T, int C, float scale,
                                FragAcc (&acc)[D / 16], float* work) {
  for (int n = 0; n < D / 16; ++n)
    wmma::store_matrix_sync(work + n * 16, acc[n], Smem<D>::ld_work, wmma::mem_row_major);
  __syncwarp();
  const int lane = threadIdx.x % 32;
  for (int r = 0; r < 16 && row0 + r < T; ++r)
    for (int c = lane; c < D; c += 32)
      head[static_cast<int64_t>(row0 + r) * C + c] = scale * work[r * Smem<D>::ld_work + c];
  __syncwarp();
}

// Where head (b, h) = (blockIdx.x / H, blockIdx.x % H) starts in a (B,T,H,D) tensor.
__device__ inline int64_t head_offset(int T, int H, int D) {
  const int64_t b = blockIdx.x / H, h = blockIdx.x % H;
  return b * T * H * D + h * D;
}

// The j-th of `count` columns a lane visits in its half row: each lane starts at its own
// column, so that at every step the 32 lanes (16 rows 4 or 20 banks apart, two halves 32
// columns apart) reach different shared-memory banks instead of a quarter of them.
__device__ inline int lane_column(int j, int lane, int count) { return (j + lane) % count; }

template <int D>
__global__ void __launch_bounds__(kThreads)
    flash_forward_kernel(float* out, float* lse, const float* q, const float* k, const float* v,
                         int T, int H, float scale) {
  using S = Smem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane / 2, half = lane % 2;
  bf16* q_tile = reinterpret_cast<bf16*>(smem);
  bf16* k_tile = q_tile + S::tile;
  bf16* v_tile = k_tile + S::tile;
  bf16* p_block = v_tile + S::tile + warp * S::p_block;
  float* fp32_base = reinterpret_cast<float*>(v_tile + S::tile + kWarps * S::p_block);
  float* work = fp32_base + warp * S::work;  // scores, then P V
  float* o_rows = fp32_base + kWarps * S::work + warp * 16 * S::ld_o;  // this warp's (16, D) of O
  float* o_row = o_rows + r * S::ld_o;                                // this lane's row

  const int bh = blockIdx.x, C = H * D, q0 = blockIdx.y * kTile;
  const int64_t head = head_offset(T, H, D);
  const int query = q0 + warp * 16 + r;
  load_tile<D>(q_tile, q + head, q0, T, C);
  for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) o_row[c] = 0.0f;
  float m_run = -INFINITY, l_run = 0.0f;
  for (int k0 = 0; k0 <= q0; k0 += kTile) {
    __syncthreads();  // q_tile is loaded; the last tile's k_tile and v_tile are read
    load_tile<D>(k_tile, k + head, k0, T, C);
    load_tile<D>(v_tile, v + head, k0, T, C);
    __syncthreads();
    warp_scores<D>(work, q_tile + warp * 16 * S::ld_tile, k_tile);
    __syncwarp();
    // Online softmax of this lane's half row. Key 0 is in every row's first tile, so m' is
    // finite from the first tile on.
    float* s_row = work + r * S::ld_work;
    bf16* p_row = p_block + r * S::ld_p;
    float row_max = -INFINITY;
    for (int j = 0; j < 32; ++j) {
      const int c = half * 32 + lane_column(j, lane, 32);
      const int key = k0 + c;
      const float s = key <= query && key < T ? s_row[c] * scale : -INFINITY;
      s_row[c] = s;
      row_max = fmaxf(row_max, s);
    }
    row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, 1));
    const float m_new = fmaxf(m_run, row_max);
    const float alpha = expf(m_run - m_new);  // 0 on the first tile
    float row_sum = 0.0f;
    for (int j = 0; j < 32; ++j) {
      const int c = half * 32 + lane_column(j, lane, 32);
      const float p = expf(s_row[c] - m_new);
      p_row[c] = __float2bfloat16(p);
      row_sum += p;
    }
    row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 1);
    l_run = l_run * alpha + row_sum;
    m_run = m_new;
    __syncwarp();  // p_block is written and every lane is done with the scores
    FragAcc pv[D / 16];
    for (int n = 0; n < D / 16; ++n) wmma::fill_fragment(pv[n], 0.0f);
    warp_accumulate<D>(pv, p_block, v_tile);
    for (int n = 0; n < D / 16; ++n)
      wmma::store_matrix_sync(work + n * 16, pv[n], S::ld_work, wmma::mem_row_major);
    __syncwarp();
    for (int j = 0; j < D / 2; ++j) {
      const int c = half * (D / 2) + lane_column(j, lane, D / 2);
      o_row[c] = o_row[c] * alpha + work[r * S::ld_work + c];
    }
  }
  __syncwarp();  // every lane's O row is final
  const float inv_l = 1.0f / l_run;
  for (int row = 0; row < 16; ++row) {  // a row at a time across the lanes (coalesced)
    const float row_inv_l = __shfl_sync(0xffffffffu, inv_l, 2 * row);
    const int t = q0 + warp * 16 + row;
    if (t < T)
      for (int c = lane; c < D; c += 32)
        out[head + static_cast<int64_t>(t) * C + c] = o_rows[row * S::ld_o + c] * row_inv_l;
  }
  if (half == 0 && query < T) lse[static_cast<int64_t>(bh) * T + query] = m_run + logf(l_run);
}

// delta(B,H,T) = rowsum(bf16(d_out) .* out): one warp per (b, t, h) row of D floats. d_out
// is rounded as the dP = dO V^T products see it, so dP - delta cancels where it must (one
// key: P = 1, dS = 0 exactly).
__global__ void attention_delta_kernel(float* delta, const float* d_out, const float* out, int B,
                                       int T, int H, int D) {
  const int64_t row = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= static_cast<int64_t>(B) * T * H) return;  // the whole warp
  float sum = 0.0f;
  for (int d = lane; d < D; d += 32)
    sum += __bfloat162float(__float2bfloat16(d_out[row * D + d])) * out[row * D + d];
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (lane == 0) {
    const int64_t h = row % H, t = (row / H) % T, b = row / (static_cast<int64_t>(H) * T);
    delta[(b * H + h) * T + t] = sum;
  }
}

// The backward kernels' shared memory: the block's own two tiles (Q and dO for dQ; K and
// V for dK/dV), the two it walks, per warp two bf16 (16, 64) blocks and two fp32 ones, and
// the walked query tile's lse and delta (dK/dV).
template <int D>
struct BackwardSmem {
  using S = Smem<D>;
  static constexpr int kBytes =
      2 * (4 * S::tile + 2 * kWarps * S::p_block) + 4 * (2 * kWarps * S::work + 2 * kTile);
  bf16 *own0, *own1, *walk0, *walk1;
  bf16 *block0, *block1;   // this warp's
  float *work0, *work1;    // this warp's
  float *tile_lse, *tile_delta;
  __device__ BackwardSmem(unsigned char* smem, int warp) {
    own0 = reinterpret_cast<bf16*>(smem);
    own1 = own0 + S::tile;
    walk0 = own1 + S::tile;
    walk1 = walk0 + S::tile;
    block0 = walk1 + S::tile + 2 * warp * S::p_block;
    block1 = block0 + S::p_block;
    float* fp32_base = reinterpret_cast<float*>(walk1 + S::tile + 2 * kWarps * S::p_block);
    work0 = fp32_base + 2 * warp * S::work;
    work1 = work0 + S::work;
    tile_lse = fp32_base + 2 * kWarps * S::work;
    tile_delta = tile_lse + kTile;
  }
};

template <int D>
__global__ void __launch_bounds__(kThreads)
    flash_backward_dq_kernel(float* dq, const float* d_out, const float* lse, const float* delta,
                             const float* q, const float* k, const float* v, int T, int H,
                             float scale) {
  using S = Smem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane / 2, half = lane % 2;
  const BackwardSmem<D> shared(smem, warp);
  bf16 *q_tile = shared.own0, *do_tile = shared.own1, *k_tile = shared.walk0, *v_tile = shared.walk1;
  bf16* ds_block = shared.block0;
  float* scores = shared.work0;   // Q K^T, and at the end dQ
  float* d_probs = shared.work1;  // dO V^T

  const int bh = blockIdx.x, C = H * D, q0 = blockIdx.y * kTile;
  const int64_t head = head_offset(T, H, D);
  const int query = q0 + warp * 16 + r;
  const float row_lse = query < T ? lse[static_cast<int64_t>(bh) * T + query] : 0.0f;
  const float row_delta = query < T ? delta[static_cast<int64_t>(bh) * T + query] : 0.0f;
  load_tile<D>(q_tile, q + head, q0, T, C);
  load_tile<D>(do_tile, d_out + head, q0, T, C);
  FragAcc acc[D / 16];
  for (int n = 0; n < D / 16; ++n) wmma::fill_fragment(acc[n], 0.0f);
  for (int k0 = 0; k0 <= q0; k0 += kTile) {
    __syncthreads();
    load_tile<D>(k_tile, k + head, k0, T, C);
    load_tile<D>(v_tile, v + head, k0, T, C);
    __syncthreads();
    warp_scores<D>(scores, q_tile + warp * 16 * S::ld_tile, k_tile);
    warp_scores<D>(d_probs, do_tile + warp * 16 * S::ld_tile, v_tile);
    __syncwarp();
    for (int j = 0; j < 32; ++j) {
      const int c = half * 32 + lane_column(j, lane, 32);
      const int key = k0 + c;
      const float p = key <= query && key < T && query < T
                          ? expf(scores[r * S::ld_work + c] * scale - row_lse)
                          : 0.0f;
      ds_block[r * S::ld_p + c] = __float2bfloat16(p * (d_probs[r * S::ld_work + c] - row_delta));
    }
    __syncwarp();
    warp_accumulate<D>(acc, ds_block, k_tile);
  }
  warp_store_rows<D>(dq + head, q0 + warp * 16, T, C, scale, acc, scores);
}

template <int D>
__global__ void __launch_bounds__(kThreads)
    flash_backward_dkdv_kernel(float* dk, float* dv, const float* d_out, const float* lse,
                               const float* delta, const float* q, const float* k,
                               const float* v, int T, int H, float scale) {
  using S = Smem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane / 2, half = lane % 2;
  const BackwardSmem<D> shared(smem, warp);
  bf16 *k_tile = shared.own0, *v_tile = shared.own1, *q_tile = shared.walk0, *do_tile = shared.walk1;
  bf16* p_block = shared.block0;   // P^T
  bf16* ds_block = shared.block1;  // dS^T
  float* scores = shared.work0;    // K Q^T, and at the end dK, dV
  float* d_probs = shared.work1;   // V dO^T
  float *tile_lse = shared.tile_lse, *tile_delta = shared.tile_delta;  // (64) of the query tile

  const int bh = blockIdx.x, C = H * D, k0 = blockIdx.y * kTile;
  const int64_t head = head_offset(T, H, D);
  const int key = k0 + warp * 16 + r;
  load_tile<D>(k_tile, k + head, k0, T, C);
  load_tile<D>(v_tile, v + head, k0, T, C);
  FragAcc dk_acc[D / 16], dv_acc[D / 16];
  for (int n = 0; n < D / 16; ++n) {
    wmma::fill_fragment(dk_acc[n], 0.0f);
    wmma::fill_fragment(dv_acc[n], 0.0f);
  }
  for (int q0 = k0; q0 < T; q0 += kTile) {
    __syncthreads();
    load_tile<D>(q_tile, q + head, q0, T, C);
    load_tile<D>(do_tile, d_out + head, q0, T, C);
    for (int i = threadIdx.x; i < kTile; i += kThreads) {
      const int t = q0 + i;
      tile_lse[i] = t < T ? lse[static_cast<int64_t>(bh) * T + t] : 0.0f;
      tile_delta[i] = t < T ? delta[static_cast<int64_t>(bh) * T + t] : 0.0f;
    }
    __syncthreads();
    warp_scores<D>(scores, k_tile + warp * 16 * S::ld_tile, q_tile);     // (S^T) rows: keys
    warp_scores<D>(d_probs, v_tile + warp * 16 * S::ld_tile, do_tile);  // (dP^T)
    __syncwarp();
    for (int j = 0; j < 32; ++j) {
      const int c = half * 32 + lane_column(j, lane, 32);
      const int query = q0 + c;
      const float p = query >= key && query < T && key < T
                          ? expf(scores[r * S::ld_work + c] * scale - tile_lse[c])
                          : 0.0f;
      p_block[r * S::ld_p + c] = __float2bfloat16(p);
      ds_block[r * S::ld_p + c] =
          __float2bfloat16(p * (d_probs[r * S::ld_work + c] - tile_delta[c]));
    }
    __syncwarp();
    warp_accumulate<D>(dv_acc, p_block, do_tile);
    warp_accumulate<D>(dk_acc, ds_block, q_tile);
  }
  warp_store_rows<D>(dk + head, k0 + warp * 16, T, C, scale, dk_acc, scores);
  warp_store_rows<D>(dv + head, k0 + warp * 16, T, C, 1.0f, dv_acc, scores);
}

// The forward kernel's shared memory, bytes: three bf16 tiles and per-warp P blocks, then
// per-warp fp32 blocks and the O rows.
template <int D>
constexpr int forward_smem() {
  using S = Smem<D>;
  return 2 * (3 * S::tile + kWarps * S::p_block) + 4 * (kWarps * S::work + kTile * S::ld_o);
}
// Launches kernel with `bytes` of dynamic shared memory (more than the default 48 KiB, so
// opted into: a host-side attribute, cheap) on a (B*H, tiles of T) grid.
template <typename Kernel, typename... Args>
void launch(Kernel kernel, int bytes, cudaStream_t stream, int B, int T, int H, Args... args) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  const dim3 grid(static_cast<unsigned>(B) * static_cast<unsigned>(H),
                  static_cast<unsigned>((T + kTile - 1) / kTile));
  kernel<<<grid, kThreads, bytes, stream>>>(args...);
  CUDA_CHECK_LAUNCH();
}

template <int D>
void forward(cudaStream_t stream, float* out, float* lse, const float* q, const float* k,
             const float* v, int B, int T, int H) {
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  launch(flash_forward_kernel<D>, forward_smem<D>(), stream, B, T, H, out, lse, q, k, v, T, H,
         scale);
}

template <int D>
void backward(cudaStream_t stream, float* dq, float* dk, float* dv, const float* d_out,
              const float* out, const float* lse, const float* q, const float* k, const float* v,
              float* delta, int B, int T, int H) {
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  const int64_t rows = static_cast<int64_t>(B) * T * H;
  constexpr int kDeltaThreads = 256;
  attention_delta_kernel<<<static_cast<unsigned>((rows * 32 + kDeltaThreads - 1) / kDeltaThreads),
                           kDeltaThreads, 0, stream>>>(delta, d_out, out, B, T, H, D);
  CUDA_CHECK_LAUNCH();
  launch(flash_backward_dq_kernel<D>, BackwardSmem<D>::kBytes, stream, B, T, H, dq, d_out, lse, delta, q, k,
         v, T, H, scale);
  launch(flash_backward_dkdv_kernel<D>, BackwardSmem<D>::kBytes, stream, B, T, H, dk, dv, d_out, lse,
         delta, q, k, v, T, H, scale);
}

}  // namespace

// The head sizes with kernels: multiples of 16 from 32 to 128.
bool has_kernels(int D) { return D % 16 == 0 && D >= 32 && D <= 128; }

// Calls f with std::integral_constant<int, D> for a D with kernels.
template <typename F>
void with_head_size(int D, int T, const F& f) {
  RELORA_CHECK(has_kernels(D) && static_cast<int64_t>(T) <= 65535 * kTile,
               "flash attention D=" << D << " T=" << T);
  switch (D) {
    case 32: return f(std::integral_constant<int, 32>{});
    case 48: return f(std::integral_constant<int, 48>{});
    case 64: return f(std::integral_constant<int, 64>{});
    case 80: return f(std::integral_constant<int, 80>{});
    case 96: return f(std::integral_constant<int, 96>{});
    case 112: return f(std::integral_constant<int, 112>{});
    default: return f(std::integral_constant<int, 128>{});
  }
}

int flash_attention_smem_bytes(int D) {
  if (!has_kernels(D)) return 0;
  int bytes = 0;
  with_head_size(D, 1, [&](auto head_size) {
    constexpr int d = decltype(head_size)::value;
    bytes = std::max(forward_smem<d>(), BackwardSmem<d>::kBytes);
  });
  return bytes;
}

bool flash_attention_supported(int D, int smem_per_block) {
  return has_kernels(D) && flash_attention_smem_bytes(D) <= smem_per_block;
}

void flash_attention_forward(cudaStream_t stream, float* out, float* lse, const float* q,
                             const float* k, const float* v, int B, int T, int H, int D) {
  with_head_size(D, T, [&](auto head_size) {
    forward<decltype(head_size)::value>(stream, out, lse, q, k, v, B, T, H);
  });
}

void flash_attention_backward(cudaStream_t stream, float* dq, float* dk, float* dv,
                              const float* d_out, const float* out, const float* lse,
                              const float* q, const float* k, const float* v, float* delta, int B,
                              int T, int H, int D) {
  with_head_size(D, T, [&](auto head_size) {
    backward<decltype(head_size)::value>(stream, dq, dk, dv, d_out, out, lse, q, k, v, delta, B,
                                         T, H);
  });
}

}  // namespace relora::cuda
