// Host helpers every GPU entry point shares: making exec.device current for the length of a
// call, and refusing pointers the device cannot dereference.
#pragma once
#include <cuda_runtime.h>
#include "cuda/common/check.cuh"

namespace mla {
namespace cuda {

// Makes exec.device current for the call and restores the caller's device afterwards.
class DeviceScope {
public:
    mla_status enter(int dev, const char *op) {
        MLA_CUDA_TRY(cudaGetDevice(&prev_));
        if (prev_ != dev) {
            MLA_CUDA_TRY(cudaSetDevice(dev));
            restore_ = true;
        }
        return MLA_OK;
    }
    ~DeviceScope() {
        if (restore_) cudaSetDevice(prev_);
    }

private:
    int prev_ = 0;
    bool restore_ = false;
};

// A pointer the device cannot dereference (plain host memory) is refused: launching on it
// would fault the CUDA context for every later call of the process. NULL passes.
inline mla_status device_pointer(const void *ptr, const char *op, const char *arg) {
    if (!ptr) return MLA_OK;
    cudaPointerAttributes attr;
    MLA_CUDA_TRY(cudaPointerGetAttributes(&attr, ptr));
    MLA_REQUIRE(attr.type != cudaMemoryTypeUnregistered,
                "%s: %s (%p) is host memory; a call with exec.device >= 0 takes device pointers "
                "(mla_cuda_malloc, or page-locked host memory)", op, arg, ptr);
    return MLA_OK;
}

}  // namespace cuda
}  // namespace mla
