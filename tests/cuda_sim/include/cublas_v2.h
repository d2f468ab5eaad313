// Emulated <cublas_v2.h>: only the types that src/backend/cuda/check.h and kernels.h name.
// No cuBLAS call is emulated (the products in gemm.cu are not tested here).
#pragma once
#include "cuda_sim.h"
struct cublasContext;
typedef cublasContext* cublasHandle_t;
enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0 };
inline const char* cublasGetStatusString(cublasStatus_t) { return "CUBLAS_STATUS_SUCCESS"; }
