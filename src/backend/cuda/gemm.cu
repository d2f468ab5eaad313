// Row-major matrix products on cuBLAS (column-major), single and strided-batched.
//
// The conversion: a row-major matrix X(r,c) with row stride ld occupies memory exactly like
// the column-major matrix X^T(c,r) with leading dimension ld. So the row-major product
//   C(M,N) = alpha op(A) op(B) + beta C
// is, transposed, the column-major product
//   C^T(N,M) = alpha op(B)^T op(A)^T + beta C^T,
// which cuBLAS computes with its first operand from B's memory and its second from A's:
//   - B not transposed: B(K,N) row-major is B^T(N,K) column-major, already op(B)^T -> CUBLAS_OP_N,
//     leading dimension ldb >= N.
//   - B transposed: B is stored (N,K) row-major = (K,N) column-major; op(B)^T = B_stored(N,K),
//     the transpose of that column-major view -> CUBLAS_OP_T, ldb >= K.
//   - likewise A: not transposed -> CUBLAS_OP_N (lda >= K), transposed -> CUBLAS_OP_T (lda >= M).
//   - cuBLAS sizes: m = N, n = M, k = K; C^T(N,M) column-major has leading dimension ldc >= N.
// fp32 storage, the compute type picking the multiplication precision:
// CUBLAS_COMPUTE_32F_FAST_16BF or CUBLAS_COMPUTE_32F_FAST_TF32 (inputs rounded to bf16 or
// TF32, tensor cores, fp32 accumulation; each only allows its precision, FAST_16BF TF32
// too) or CUBLAS_COMPUTE_32F (full fp32: the handle keeps cuBLAS's default math mode); or
// bf16 operands (CUDA_R_16BF) with CUBLAS_COMPUTE_32F, C always fp32.
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.h"

namespace relora::cuda {
namespace {

cublasComputeType_t compute_type(GemmPrecision precision) {
  switch (precision) {
    case GemmPrecision::bf16: return CUBLAS_COMPUTE_32F_FAST_16BF;
    case GemmPrecision::tf32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case GemmPrecision::fp32:
    case GemmPrecision::bf16_words: return CUBLAS_COMPUTE_32F;
    case GemmPrecision::bf16_copy: break;  // CudaOps multiplies the copies as bf16_words
  }
  RELORA_CHECK(false, "gemm_rowmajor takes bf16 copies as bf16_words");
  return CUBLAS_COMPUTE_32F;
}
cudaDataType_t operand_type(GemmPrecision precision) {
  return precision == GemmPrecision::bf16_words ? CUDA_R_16BF : CUDA_R_32F;
}

// C(M,N) with row stride ldc: one thread per element, grid-stride.
__global__ void scale_matrix_kernel(float* C, int M, int N, int ldc, float beta) {
  const int64_t total = static_cast<int64_t>(M) * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / N, col = i % N;
    float* c = C + row * ldc + col;
    *c = beta == 0.0f ? 0.0f : beta * *c;  // beta == 0: C's old contents are not read (BLAS)
  }
}

}  // namespace

void gemm_rowmajor(cublasHandle_t handle, GemmPrecision precision, bool trans_a, bool trans_b,
                   int M, int N, int K, float alpha, const void* A, int lda, int64_t stride_a,
                   const void* B, int ldb, int64_t stride_b, float beta, float* C, int ldc,
                   int64_t stride_c, int batch) {
  const cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;   // from B's memory
  const cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // from A's memory
  const cudaDataType_t type = operand_type(precision);
  if (batch == 1) {
    CUBLAS_CHECK(cublasGemmEx(handle, op_first, op_second, N, M, K, &alpha, B, type, ldb, A, type,
                              lda, &beta, C, CUDA_R_32F, ldc, compute_type(precision),
                              CUBLAS_GEMM_DEFAULT));
  } else {
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        handle, op_first, op_second, N, M, K, &alpha, B, type, ldb,
        static_cast<long long>(stride_b), A, type, lda, static_cast<long long>(stride_a),
        &beta, C, CUDA_R_32F, ldc, static_cast<long long>(stride_c), batch,
        compute_type(precision), CUBLAS_GEMM_DEFAULT));
  }
}

void launch_scale_matrix(cudaStream_t stream, float* C, int M, int N, int ldc, float beta) {
  const int64_t total = static_cast<int64_t>(M) * N;
  if (total == 0) return;
  scale_matrix_kernel<<<grid_stride_blocks(total), kElementwiseThreads, 0, stream>>>(C, M, N,
                                                                                    ldc, beta);
  CUDA_CHECK_LAUNCH();
}

}  // namespace relora::cuda
