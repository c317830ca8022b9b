// Checked calls for CUDA, cuDNN, cuBLAS and NCCL. Include only from code built with CUDA.
// Every failure throws kd::Error naming the call, the library's own message and file:line.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "kernels/check.h"

#define KD_CUDA_CHECK(call)                                                                 \
  do {                                                                                      \
    cudaError_t kd_err_ = (call);                                                           \
    if (kd_err_ != cudaSuccess) KD_FAIL(#call, ": ", cudaGetErrorString(kd_err_));          \
  } while (0)

#define KD_CUDNN_CHECK(call)                                                                \
  do {                                                                                      \
    cudnnStatus_t kd_st_ = (call);                                                          \
    if (kd_st_ != CUDNN_STATUS_SUCCESS) KD_FAIL(#call, ": ", cudnnGetErrorString(kd_st_));  \
  } while (0)

#define KD_CUBLAS_CHECK(call)                                                               \
  do {                                                                                      \
    cublasStatus_t kd_st_ = (call);                                                         \
    if (kd_st_ != CUBLAS_STATUS_SUCCESS)                                                    \
      KD_FAIL(#call, ": ", cublasGetStatusName(kd_st_), " (", cublasGetStatusString(kd_st_), ")"); \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, execution errors at the next
// synchronising call.
#define KD_CUDA_LAUNCH_CHECK(name)                                                          \
  do {                                                                                      \
    cudaError_t kd_err_ = cudaGetLastError();                                               \
    if (kd_err_ != cudaSuccess) KD_FAIL("launch of ", name, ": ", cudaGetErrorString(kd_err_)); \
  } while (0)
