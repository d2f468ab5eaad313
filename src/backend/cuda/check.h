// Check macros for CUDA runtime and cuBLAS calls: a failed call throws relora::InternalError
// naming file:line, the call as written and the library's error string.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <sstream>

#include "core/errors.h"

// CUDA_CHECK(cudaMemcpyAsync(...)) — throws InternalError unless the call returns cudaSuccess.
#define CUDA_CHECK(call)                                                                   \
  do {                                                                                     \
    const cudaError_t relora_cuda_err_ = (call);                                           \
    if (relora_cuda_err_ != cudaSuccess) {                                                 \
      std::ostringstream relora_oss_;                                                      \
      relora_oss_ << __FILE__ << ":" << __LINE__ << ": " #call ": "                        \
                  << cudaGetErrorString(relora_cuda_err_);                                 \
      throw ::relora::InternalError(relora_oss_.str());                                    \
    }                                                                                      \
  } while (0)

// CUBLAS_CHECK(cublasGemmEx(...)) — throws InternalError unless CUBLAS_STATUS_SUCCESS.
#define CUBLAS_CHECK(call)                                                                 \
  do {                                                                                     \
    const cublasStatus_t relora_cublas_status_ = (call);                                   \
    if (relora_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                  \
      std::ostringstream relora_oss_;                                                      \
      relora_oss_ << __FILE__ << ":" << __LINE__ << ": " #call ": "                        \
                  << cublasGetStatusString(relora_cublas_status_);                         \
      throw ::relora::InternalError(relora_oss_.str());                                    \
    }                                                                                      \
  } while (0)

// After a kernel launch (<<<...>>> returns nothing): a bad launch configuration or an
// earlier asynchronous error shows up here.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
