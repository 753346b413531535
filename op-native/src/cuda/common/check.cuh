// Turning CUDA runtime errors into mla_status with a message (common/error.h): every CUDA
// call of the library goes through MLA_CUDA_TRY, every kernel launch is followed by
// MLA_CUDA_LAUNCHED.
#pragma once
#include <cuda_runtime.h>
#include "common/error.h"

namespace mla {
namespace cuda {

inline mla_status cuda_fail(cudaError_t e, const char *op, const char *what) {
    cudaGetLastError();  // clear a non-sticky error so the next call starts clean
    mla_status st = e == cudaErrorMemoryAllocation ? MLA_ERR_OUT_OF_MEMORY : MLA_ERR_DEVICE;
    return fail(st, "%s: %s failed: %s (%s)", op, what, cudaGetErrorString(e),
                cudaGetErrorName(e));
}

}  // namespace cuda
}  // namespace mla

// Inside a function returning mla_status, with `op` (const char *) in scope.
#define MLA_CUDA_TRY(call)                                                   \
    do {                                                                     \
        cudaError_t _e = (call);                                             \
        if (_e != cudaSuccess) return ::mla::cuda::cuda_fail(_e, op, #call); \
    } while (0)

// After a <<<...>>> launch: a bad configuration shows up here.
#define MLA_CUDA_LAUNCHED(name)                                              \
    do {                                                                     \
        cudaError_t _e = cudaGetLastError();                                 \
        if (_e != cudaSuccess) return ::mla::cuda::cuda_fail(_e, op, name);  \
    } while (0)
