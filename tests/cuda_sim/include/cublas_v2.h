// Emulated <cublas_v2.h>: the handle calls and the two products relora uses (cublasGemmEx,
// cublasGemmStridedBatchedEx), with cuBLAS's column-major semantics, computed by OpenBLAS:
//   C(m,n) = alpha op(A)(m,k) op(B)(k,n) + beta C   (column-major; beta == 0: C not read)
// The compute type sets the precision as on the device: CUBLAS_COMPUTE_32F_FAST_16BF rounds
// fp32 operands to bf16 (nearest even) first, CUBLAS_COMPUTE_32F_FAST_TF32 to TF32 (10
// fraction bits, nearest with ties away from zero, as cvt.rna.tf32.f32), so the products
// are exact and the sums fp32; CUBLAS_COMPUTE_32F multiplies fp32 as stored, or bf16
// operands (CUDA_R_16BF) widened.
// A call is checked as cuBLAS checks it (sizes, leading dimensions, type combinations:
// CUBLAS_STATUS_INVALID_VALUE / NOT_SUPPORTED) and as the device would meet it: every
// matrix, all batch entries included, must lie inside one device allocation (a product
// reading past a tensor's end would read another tensor, or fault, on a GPU; within
// relora's arena each tensor is a piece: note_piece), C must not share memory with A or B,
// alpha and beta in host memory (the default pointer mode); alpha == 0: A and B not read.
// Misuse is an emulator error (sim::take_errors) at the caller's site.
#pragma once
#include <cblas.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_bf16.h"
#include "cuda_sim_runtime.h"

enum cublasStatus_t {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_NOT_SUPPORTED = 15
};
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16BF = 14 };
enum cublasComputeType_t {
  CUBLAS_COMPUTE_32F = 68,
  CUBLAS_COMPUTE_32F_FAST_16BF = 75,
  CUBLAS_COMPUTE_32F_FAST_TF32 = 77
};
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT = -1 };

struct cublasContext {
  cudaStream_t stream = nullptr;
};
typedef cublasContext* cublasHandle_t;

inline const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}
inline cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t bytes,
                                         sim::Site site = sim::Site::current("cublasSetWorkspace")) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes > 0 && !sim::device_range(workspace, bytes))
    return sim::api_error(CUBLAS_STATUS_INVALID_VALUE, "a workspace that is not device memory", site);
  return CUBLAS_STATUS_SUCCESS;
}

namespace sim {

// One operand as stored: op(X) is rows x cols; stored column-major as rows x cols (op N) or
// cols x rows (op T) with leading dimension ld, batch entries `stride` elements apart.
struct GemmOperand {
  const void* p;
  cudaDataType_t type;
  cublasOperation_t op;
  int rows, cols, ld;
  long long stride;
  const char* name;

  int stored_rows() const { return op == CUBLAS_OP_N ? rows : cols; }
  int stored_cols() const { return op == CUBLAS_OP_N ? cols : rows; }
  size_t element_bytes() const { return type == CUDA_R_16BF ? 2 : 4; }
  // Bytes from p to the end of the last batch entry's last element.
  size_t extent_bytes(int batch) const {
    if (rows == 0 || cols == 0) return 0;
    const long long last = static_cast<long long>(batch - 1) * stride +
                           static_cast<long long>(stored_cols() - 1) * ld + stored_rows();
    return static_cast<size_t>(last) * element_bytes();
  }
  float at(long long index) const {
    if (type == CUDA_R_16BF) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[index]);
    return static_cast<const float*>(p)[index];
  }
  // op(X) of batch entry b as a dense column-major rows x cols matrix (ld = rows), each
  // value rounded by `round` (the compute type's input precision) first.
  std::vector<float> dense(int b, float (*round)(float)) const {
    std::vector<float> out(static_cast<size_t>(rows) * cols);
    const long long base = static_cast<long long>(b) * stride;
    for (int j = 0; j < cols; ++j)
      for (int i = 0; i < rows; ++i) {
        const long long index = op == CUBLAS_OP_N ? base + static_cast<long long>(j) * ld + i
                                                  : base + static_cast<long long>(i) * ld + j;
        const float x = at(index);
        out[static_cast<size_t>(j) * rows + i] = round(x);
      }
    return out;
  }
};

inline float as_stored(float x) { return x; }
inline float round_to_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
inline float round_to_tf32(float x) {
  if (!std::isfinite(x)) return x;
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits = (bits + 0x1000u) & 0xFFFFE000u;  // 13 low fraction bits dropped, ties away from zero
  std::memcpy(&x, &bits, sizeof bits);
  return x;
}
inline float (*input_rounding(cublasComputeType_t compute))(float) {
  if (compute == CUBLAS_COMPUTE_32F_FAST_16BF) return round_to_bf16;
  if (compute == CUBLAS_COMPUTE_32F_FAST_TF32) return round_to_tf32;
  return as_stored;
}

inline bool supported_types(cudaDataType_t a, cudaDataType_t b, cudaDataType_t c,
                            cublasComputeType_t compute) {
  if (compute == CUBLAS_COMPUTE_32F_FAST_16BF || compute == CUBLAS_COMPUTE_32F_FAST_TF32)
    return a == CUDA_R_32F && b == CUDA_R_32F && c == CUDA_R_32F;
  if (compute != CUBLAS_COMPUTE_32F) return false;
  if (a == CUDA_R_32F) return b == CUDA_R_32F && c == CUDA_R_32F;
  return a == CUDA_R_16BF && b == CUDA_R_16BF;  // C fp32 or bf16
}

inline cublasStatus_t gemm(cublasHandle_t handle, cublasOperation_t trans_a, cublasOperation_t trans_b,
                           int m, int n, int k, const void* alpha, const void* A, cudaDataType_t a_type,
                           int lda, long long stride_a, const void* B, cudaDataType_t b_type, int ldb,
                           long long stride_b, const void* beta, void* C, cudaDataType_t c_type, int ldc,
                           long long stride_c, int batch, cublasComputeType_t compute, const Site& site) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  const auto valid_op = [](cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T; };
  if (m < 0 || n < 0 || k < 0 || batch < 0 || !valid_op(trans_a) || !valid_op(trans_b) ||
      lda < std::max(1, trans_a == CUBLAS_OP_N ? m : k) ||
      ldb < std::max(1, trans_b == CUBLAS_OP_N ? k : n) || ldc < std::max(1, m))
    return api_error(CUBLAS_STATUS_INVALID_VALUE,
                     "m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                         " lda=" + std::to_string(lda) + " ldb=" + std::to_string(ldb) + " ldc=" +
                         std::to_string(ldc) + " batch=" + std::to_string(batch) + " (cuBLAS rejects them)",
                     site);
  if (!supported_types(a_type, b_type, c_type, compute))
    return api_error(CUBLAS_STATUS_NOT_SUPPORTED, "this combination of types and compute type", site);
  if (device_range(alpha, 0) || device_range(beta, 0))
    return api_error(CUBLAS_STATUS_INVALID_VALUE, "alpha or beta in device memory (pointer mode host)", site);
  if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
  const GemmOperand a{A, a_type, trans_a, m, k, lda, stride_a, "A"};
  const GemmOperand b{B, b_type, trans_b, k, n, ldb, stride_b, "B"};
  const GemmOperand c{C, c_type, CUBLAS_OP_N, m, n, ldc, stride_c, "C"};
  for (const GemmOperand* x : {&a, &b, &c}) {
    if (!device_range(x->p, x->extent_bytes(batch)))
      return api_error(CUBLAS_STATUS_INVALID_VALUE,
                       std::string("operand ") + x->name + " (" + std::to_string(x->extent_bytes(batch)) +
                           " bytes from its pointer, " + std::to_string(batch) +
                           " batch entries) is not inside one device allocation or tensor: " +
                           describe_range(x->p, x->extent_bytes(batch)),
                       site);
  }
  // cuBLAS reads A and B while it writes C: shared memory makes its result undefined
  const auto overlap = [batch](const GemmOperand& x, const GemmOperand& y) {
    const char *x0 = static_cast<const char*>(x.p), *y0 = static_cast<const char*>(y.p);
    return x0 < y0 + y.extent_bytes(batch) && y0 < x0 + x.extent_bytes(batch);
  };
  for (const GemmOperand* x : {&a, &b})
    if (overlap(c, *x))
      return api_error(CUBLAS_STATUS_INVALID_VALUE,
                       std::string("operand C overlaps operand ") + x->name + " (the result would be undefined)",
                       site);
  const float alpha_value = *static_cast<const float*>(alpha), beta_value = *static_cast<const float*>(beta);
  float (*const round)(float) = input_rounding(compute);
  std::vector<float> product(static_cast<size_t>(m) * n, 0.0f);
  for (int e = 0; e < batch; ++e) {
    if (k > 0 && alpha_value != 0.0f) {  // alpha == 0: A and B are not read (BLAS)
      const std::vector<float> a_dense = a.dense(e, round), b_dense = b.dense(e, round);
      cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a_dense.data(), m,
                  b_dense.data(), k, 0.0f, product.data(), m);
    }
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        const long long index = static_cast<long long>(e) * stride_c + static_cast<long long>(j) * ldc + i;
        float value = alpha_value * product[static_cast<size_t>(j) * m + i];
        if (beta_value != 0.0f) value += beta_value * c.at(index);
        if (c_type == CUDA_R_16BF)
          static_cast<__nv_bfloat16*>(C)[index] = __float2bfloat16_rn(value);
        else
          static_cast<float*>(C)[index] = value;
      }
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace sim

inline cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t trans_a,
                                   cublasOperation_t trans_b, int m, int n, int k, const void* alpha,
                                   const void* A, cudaDataType_t a_type, int lda, const void* B,
                                   cudaDataType_t b_type, int ldb, const void* beta, void* C,
                                   cudaDataType_t c_type, int ldc, cublasComputeType_t compute,
                                   cublasGemmAlgo_t,
                                   sim::Site site = sim::Site::current("cublasGemmEx")) {
  return sim::gemm(handle, trans_a, trans_b, m, n, k, alpha, A, a_type, lda, 0, B, b_type, ldb, 0,
                   beta, C, c_type, ldc, 0, 1, compute, site);
}
inline cublasStatus_t cublasGemmStridedBatchedEx(
    cublasHandle_t handle, cublasOperation_t trans_a, cublasOperation_t trans_b, int m, int n, int k,
    const void* alpha, const void* A, cudaDataType_t a_type, int lda, long long stride_a,
    const void* B, cudaDataType_t b_type, int ldb, long long stride_b, const void* beta, void* C,
    cudaDataType_t c_type, int ldc, long long stride_c, int batch, cublasComputeType_t compute,
    cublasGemmAlgo_t, sim::Site site = sim::Site::current("cublasGemmStridedBatchedEx")) {
  return sim::gemm(handle, trans_a, trans_b, m, n, k, alpha, A, a_type, lda, stride_a, B, b_type,
                   ldb, stride_b, beta, C, c_type, ldc, stride_c, batch, compute, site);
}
